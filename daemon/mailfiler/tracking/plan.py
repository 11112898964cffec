"""Plan, then apply: what tracking a message will write, decided by reading
the store and never writing it.

The :class:`Planner` answers every question tracking asks (is the message
known, which activity, which regarding and how it was decided, which parties
link to which records, what auto-tracking says) and returns a plain
:class:`MessagePlan`.  :mod:`mailfiler.tracking.writer` applies plans, one
or a batch; ``rules test`` and ``rules apply --dry-run`` ask the same
planner, so they cannot disagree with the daemon.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import peewee as pw

from mailfiler.config.schema import CorrelationSettings
from mailfiler.rules import Decision, Facts, RuleSet, auto_submitted_reason
from mailfiler.rules.actions import CreateContactSpec, RegardingSpec
from mailfiler.store.models import Activity, Record
from mailfiler.store.records import resolve_addresses
from mailfiler.tracking import txsql
from mailfiler.tracking.autotrack import Verdict, auto_verdict
from mailfiler.tracking.context import FolderContext, MailboxContext
from mailfiler.tracking.correlate import Match, correlate, subject_key
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.regarding import find as find_record


@dataclass
class Judgement:
    """Auto-tracking's judgement of a message outside tracked folders,
    made before the transaction and handed to the plan (no second evaluation)."""

    decision: Decision | None = None
    #: None: the message is tracked already (another location of it)
    verdict: Verdict | None = None
    #: correlation's answer, once asked (``correlated``)
    match: Match | None = None
    correlated: bool = False


@dataclass(frozen=True)
class PartyLink:
    """One party row: an address in a role, linked to a record (or to none)."""

    role: str
    address: str
    display_name: str
    record_id: int | None


@dataclass
class Regarding:
    """A new activity's regarding and how it was decided."""

    record: Record | None = None
    #: folder | rule:NAME | in-reply-to | references | token | smart; None: undecided
    method: str | None = None
    #: the activity correlation matched (also when it had no regarding), and how
    correlated: Activity | None = None
    matched_by: str | None = None
    #: a rule's record that does not exist yet and that the rule creates (the writer does)
    create: RegardingSpec | None = None
    rule: str | None = None


#: what applying the plan does: note a skipped message; advance the token of a
#: known one; create an activity; add a sighting (location, parties, relink) to one
Action = Literal["skip", "known", "create", "sighting"]


@dataclass
class MessagePlan:
    """Everything tracking one message writes, decided before any write."""

    mailbox: MailboxContext
    folder: FolderContext
    source_id: str
    msg: ParsedMessage
    action: Action
    token: str | None = None
    may_be_shunted: bool = True
    #: skip: why not tracked; create: the auto-tracking verdict's reason ("" in a tracked folder)
    reason: str = ""
    #: sighting and known: the activity; create: None
    activity_id: int | None = None
    activity: Activity | None = None
    #: the location row to reattach (the same place seen before); None: a new one
    location_id: int | None = None
    regarding: Regarding = field(default_factory=Regarding)
    create_contact: CreateContactSpec | None = None
    categories: str | None = None
    owner: str | None = None
    #: parties to link (create: all; sighting: those the activity lacks)
    parties: list[PartyLink] = field(default_factory=list)
    #: sighting: located | relinked | kept-regarding, and its detail
    sighting: str = "located"
    detail: str = ""

    #: sent by the mailbox's owner (set from the message)
    outgoing: bool = field(init=False)

    def __post_init__(self) -> None:
        sender = self.msg.sender
        self.outgoing = sender is not None and sender in self.mailbox.owner_addresses

    @property
    def creates_records(self) -> bool:
        """The plan creates a record (a rule's regarding or a contact): the parties are resolved afresh after it."""
        return self.regarding.create is not None or self.create_contact is not None


def activity_row(plan: MessagePlan, now: dt.datetime) -> dict[str, Any]:
    """The activity a ``create`` plan inserts: the one place its columns are built."""
    msg, reg = plan.msg, plan.regarding
    return dict(
        message_id=msg.message_id,
        synthetic_id=msg.synthetic_id,
        subject=msg.subject,
        sent_at=msg.sent_at,
        first_seen_at=now,
        updated_at=now,
        direction="outgoing" if plan.outgoing else "incoming",
        body_text=msg.body_text,
        body_html=msg.body_html,
        size=msg.size,
        in_reply_to=msg.in_reply_to,
        references=" ".join(msg.references) or None,
        regarding=reg.record,
        correlation=reg.method,
        correlation_folder=plan.folder.row if plan.folder.regarding else None,
        correlated_activity=reg.correlated,
        subject_key=subject_key(msg.subject) or None,
        categories=plan.categories,
        owner=plan.owner,
        owner_mailbox=plan.mailbox.row,
        parse_defects=", ".join(msg.defects) or None,
    )


class Planner:
    """Decides what tracking writes; reads the store, never writes it."""

    def __init__(
        self,
        db: pw.Database,
        *,
        precedence: Iterable[str],
        ambiguous: str = "all",
        correlation: CorrelationSettings | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        self.db = db
        self.precedence = tuple(precedence)
        self.ambiguous = ambiguous
        self.correlation = correlation or CorrelationSettings()
        self.rules = rules
        #: addresses resolved in the batch running (track_batch), None outside one
        self._resolved: dict[str, list[Record]] | None = None

    # -- the address cache of a batch -------------------------------------------

    @contextmanager
    def resolve_cache(self) -> Iterator[None]:
        """Resolve each address once for the messages planned inside (one
        transaction: track_batch).  No other writer changes records meanwhile
        (SQLite: the batch holds the write lock; PostgreSQL: it reads as of its
        statements, as without the cache), and the batch's own record writes (a
        rule creating a record or a contact) clear it."""
        self._resolved = {}
        try:
            yield
        finally:
            self._resolved = None

    def _resolve(self, addresses: Iterable[str]) -> dict[str, list[Record]]:
        cache = self._resolved
        if cache is None:
            return resolve_addresses(addresses, precedence=self.precedence, ambiguous=self.ambiguous)
        wanted = {a.lower() for a in addresses}
        missing = wanted - cache.keys()
        if missing:
            cache.update(resolve_addresses(missing, precedence=self.precedence, ambiguous=self.ambiguous))
        return {a: cache[a] for a in wanted}

    def resolve_all(self, addresses: Iterable[str]) -> None:
        """Resolve ``addresses`` into the batch's cache in one go (inside :meth:`resolve_cache`)."""
        self._resolve(addresses)

    def _records_changed(self) -> None:
        if self._resolved is not None:
            self._resolved.clear()

    # -- the plan ---------------------------------------------------------------

    def plan(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        *,
        token: str | None = None,
        may_be_shunted: bool = True,
        judgement: Judgement | None = None,
        new: bool = False,
    ) -> MessagePlan:
        """The plan for one message as the store is now (the caller's
        transaction, when there is one, makes it hold until it is applied).
        ``new``: the caller knows that neither the message nor its location is
        in the store (:func:`~mailfiler.tracking.txsql.none_known`, for a batch)."""
        plan = MessagePlan(mailbox, folder, source_id, msg, "create", token=token, may_be_shunted=may_be_shunted)
        if judgement is not None and judgement.verdict is not None and not judgement.verdict.track:
            plan.action, plan.reason = "skip", judgement.verdict.reason
            return plan
        if judgement is not None and judgement.verdict is not None:
            plan.reason = judgement.verdict.reason
        if new:
            self._plan_new(plan, judgement)
            return plan
        seen = txsql.lookup(self.db, mailbox.row.id, folder.name, source_id, msg.message_id)
        plan.location_id = seen.location_id
        plan.activity_id = seen.activity_id
        if (
            seen.location_id is not None
            and not seen.location_gone
            and seen.activity_id is not None
            and seen.location_activity_id == seen.activity_id
        ):
            plan.action = "known"
            return plan
        if seen.activity_id is None:
            self._plan_new(plan, judgement)
        else:
            plan.action = "sighting"
            plan.activity = txsql.activity(self.db, seen.activity_id)
            if plan.activity.untracked_at is not None and not folder.tracked:
                # its owner untracked it: only filing it or tagging it tracks it again, never a sighting
                plan.action, plan.reason = "skip", f"untracked: {plan.activity.untracked_reason or 'by its owner'}"
                return plan
            plan.parties = self.party_links(msg, txsql.parties(self.db, seen.activity_id))
            self._plan_relink(plan)
        return plan

    def plan_new(
        self, mailbox: MailboxContext, folder: FolderContext, msg: ParsedMessage, judgement: Judgement | None = None
    ) -> MessagePlan:
        """The plan for ``msg`` as new mail in ``folder``, tracked already or not:
        the regarding ``rules test`` shows (the daemon's own decision)."""
        plan = MessagePlan(mailbox, folder, "", msg, "create")
        self._plan_new(plan, judgement)
        return plan

    def _plan_new(self, plan: MessagePlan, judgement: Judgement | None) -> None:
        folder, msg = plan.folder, plan.msg
        # the folder's record wins (as in Dynamics); a folder without one lets
        # the rules decide, then correlation
        reg = plan.regarding
        if folder.regarding is not None:
            reg.record, reg.method = folder.regarding, folder.method
        elif self.rules is not None or (judgement is not None and judgement.decision is not None):
            if judgement is not None and judgement.decision is not None:
                decision = judgement.decision
            else:
                decision = self.decide(plan.mailbox, folder.name, msg, "outgoing" if plan.outgoing else "incoming")
            if decision.regarding is not None:
                record = find_record(decision.regarding)
                if record is not None:
                    reg.record, reg.method = record, f"rule:{decision.rule}"
                elif decision.regarding.create:
                    reg.create, reg.method = decision.regarding, f"rule:{decision.rule}"
                reg.rule = decision.rule
            # never-track covers contact creation too (HubSpot's never-log)
            spec = decision.create_contact
            if spec is not None and plan.mailbox.never.entry_for(spec.address) is None:
                plan.create_contact = spec
            plan.categories = ",".join(decision.categories) or None
            plan.owner = decision.owner
        if reg.record is None and reg.create is None:
            if judgement is not None and judgement.correlated:
                match = judgement.match
            else:
                match = correlate(msg, self.correlation)
            if match is not None:
                reg.correlated, reg.matched_by = match.activity, match.method
                if match.activity.regarding_id is not None:
                    reg.record, reg.method = match.activity.regarding, match.method
        if not plan.creates_records:
            # with a record to create, the writer resolves the parties after creating it
            plan.parties = self.party_links(msg, set())

    def _plan_relink(self, plan: MessagePlan) -> None:
        """Folder-level tracking for a message seen in one more place.

        As in Dynamics: a folder with a regarding re-links the message; a
        folder without one keeps what the message had.  When another user's
        folder decided the regarding, the first one processed wins."""
        activity, folder = plan.activity, plan.folder
        assert activity is not None
        target = folder.regarding
        if not folder.tracked or target is None or activity.regarding_id == target.id:
            return
        if (
            activity.correlation == "folder"
            and (decided_by := activity.correlation_folder) is not None
            and decided_by.mailbox_id != plan.mailbox.row.id
        ):
            current = rec.ref if (rec := activity.regarding) is not None else None
            plan.sighting = "kept-regarding"
            plan.detail = f"regarding {current} was set by mailbox {decided_by.mailbox.name}; first filed wins"
            return
        plan.sighting = "relinked"

    def party_links(self, msg: ParsedMessage, existing: set[tuple[str, str]]) -> list[PartyLink]:
        """The party rows of ``msg`` the activity lacks (``existing``: its (role, address) pairs)."""
        existing = set(existing)
        todo = []
        for role, addresses in msg.addresses.items():
            for addr in addresses:
                if (role, addr.address) in existing:
                    continue
                existing.add((role, addr.address))
                todo.append((role, addr))
        # one lookup for all of the message's addresses
        resolved = self._resolve({addr.address for _, addr in todo})
        links = []
        for role, addr in todo:
            records: list[Record | None] = list(resolved[addr.address.lower()]) or [None]
            for rec in records:
                links.append(PartyLink(role, addr.address, addr.name, rec.id if rec else None))
        return links

    # -- auto-tracking ----------------------------------------------------------

    def auto_plan(self, mailbox: MailboxContext, folder: str | None, msg: ParsedMessage) -> Judgement:
        """Judge a message outside tracked folders (reads only).  No verdict
        when the message is tracked already: it is then one more location."""
        if txsql.activity_id(self.db, msg.message_id) is not None:
            return Judgement()
        outgoing = msg.sender is not None and msg.sender in mailbox.owner_addresses
        facts = self.facts(mailbox, folder, msg, "outgoing" if outgoing else "incoming")
        decision = self.rules.evaluate(facts) if self.rules is not None else Decision()
        judged = Judgement(decision=decision)
        parties = {a.address for addrs in msg.addresses.values() for a in addrs}

        def correlated() -> str | None:
            judged.match = correlate(msg, self.correlation)
            judged.correlated = True
            return judged.match.method if judged.match is not None else None

        def known() -> str | None:
            others = parties - mailbox.owner_addresses
            resolved = self._resolve(others)
            for address in sorted(others):
                if any(r.entity != "user" for r in resolved.get(address, [])):
                    return address
            return None

        judged.verdict = auto_verdict(
            decision=decision,
            policy=mailbox.policy,
            never=mailbox.never.blocks(msg.sender, parties, mailbox.owner_addresses),
            auto_reply=auto_submitted_reason(facts),
            correlated=correlated,
            known=known,
        )
        return judged

    def decide(self, mailbox: MailboxContext, folder: str | None, msg: ParsedMessage, direction: str) -> Decision:
        """What the rules say about *msg* in *folder*; reads the store only
        to see which records the addresses resolve to."""
        if self.rules is None:
            return Decision()
        return self.rules.evaluate(self.facts(mailbox, folder, msg, direction))

    def facts(self, mailbox: MailboxContext, folder: str | None, msg: ParsedMessage, direction: str) -> Facts:
        """The message as the rules see it, with its parties' entity types."""
        sender = msg.sender
        recipients = {a.address for role in ("to", "cc", "bcc") for a in msg.addresses.get(role, ())}
        resolved = self._resolve(recipients | ({sender} if sender else set()))
        return Facts.from_parsed(
            msg,
            mailbox=mailbox.row.name,
            folder=folder,
            direction=direction,
            sender_entities={r.entity for r in resolved.get(sender, [])} if sender else set(),
            recipient_entities={r.entity for a in recipients for r in resolved.get(a, [])},
        )
