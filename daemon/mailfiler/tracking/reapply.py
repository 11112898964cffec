"""``mailfiler rules apply``: re-decide the regarding of tracked activities
with the rules and correlation in force now.

Only activities whose regarding came from a rule or from correlation, or
that have none, are re-decided.  A folder's regarding (``correlation ==
"folder"``) is the user's own filing and always wins, as in Dynamics: those
activities are reported as ``skipped-folder`` and never touched.

For each activity the message is read again from one of its present
locations, so the rules see the same headers the daemon saw.  When no copy
is left (the user deleted or moved it out), the message is rebuilt from the
stored fields (subject, body, parties, threading headers, size, attachment
names): rules about other headers then do not match, and the result says so.

The new regarding is decided by the daemon's own planner
(:class:`~mailfiler.tracking.plan.Planner`) as for a new message in a folder
without a regarding: the rule's regarding (a ``create: true`` rule creates its
record), else correlation (In-Reply-To, References, token, smart), else the
current regarding stays.  ``rules test`` asks the same planner, so the two
cannot disagree.  A regarding is never cleared and
an activity is never deleted, not even when the rules now say ``skip``.
Each change is one transaction.  ``dry_run`` writes nothing and creates no
records: it reports the key a record would get.

Only the regarding, its method (``correlation``) and the thread link
(``correlated_activity``) change.  Categories, owner and contacts set when
the message was tracked stay as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import peewee as pw

from mailfiler.backends import make_source
from mailfiler.config.schema import Config
from mailfiler.errors import MailfilerError, NotFound
from mailfiler.rules import Decision, RegardingSpec, RuleSet
from mailfiler.sources.base import Source
from mailfiler.store.db import transaction
from mailfiler.store.models import (
    Activity,
    ActivityParty,
    Attachment,
    Location,
    Mailbox,
    Record,
    RecordAddress,
    utcnow,
)
from mailfiler.store.records import get_by_ref
from mailfiler.tracking.context import MailboxContext, precedence, watched_folder
from mailfiler.tracking.offloop import parse_off_loop
from mailfiler.tracking.parse import ADDRESS_ROLES, Address, AttachmentPart, ParsedMessage
from mailfiler.tracking.plan import Judgement, Planner, Regarding
from mailfiler.tracking.regarding import resolve as resolve_regarding
from mailfiler.tracking.regarding import slug

__all__ = ["RESULTS", "Reapplied", "planned_ref", "reapply", "stored_message", "totals"]

#: what happened to one activity, in the order the totals list them
RESULTS = ("changed", "would-change", "unchanged", "kept", "skipped-folder")


@dataclass
class Reapplied:
    """What ``rules apply`` did (or would do) to one activity."""

    activity_id: int
    message_id: str
    subject: str
    old_regarding: str | None
    old_correlation: str | None
    new_regarding: str | None
    new_correlation: str | None
    #: one of :data:`RESULTS`
    result: str
    note: str = ""
    #: where the message was read again ("MAILBOX/FOLDER"); None: rebuilt
    #: from the stored fields, without its headers
    read_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["headers"] = self.read_from is not None
        return data


def totals(results: Iterable[Reapplied]) -> dict[str, int]:
    """How many activities had each result (every result named, zeros too)."""
    counted = Counter(r.result for r in results)
    return {name: counted.get(name, 0) for name in RESULTS}


def planned_ref(spec: RegardingSpec) -> str:
    """The ``ENTITY:KEY`` of the record :func:`mailfiler.tracking.regarding.resolve`
    would create for *spec*: the same name and key derivation, without the write."""
    name = spec.fields.name or spec.name or spec.key or spec.value or spec.entity
    key = spec.key or slug(name if spec.field is None else (spec.value or name))
    return f"{spec.entity}:{key}"


def stored_message(activity: Activity) -> ParsedMessage:
    """The message rebuilt from what the store kept, for when no copy is left.

    Headers other than the addresses and threading ones are not stored, so
    ``headers`` is empty.  Attachments carry their names and types but not
    their bytes: rules only ask whether there are any."""
    addresses: dict[str, list[Address]] = {role: [] for role in ADDRESS_ROLES}
    seen: set[tuple[str, str]] = set()
    # in insertion order, so the first From is the sender it was then;
    # an address linked to several records has one row per record
    for party in ActivityParty.select().where(ActivityParty.activity == activity).order_by(ActivityParty.id):
        if party.role in addresses and (party.role, party.address) not in seen:
            seen.add((party.role, party.address))
            addresses[party.role].append(Address(party.address, party.display_name or ""))
    attachments = [
        AttachmentPart(a.filename, a.content_type, b"")
        for a in Attachment.select().where(Attachment.activity == activity).order_by(Attachment.position)
    ]
    return ParsedMessage(
        message_id=activity.message_id,
        synthetic_id=activity.synthetic_id,
        subject=activity.subject or "",
        sent_at=activity.sent_at,
        addresses=addresses,
        in_reply_to=activity.in_reply_to,
        references=(activity.references or "").split(),
        body_text=activity.body_text or "",
        body_html=activity.body_html,
        attachments=attachments,
        size=activity.size or 0,
    )


@dataclass
class _Read:
    """The message of an activity, and where the rules should see it."""

    msg: ParsedMessage
    mailbox: MailboxContext | None
    folder: str | None
    read_from: str | None
    note: str = ""


@dataclass
class _Target:
    """What decides the regarding now."""

    ref: str
    method: str
    record: Record | None = None  # None in a dry run when the record would be created
    correlated: Activity | None = None
    note: str = ""


class _Reapplier:
    """One run of ``rules apply``: the tracker's rules, the mailboxes' sources
    (opened once, on first use) and, in a dry run, what would change."""

    def __init__(self, db: pw.Database, config: Config, rules: RuleSet | None, *, dry_run: bool) -> None:
        self.db = db
        self.config = config
        self.dry_run = dry_run
        # the daemon's planner decides: the rules read as for a new message, then
        # the regarding (rule, else correlation) as the tracker would file it
        self.planner = Planner(
            db,
            precedence=precedence(config),
            ambiguous=config.tracking.ambiguous_addresses,
            correlation=config.correlation,
            rules=rules,
        )
        self.mailbox_configs = {mb.name: mb for mb in config.mailboxes}
        self.contexts: dict[int, MailboxContext] = {}
        self.sources: dict[str, Source | None] = {}
        #: why a mailbox cannot be read at all (not in the config, not openable)
        self.source_problems: dict[str, str] = {}
        #: dry run: the regarding each activity would get, so that a reply
        #: correlated to it follows the parent's new regarding as in a real run
        self.planned: dict[int, str] = {}

    # -- the run ------------------------------------------------------------------

    async def run(self, mailbox: str | None) -> list[Reapplied]:
        only = self._mailbox_row(mailbox) if mailbox is not None else None
        results = []
        try:
            for activity_id in self._candidate_ids(only):
                activity = Activity.get_or_none(Activity.id == activity_id)
                if activity is None:  # deleted meanwhile
                    continue
                results.append(await self._one(activity, only))
        finally:
            for source in self.sources.values():
                if source is not None:
                    await source.close()
        return results

    def _mailbox_row(self, name: str) -> Mailbox:
        row = Mailbox.get_or_none(Mailbox.name == name)
        if row is None:
            known = ", ".join(m.name for m in Mailbox.select().order_by(Mailbox.name)) or "none yet"
            raise NotFound(f"no mailbox named {name!r} in the store (mailboxes: {known})")
        return row

    def _candidate_ids(self, only: Mailbox | None) -> list[int]:
        # ids first, each activity read fresh: the daemon may relink one meanwhile;
        # in id order, so a parent is re-decided before the replies to it
        # rules decide e-mail only: an appointment (sync-back) has no message to read again
        query = Activity.select(Activity.id).where(Activity.kind == "email").order_by(Activity.id)
        if only is not None:
            held = Location.select(Location.activity).where(Location.mailbox == only)
            query = query.where(Activity.id.in_(held) | (Activity.owner_mailbox == only))
        return [a.id for a in query]

    async def _one(self, activity: Activity, only: Mailbox | None) -> Reapplied:
        if activity.correlation == "folder":
            return self._result(activity, "skipped-folder", note="filed in a folder with a regarding: the folder wins")
        read = await self._read(activity, only)
        if read.mailbox is None:
            return self._result(activity, "kept", note="no mailbox holds it: nothing to decide with", read=read)
        outgoing = read.msg.sender is not None and read.msg.sender in read.mailbox.owner_addresses
        decision = self.planner.decide(read.mailbox, read.folder, read.msg, "outgoing" if outgoing else "incoming")
        if self.dry_run:
            return self._decide(activity, read, decision)
        with transaction(self.db):
            # the daemon may have filed it into a folder since it was read
            fresh = Activity.get_or_none(Activity.id == activity.id)
            if fresh is None or fresh.correlation == "folder":
                return self._result(activity, "skipped-folder", note="filed in a folder meanwhile", read=read)
            return self._decide(fresh, read, decision)

    # -- reading the message ------------------------------------------------------

    async def _read(self, activity: Activity, only: Mailbox | None) -> _Read:
        present = list(
            Location.select(Location, Mailbox)
            .join(Mailbox)
            .where((Location.activity == activity) & (Location.gone_at.is_null()))
            .order_by(Location.first_seen_at.desc(), Location.id.desc())
        )
        # the mailbox asked for, then the owner's, then the newest location
        preferred = only.id if only is not None else activity.owner_mailbox_id
        present.sort(key=lambda loc: loc.mailbox_id != preferred)
        problems: list[str] = []
        for loc in present:
            msg = await self._fetch(loc, activity.message_id)
            if not isinstance(msg, str):
                return _Read(msg, self._context(loc.mailbox), loc.folder, f"{loc.mailbox.name}/{loc.folder}")
            problems.append(msg)
        why = "; ".join(dict.fromkeys(problems))
        note = f"could not read it again ({why})" if present else "no copy left in any mailbox"
        holder = present[0].mailbox if present else activity.owner_mailbox if activity.owner_mailbox_id else None
        return _Read(
            stored_message(activity),
            self._context(holder) if holder is not None else None,
            present[0].folder if present else None,
            None,
            f"{note}: stored fields used, headers not available",
        )

    async def _fetch(self, loc: Location, message_id: str) -> ParsedMessage | str:
        """The message read again from *loc*, or why it could not be."""
        source = await self._source(loc.mailbox.name)
        if source is None:
            return self.source_problems[loc.mailbox.name]
        try:
            if await source.size(loc.folder, loc.source_id) > self.config.limits.max_message_bytes:
                return "larger than limits.max_message_bytes"
            msg = await parse_off_loop(await source.fetch(loc.folder, loc.source_id))
        except (MailfilerError, OSError, RecursionError) as exc:
            # vanished, moved, unreadable, MIME nested too deep: the stored fields stand in
            return str(exc) or type(exc).__name__
        if msg.message_id != message_id:
            # a source id reused for another message must not lend its headers
            return f"{loc.folder}/{loc.source_id} now holds another message"
        return msg

    async def _source(self, name: str) -> Source | None:
        if name not in self.sources:
            mb = self.mailbox_configs.get(name)
            source: Source | None = None
            if mb is None:
                self.source_problems[name] = f"mailbox {name} is not in the config"
            else:
                source = make_source(mb)
                try:
                    await source.open()
                except MailfilerError as exc:
                    self.source_problems[name] = str(exc)
                    source = None
            self.sources[name] = source
        return self.sources[name]

    def _context(self, row: Mailbox) -> MailboxContext:
        """The mailbox as the tracker sees it, read from the store (the daemon's
        sync_config writes; a dry run must not)."""
        if row.id not in self.contexts:
            owned = {row.owner.lower()}
            if row.owner_record_id is not None:
                owned |= {
                    a.value
                    for a in RecordAddress.select(RecordAddress.value).where(
                        (RecordAddress.record == row.owner_record_id) & (RecordAddress.kind == "email")
                    )
                }
            self.contexts[row.id] = MailboxContext(row=row, owner_addresses=frozenset(owned))
        return self.contexts[row.id]

    # -- deciding -------------------------------------------------------------------

    def _decide(self, activity: Activity, read: _Read, decision: Decision) -> Reapplied:
        if decision.action == "skip":
            return self._result(
                activity, "kept", note=f"rules now say skip (rule {decision.rule}); left tracked", read=read
            )
        notes = [read.note]
        assert read.mailbox is not None
        # as new mail in a folder without a regarding (the folder's own filing is never re-decided)
        folder = watched_folder(read.folder or "")
        reg = self.planner.plan_new(read.mailbox, folder, read.msg, Judgement(decision=decision)).regarding
        target = self._by_rule(decision, reg, notes)
        if target is None:
            target = self._by_thread(activity, reg)
        if target is None:
            notes.append("kept: nothing decides now")
            return self._result(activity, "kept", note=_join(notes), read=read)
        notes.append(target.note)
        old = _ref(activity)
        if (target.ref, target.method) == (old, activity.correlation):
            return self._result(activity, "unchanged", note=_join(notes), read=read, target=target)
        if target.ref == old:
            notes.append(f"same regarding, now decided by {target.method}")
        if self.dry_run:
            self.planned[activity.id] = target.ref
            return self._result(activity, "would-change", note=_join(notes), read=read, target=target)
        self._write(activity, target)
        return self._result(activity, "changed", note=_join(notes), read=read, target=target)

    def _by_rule(self, decision: Decision, reg: Regarding, notes: list[str]) -> _Target | None:
        """The planner's regarding when the rule decided it; a record to create is
        created now (a real run) or named (a dry run)."""
        spec, method = decision.regarding, f"rule:{decision.rule}"
        if spec is None:
            return None
        if reg.method != method:
            # as when tracking: a record that does not exist leaves the decision to correlation
            notes.append(f"rule {decision.rule} names {spec.describe()}, which does not exist")
            return None
        if reg.record is not None:
            return _Target(reg.record.ref, method, reg.record)
        assert reg.create is not None
        if self.dry_run:
            ref = planned_ref(reg.create)
            # a record of that key made meanwhile (another name): creating would reuse it
            existing = get_by_ref(ref)
            if existing is not None:
                return _Target(existing.ref, method, existing)
            return _Target(ref, method, note=f"would create {ref}")
        record, created = resolve_regarding(self.db, reg.create)
        assert record is not None  # a spec to create always gives a record
        return _Target(record.ref, method, record, note=f"created {record.ref}" if created else "")

    def _by_thread(self, activity: Activity, reg: Regarding) -> _Target | None:
        """The planner's regarding when correlation decided it (in a dry run, the
        parent's regarding as this run would leave it)."""
        parent = reg.correlated
        if parent is None or parent.id == activity.id or reg.matched_by is None:
            return None
        ref = self.planned[parent.id] if parent.id in self.planned else _ref(parent)
        if ref is None:
            return None
        return _Target(ref, reg.matched_by, reg.record, correlated=parent)

    def _write(self, activity: Activity, target: _Target) -> None:
        changes: dict[Any, Any] = {
            Activity.regarding: target.record,
            Activity.correlation: target.method,
            Activity.updated_at: utcnow(),
        }
        # a rule decides without a thread: the link the message had stays
        if target.correlated is not None:
            changes[Activity.correlated_activity] = target.correlated
        Activity.update(changes).where(Activity.id == activity.id).execute()

    def _result(
        self,
        activity: Activity,
        result: str,
        *,
        note: str = "",
        read: _Read | None = None,
        target: _Target | None = None,
    ) -> Reapplied:
        old = _ref(activity)
        return Reapplied(
            activity_id=activity.id,
            message_id=activity.message_id,
            subject=activity.subject or "",
            old_regarding=old,
            old_correlation=activity.correlation,
            new_regarding=target.ref if target is not None else old,
            new_correlation=target.method if target is not None else activity.correlation,
            result=result,
            note=note,
            read_from=read.read_from if read is not None else None,
        )


def _ref(activity: Activity) -> str | None:
    regarding = activity.regarding if activity.regarding_id is not None else None
    return regarding.ref if regarding is not None else None


def _join(notes: list[str]) -> str:
    return "; ".join(n for n in notes if n)


async def reapply(
    db: pw.Database,
    config: Config,
    rules: RuleSet | None,
    *,
    mailbox: str | None = None,
    dry_run: bool = False,
) -> list[Reapplied]:
    """Re-decide the regarding of every tracked activity not filed in a folder
    with a regarding (see the module doc); one result per activity, in id order.

    ``mailbox``: only activities with a location in that mailbox, or owned by
    it; :class:`~mailfiler.errors.NotFound` when the store has no such mailbox.
    The models must be bound to *db* (:func:`mailfiler.store.db.connect`)."""
    return await _Reapplier(db, config, rules, dry_run=dry_run).run(mailbox)
