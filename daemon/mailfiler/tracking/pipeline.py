"""Track one message: the activity, its parties, attachments, location and
the folder cursor (its count and the backend's cursor token), written in one
transaction.

The transaction is idempotent: replaying the same message (after a crash,
a restart or a second mailbox holding it) finds the activity by Message-ID
and adds only what is new.  This is what makes "nothing twice" hold.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import peewee as pw

from mailfiler.config.schema import CorrelationSettings
from mailfiler.rules import Decision, Facts, RuleSet, auto_submitted_reason
from mailfiler.store import prepared
from mailfiler.store.blobs import BlobStore
from mailfiler.store.db import transaction
from mailfiler.store.models import (
    Activity,
    ActivityParty,
    Attachment,
    Blob,
    Mailbox,
    Record,
    SeenMessage,
    utcnow,
)
from mailfiler.store.records import resolve_addresses
from mailfiler.tracking import txsql
from mailfiler.tracking.autotrack import Verdict, auto_verdict
from mailfiler.tracking.context import FolderContext, MailboxContext
from mailfiler.tracking.correlate import Match, correlate, subject_key
from mailfiler.tracking.labels import message_label
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.regarding import create_contact
from mailfiler.tracking.regarding import resolve as resolve_regarding
from mailfiler.util import crashpoints

log = logging.getLogger("mailfiler.tracking")


def _no_point(name: str) -> None:
    """The crash point of a write that is not a commit (a savepoint in a batch)."""


@dataclass
class Plan:
    """Auto-tracking's judgement of a message outside tracked folders,
    computed before the transaction and handed to it (no second evaluation)."""

    decision: Decision | None = None
    #: None: the message is tracked already (another location of it)
    verdict: Verdict | None = None
    #: correlation's answer, once asked (``correlated``)
    match: Match | None = None
    correlated: bool = False


@dataclass
class Outcome:
    """What tracking one message did; ``event`` names the log event."""

    event: str  # tracked | located | relinked | known | kept-regarding | skipped
    activity_id: int | None
    message_id: str
    regarding: str | None = None
    detail: str = ""


class Tracker:
    def __init__(
        self,
        db: pw.Database,
        blobs: BlobStore,
        *,
        precedence: Sequence[str],
        ambiguous: str = "all",
        correlation: CorrelationSettings | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.precedence = tuple(precedence)
        self.ambiguous = ambiguous
        self.correlation = correlation or CorrelationSettings()
        self.rules = rules
        #: addresses resolved in the batch running (track_batch), None outside one
        self._resolved: dict[str, list[Record]] | None = None

    # -- batches ---------------------------------------------------------------

    @contextmanager
    def resolve_cache(self) -> Iterator[None]:
        """Resolve each address once for the messages tracked inside (one
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

    def _records_changed(self) -> None:
        if self._resolved is not None:
            self._resolved.clear()

    # -- the one transaction ------------------------------------------------

    def track(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        *,
        may_be_shunted: bool = True,
        token: str | None = None,
    ) -> Outcome:
        """Track one message.  ``may_be_shunted=False`` (the caller checked
        that no pending shunt holds this location) saves a query per message.
        ``token`` is the folder's new cursor token (the backend's, opaque),
        written in the same transaction: it never runs ahead of the messages
        committed (see :mod:`mailfiler.sources.base`).

        In a watched folder (not a tracked one) auto-tracking judges the
        message first; one it does not track is noted as seen, nothing more.

        Called inside a transaction (:func:`~mailfiler.tracking.batch.track_batch`)
        it runs in a savepoint, and its commit points are the batch's."""
        # a nested call commits nothing: no crash point of its own
        points = crashpoints.point if not self.db.in_transaction() else _no_point
        plan: Plan | None = None
        if not folder.tracked:
            plan = self.auto_plan(mailbox, folder.name, msg)
            if plan.verdict is not None and not plan.verdict.track:
                return self._skip(mailbox, folder, source_id, msg, plan.verdict.reason, may_be_shunted, token)
        # large blobs first: a crash after this leaves an orphan file, never
        # a row that points to nothing (small ones go in with the rows)
        blob_ids = [self.blobs.put_part(a) for a in msg.attachments]
        for attempt in range(3):
            try:
                points("before_commit")
                with transaction(self.db):
                    outcome = self._track_tx(mailbox, folder, source_id, msg, blob_ids, may_be_shunted, plan, token)
                points("after_commit")
                if plan is not None and plan.verdict is not None and outcome.event == "tracked":
                    outcome.detail = plan.verdict.reason
                return outcome
            except pw.IntegrityError:
                # another daemon inserted the same Message-ID between our
                # lookup and insert: the retry finds its row (and what its
                # rolled-back attempt resolved or created is forgotten)
                self._records_changed()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _track_tx(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        blob_ids: list[str],
        may_be_shunted: bool,
        plan: Plan | None = None,
        token: str | None = None,
    ) -> Outcome:
        now = utcnow()
        mb = mailbox.row
        seen = txsql.lookup(self.db, mb.id, folder.name, source_id, msg.message_id)
        if (
            seen.location_id is not None
            and not seen.location_gone
            and seen.activity_id is not None
            and seen.location_activity_id == seen.activity_id
        ):
            if token is not None:
                self._save_token(mb, folder, token, now)
            return Outcome("known", seen.activity_id, msg.message_id)

        if seen.activity_id is None:
            activity = self._create_activity(mailbox, folder, msg, blob_ids, now, plan)
            # the regarding may come from the folder, a rule or correlation
            regarding = activity.regarding.ref if activity.regarding_id else None
            outcome = Outcome("tracked", activity.id, msg.message_id, regarding)
        else:
            activity = txsql.activity(self.db, seen.activity_id)
            self._add_parties(activity, msg)
            outcome = self._relink(activity, mailbox, folder)

        if seen.location_id is None:
            txsql.insert_location(self.db, activity.id, mb.id, folder.name, source_id, now)
        else:
            txsql.reattach_location(self.db, seen.location_id, activity.id)

        if may_be_shunted:
            txsql.resolve_shunt(self.db, mb.id, folder.name, source_id, now)
        if not folder.tracked:
            # judged before (skipped, then the thread got tracked): no longer "seen"
            txsql.forget_seen(self.db, mb.id, folder.name, source_id)
        self._bump_cursor(mb, folder, now, token)
        return outcome

    # -- auto-tracking --------------------------------------------------------------

    def note_seen(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        reason: str,
        token: str | None = None,
    ) -> Outcome:
        """Note a message of a watched folder as seen and not tracked, without
        judging it (mail that was there before: see the worker's renumbered folders)."""
        return self._skip(mailbox, folder, source_id, msg, reason, False, token)

    def auto_plan(self, mailbox: MailboxContext, folder: str | None, msg: ParsedMessage) -> Plan:
        """Judge a message outside tracked folders (reads only).  No verdict
        when the message is tracked already: it is then one more location."""
        if txsql.activity_id(self.db, msg.message_id) is not None:
            return Plan()
        outgoing = msg.sender is not None and msg.sender in mailbox.owner_addresses
        facts = self.facts(mailbox, folder, msg, "outgoing" if outgoing else "incoming")
        decision = self.rules.evaluate(facts) if self.rules is not None else Decision()
        plan = Plan(decision=decision)
        parties = {a.address for addrs in msg.addresses.values() for a in addrs}

        def correlated() -> str | None:
            plan.match = correlate(msg, self.correlation)
            plan.correlated = True
            return plan.match.method if plan.match is not None else None

        def known() -> str | None:
            others = parties - mailbox.owner_addresses
            resolved = self._resolve(others)
            for address in sorted(others):
                if any(r.entity != "user" for r in resolved.get(address, [])):
                    return address
            return None

        plan.verdict = auto_verdict(
            decision=decision,
            policy=mailbox.policy,
            never=mailbox.never.blocks(msg.sender, parties, mailbox.owner_addresses),
            auto_reply=auto_submitted_reason(facts),
            correlated=correlated,
            known=known,
        )
        return plan

    def _skip(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        reason: str,
        may_be_shunted: bool,
        token: str | None = None,
    ) -> Outcome:
        now = utcnow()
        points = crashpoints.point if not self.db.in_transaction() else _no_point
        points("before_commit")
        with transaction(self.db):
            SeenMessage.insert(
                mailbox=mailbox.row,
                folder=folder.name,
                source_id=source_id,
                message_id=msg.message_id,
                verdict="skipped",
                reason=reason[:1000],
                seen_at=now,
            ).on_conflict_ignore().execute()
            if may_be_shunted:
                txsql.resolve_shunt(self.db, mailbox.row.id, folder.name, source_id, now)
            self._bump_cursor(mailbox.row, folder, now, token)
        points("after_commit")
        return Outcome("skipped", None, msg.message_id, None, reason)

    # -- parts ------------------------------------------------------------------

    def _create_activity(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        msg: ParsedMessage,
        blob_ids: list[str],
        now,
        plan: Plan | None = None,
    ) -> Activity:
        outgoing = msg.sender is not None and msg.sender in mailbox.owner_addresses
        # the folder's record wins (as in Dynamics); a folder without one lets
        # the rules decide, then correlation
        regarding, method, correlated = folder.regarding, "folder" if folder.regarding else None, None
        categories: str | None = None
        owner: str | None = None
        if regarding is None and (self.rules is not None or (plan is not None and plan.decision is not None)):
            if plan is not None and plan.decision is not None:
                decision = plan.decision
            else:
                decision = self.decide(mailbox, folder.name, msg, "outgoing" if outgoing else "incoming")
            if decision.regarding is not None:
                record, created = resolve_regarding(self.db, decision.regarding)
                if created:
                    self._records_changed()
                if record is not None:
                    regarding, method = record, f"rule:{decision.rule}"
                    if created:
                        log.info(
                            "rule %s created %s",
                            decision.rule,
                            record.ref,
                            extra={"event": "record-created", "record": record.ref, "rule": decision.rule},
                        )
            # after the regarding: a record the rule just created can be the
            # new contact's parent by domain
            # never-track covers contact creation too (HubSpot's never-log)
            spec = decision.create_contact
            if spec is not None and mailbox.never.entry_for(spec.address) is None:
                create_contact(self.db, spec, parent_precedence=self.precedence)
                self._records_changed()
            categories = ",".join(decision.categories) or None
            owner = decision.owner
        if regarding is None:
            match = plan.match if plan is not None and plan.correlated else correlate(msg, self.correlation)
            if match is not None:
                correlated = match.activity
                if match.activity.regarding_id is not None:
                    regarding, method = match.activity.regarding, match.method
        values = dict(
            message_id=msg.message_id,
            synthetic_id=msg.synthetic_id,
            subject=msg.subject,
            sent_at=msg.sent_at,
            first_seen_at=now,
            updated_at=now,
            direction="outgoing" if outgoing else "incoming",
            body_text=msg.body_text,
            body_html=msg.body_html,
            size=msg.size,
            in_reply_to=msg.in_reply_to,
            references=" ".join(msg.references) or None,
            regarding=regarding,
            correlation=method,
            correlation_folder=folder.row if folder.regarding else None,
            correlated_activity=correlated,
            subject_key=subject_key(msg.subject) or None,
            categories=categories,
            owner=owner,
            owner_mailbox=mailbox.row,
            parse_defects=", ".join(msg.defects) or None,
        )
        # a prebuilt INSERT (Activity.create built ~25 columns of SQL per message)
        activity = prepared.create(self.db, Activity, values)
        # resolved afresh, not reused from decide(): a rule may have just
        # created the sender's contact
        self._add_parties(activity, msg, fresh=True)
        for position, (part, digest) in enumerate(zip(msg.attachments, blob_ids, strict=True)):
            prepared.insert_ignore(self.db, Blob, [BlobStore.row(digest, part.data, part.nbytes)])
            prepared.insert(
                self.db,
                Attachment,
                {
                    "activity": activity.id,
                    "position": position,
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": part.nbytes,
                    "blob": digest,
                },
            )
        if any(a.content_type.lower() == "text/calendar" for a in msg.attachments):
            self._apply_invitations(activity, mailbox, msg)
        return activity

    def _apply_invitations(self, activity: Activity, mailbox: MailboxContext, msg: ParsedMessage) -> None:
        """A meeting invitation (a ``text/calendar`` part, iMIP) becomes or updates the
        appointment with its UID, regarding the mail's record, in this transaction.
        A broken one is logged and noted on the e-mail's defects: it never stops the
        mail being tracked (a savepoint rolls back only the invitation's writes)."""
        from mailfiler.sync.invitations import InvitationOutcome, apply_invitations

        parts = [(a.content_type, a.data) for a in msg.attachments if a.content_type.lower() == "text/calendar"]
        try:
            with self.db.atomic():
                outcomes = apply_invitations(
                    parts, regarding=activity.regarding, owner=mailbox.row.owner, mailbox=mailbox.row
                )
        except Exception as exc:  # any bug in an invitation must not cost the e-mail: logged with its traceback
            log.warning(
                "invitation in %s not applied",
                message_label(msg.message_id, msg.subject),
                exc_info=True,
                extra={"event": "invitation-error"},
            )
            outcomes = [InvitationOutcome(None, "unreadable", detail=f"{type(exc).__name__}: {exc}")]
        for out in outcomes:
            extra = {"event": f"invitation-{out.action}", "uid": out.uid, "activity": activity.id}
            if out.action == "unreadable":
                log.warning("invitation in %s: %s", message_label(msg.message_id, msg.subject), out.detail, extra=extra)
            elif out.action != "ignored":
                log.info("invitation %s %s: appointment %s", out.uid, out.action, out.activity_id, extra=extra)
        broken = [f"invitation: {o.detail}"[:200] for o in outcomes if o.action == "unreadable"]
        if broken:
            activity.parse_defects = ", ".join(filter(None, [activity.parse_defects, *broken]))
            activity.save()

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

    def _add_parties(self, activity: Activity, msg: ParsedMessage, *, fresh: bool = False) -> None:
        existing: set[tuple[str, str]] = set()
        if not fresh:
            existing = txsql.parties(self.db, activity.id)
        todo = []
        for role, addresses in msg.addresses.items():
            for addr in addresses:
                if (role, addr.address) in existing:
                    continue
                existing.add((role, addr.address))
                todo.append((role, addr))
        # one lookup for all of the message's addresses (was up to two queries each)
        resolved = self._resolve({addr.address for _, addr in todo})
        rows = []
        for role, addr in todo:
            records: list[Record | None] = list(resolved[addr.address.lower()]) or [None]
            for rec in records:
                rows.append(
                    {
                        "activity": activity.id,
                        "role": role,
                        "address": addr.address,
                        "display_name": addr.name,
                        "record": rec.id if rec else None,
                    }
                )
        prepared.insert_ignore(self.db, ActivityParty, rows)

    def _relink(self, activity: Activity, mailbox: MailboxContext, folder: FolderContext) -> Outcome:
        """Apply folder-level tracking to a message seen in one more place.

        As in Dynamics: a folder with a regarding re-links the message; a
        folder without one keeps what the message had.  When another user's
        folder decided the regarding, the first one processed wins."""
        target = folder.regarding
        current = activity.regarding.ref if activity.regarding_id else None
        if not folder.tracked:
            return Outcome("located", activity.id, activity.message_id, current)
        if target is None or activity.regarding_id == target.id:
            return Outcome("located", activity.id, activity.message_id, current)
        if activity.correlation == "folder" and activity.correlation_folder_id is not None:
            decided_by = activity.correlation_folder
            if decided_by.mailbox_id != mailbox.row.id:
                return Outcome(
                    "kept-regarding",
                    activity.id,
                    activity.message_id,
                    current,
                    f"regarding {current} was set by mailbox {decided_by.mailbox.name}; first filed wins",
                )
        activity.regarding = target
        activity.correlation = "folder"
        activity.correlation_folder = folder.row
        activity.updated_at = utcnow()
        activity.save()
        return Outcome("relinked", activity.id, activity.message_id, target.ref, f"from {current}")

    def _bump_cursor(self, mailbox: Mailbox, folder: FolderContext, now: dt.datetime, token: str | None = None) -> None:
        """Count one message and advance the token, in the message's transaction."""
        txsql.bump_cursor(self.db, mailbox.id, folder.name, folder.kind, now, token, count=True)

    def _save_token(self, mailbox: Mailbox, folder: FolderContext, token: str, now: dt.datetime) -> None:
        """Advance the cursor token without counting a message (one known already;
        inside the message's transaction)."""
        txsql.bump_cursor(self.db, mailbox.id, folder.name, folder.kind, now, token, count=False)
