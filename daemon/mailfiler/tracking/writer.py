"""The one writer: applies tracking plans (:mod:`mailfiler.tracking.plan`)
to the store, one message or a batch, inside the caller's transaction and
with the folder's cursor.

Both modes write the same rows from the same builders
(:func:`~mailfiler.tracking.plan.activity_row` and the row helpers here);
batch mode writes a batch of new messages in one folder with one statement
per table instead of about eight statements a message
(``tests/store/test_bulk.py`` compares the two stores).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import peewee as pw

from mailfiler.config.schema import CorrelationSettings
from mailfiler.store import prepared
from mailfiler.store.blobs import BlobStore
from mailfiler.store.models import Activity, ActivityParty, Attachment, Blob, Location, SeenMessage, utcnow
from mailfiler.tracking import txsql
from mailfiler.tracking.context import FolderContext
from mailfiler.tracking.correlate import find_token, subject_key
from mailfiler.tracking.labels import message_label
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.plan import MessagePlan, PartyLink, Planner, activity_row
from mailfiler.tracking.regarding import create_contact
from mailfiler.tracking.regarding import resolve as resolve_regarding

log = logging.getLogger("mailfiler.tracking")

#: a batch-mode insert takes at most this many rows (bound parameters stay far below the limits)
_CHUNK = 200


@dataclass
class Outcome:
    """What tracking one message did; ``event`` names the log event."""

    event: str  # tracked | located | relinked | known | kept-regarding | skipped
    activity_id: int | None
    message_id: str
    regarding: str | None = None
    detail: str = ""


def party_rows(activity_id: int, links: Sequence[PartyLink]) -> list[dict[str, Any]]:
    return [
        {
            "activity": activity_id,
            "role": p.role,
            "address": p.address,
            "display_name": p.display_name,
            "record": p.record_id,
        }
        for p in links
    ]


def attachment_rows(activity_id: int, plan: MessagePlan, blob_ids: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """(blob rows, attachment rows) of a new activity."""
    blobs, attachments = [], []
    for position, (part, digest) in enumerate(zip(plan.msg.attachments, blob_ids, strict=True)):
        blobs.append(BlobStore.row(digest, part.data, part.nbytes))
        attachments.append(
            {
                "activity": activity_id,
                "position": position,
                "filename": part.filename,
                "content_type": part.content_type,
                "size": part.nbytes,
                "blob": digest,
            }
        )
    return blobs, attachments


def location_row(activity_id: int, plan: MessagePlan, now: dt.datetime) -> dict[str, Any]:
    return {
        "activity": activity_id,
        "mailbox": plan.mailbox.row.id,
        "folder": plan.folder.name,
        "source_id": plan.source_id,
        "first_seen_at": now,
    }


def _invites(plan: MessagePlan) -> bool:
    return any(a.content_type.lower() == "text/calendar" for a in plan.msg.attachments)


def batchable(plans: Sequence[MessagePlan], correlation: CorrelationSettings) -> bool:
    """The plans can be written in batch mode: new messages, new locations,
    one folder, nothing created on the way, and no message whose decision may
    depend on another of the batch being written first (a reply to one, a
    thread token, smart correlation by subject)."""
    if len(plans) < 2:
        return False
    first = plans[0]
    ids = {p.msg.message_id for p in plans}
    if len(ids) != len(plans):
        return False
    keys: set[str] = set()
    for plan in plans:
        if plan.action != "create" or plan.location_id is not None or plan.may_be_shunted or plan.creates_records:
            return False
        if plan.folder is not first.folder or plan.mailbox is not first.mailbox or not plan.folder.tracked:
            return False
        # a meeting invitation also writes an appointment: single mode does that
        if _invites(plan):
            return False
        if plan.folder.regarding is None:
            # the rules and correlation decided: one by one when the decision may
            # depend on another message of the batch being written first
            msg = plan.msg
            if msg.in_reply_to in ids or any(r in ids for r in msg.references):
                return False  # a reply to a message of the batch
            if find_token(msg.subject, correlation) is not None:
                return False  # the token may name an activity the batch creates
            if correlation.smart.enabled:
                key = subject_key(msg.subject)
                if key in keys:
                    return False  # smart matching by subject
                keys.add(key)
    return True


class Writer:
    """Applies plans.  Holds the store and the blob store; the planner's
    address resolution is used again after a plan created records."""

    db: pw.Database
    blobs: BlobStore

    def __init__(self, db: pw.Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    # -- single mode --------------------------------------------------------------

    def apply(self, plan: MessagePlan, blob_ids: list[str]) -> Outcome:
        """Write one plan (in the caller's transaction)."""
        now = utcnow()
        if plan.action == "skip":
            return self._apply_skip(plan, now)
        if plan.action == "known":
            if plan.token is not None:
                self._save_token(plan, now)
            return Outcome("known", plan.activity_id, plan.msg.message_id)
        if plan.action == "create":
            activity = self._create_activity(plan, blob_ids, now)
            regarding = rec.ref if (rec := activity.regarding) is not None else None
            outcome = Outcome("tracked", activity.id, plan.msg.message_id, regarding, plan.reason)
        else:
            assert plan.activity is not None
            activity = plan.activity
            self._add_parties(activity, plan.msg, links=plan.parties)
            if activity.untracked_at is not None:
                # filed into a tracked folder or tagged again: tracked again (the planner skips any other sighting)
                Activity.update(untracked_at=None, untracked_reason=None, updated_at=now).where(
                    Activity.id == activity.id
                ).execute()
            outcome = self._relink(activity, plan, now)
        if plan.location_id is None:
            txsql.insert_location(self.db, activity.id, plan.mailbox.row.id, plan.folder.name, plan.source_id, now)
        else:
            txsql.reattach_location(self.db, plan.location_id, activity.id)
        if plan.may_be_shunted:
            txsql.resolve_shunt(self.db, plan.mailbox.row.id, plan.folder.name, plan.source_id, now)
        if plan.folder.row is None:
            # judged before (skipped, then the thread got tracked or tagged): no longer "seen"
            txsql.forget_seen(self.db, plan.mailbox.row.id, plan.folder.name, plan.source_id)
        self._bump_cursor(plan.mailbox.row, plan.folder, now, plan.token)
        return outcome

    def _apply_skip(self, plan: MessagePlan, now: dt.datetime) -> Outcome:
        SeenMessage.insert(
            mailbox=plan.mailbox.row,
            folder=plan.folder.name,
            source_id=plan.source_id,
            message_id=plan.msg.message_id,
            verdict="skipped",
            reason=plan.reason[:1000],
            seen_at=now,
        ).on_conflict_ignore().execute()
        if plan.may_be_shunted:
            txsql.resolve_shunt(self.db, plan.mailbox.row.id, plan.folder.name, plan.source_id, now)
        self._bump_cursor(plan.mailbox.row, plan.folder, now, plan.token)
        return Outcome("skipped", None, plan.msg.message_id, None, plan.reason)

    def _create_records(self, plan: MessagePlan) -> None:
        """The records the plan creates, then its parties resolved afresh (a
        rule may have just created the sender's contact)."""
        assert isinstance(self, Planner)
        reg = plan.regarding
        if reg.create is not None:
            record, created = resolve_regarding(self.db, reg.create)
            if created:
                self._records_changed()
                log.info(
                    "rule %s created %s",
                    reg.rule,
                    record.ref if record else None,
                    extra={"event": "record-created", "record": record.ref if record else None, "rule": reg.rule},
                )
            reg.record = record
        # after the regarding: a record the rule just created can be the new contact's parent by domain
        if plan.create_contact is not None:
            create_contact(self.db, plan.create_contact, parent_precedence=self.precedence)
            self._records_changed()
        plan.parties = self.party_links(plan.msg, set())

    def _create_activity(self, plan: MessagePlan, blob_ids: list[str], now: dt.datetime) -> Activity:
        if plan.creates_records:
            self._create_records(plan)
        # a prebuilt INSERT (Activity.create built ~25 columns of SQL per message)
        activity = prepared.create(self.db, Activity, activity_row(plan, now))
        self._add_parties(activity, plan.msg, links=plan.parties)
        blobs, attachments = attachment_rows(activity.id, plan, blob_ids)
        for blob, attachment in zip(blobs, attachments, strict=True):
            prepared.insert_ignore(self.db, Blob, [blob])
            prepared.insert(self.db, Attachment, attachment)
        if _invites(plan):
            self._apply_invitations(activity, plan)
        return activity

    def _add_parties(self, activity: Activity, msg: ParsedMessage, *, links: Sequence[PartyLink]) -> None:
        """Link ``msg``'s parties (``links``, planned) to the activity."""
        prepared.insert_ignore(self.db, ActivityParty, party_rows(activity.id, links))

    def _relink(self, activity: Activity, plan: MessagePlan, now: dt.datetime) -> Outcome:
        current = rec.ref if (rec := activity.regarding) is not None else None
        if plan.sighting != "relinked":
            return Outcome(plan.sighting, activity.id, activity.message_id, current, plan.detail)
        target = plan.folder.regarding
        assert target is not None
        activity.regarding = target
        activity.correlation = plan.folder.method
        activity.correlation_folder = plan.folder.row
        activity.updated_at = now
        activity.save()
        return Outcome("relinked", activity.id, activity.message_id, target.ref, f"from {current}")

    def _apply_invitations(self, activity: Activity, plan: MessagePlan) -> None:
        """A meeting invitation (a ``text/calendar`` part, iMIP) becomes or updates the
        appointment with its UID, regarding the mail's record, in this transaction.
        A broken one is logged and noted on the e-mail's defects: it never stops the
        mail being tracked (a savepoint rolls back only the invitation's writes)."""
        from mailfiler.sync.invitations import InvitationOutcome, apply_invitations

        msg, mailbox = plan.msg, plan.mailbox
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

    def _bump_cursor(self, mailbox: Any, folder: FolderContext, now: dt.datetime, token: str | None = None) -> None:
        """Count one message and advance the token, in the message's transaction.
        A tagged message's folder has no folder cursor: its tag cursor is the tag pass's."""
        if folder.kind == "tagged":
            return
        txsql.bump_cursor(self.db, mailbox.id, folder.name, folder.kind, now, token, count=True)

    def _save_token(self, plan: MessagePlan, now: dt.datetime) -> None:
        """Advance the cursor token without counting a message (one known already)."""
        f = plan.folder
        if f.kind != "tagged":
            txsql.bump_cursor(self.db, plan.mailbox.row.id, f.name, f.kind, now, plan.token, count=False)

    # -- batch mode -----------------------------------------------------------------

    def apply_batch(self, plans: Sequence[MessagePlan], blob_ids: Sequence[list[str]]) -> list[Outcome]:
        """Write :func:`batchable` plans with one statement per table (in the
        caller's transaction); an Outcome per plan."""
        db = self.db
        now = utcnow()
        first = plans[0]
        ids: dict[str, int] = {}
        for start in range(0, len(plans), _CHUNK):
            rows = [activity_row(p, now) for p in plans[start : start + _CHUNK]]
            ids.update((mid, aid) for aid, mid in prepared.insert_returning(db, Activity, rows, Activity.message_id))
        parties: list[dict] = []
        blobs: list[dict] = []
        attachments: list[dict] = []
        locations: list[dict] = []
        for plan, digests in zip(plans, blob_ids, strict=True):
            aid = ids[plan.msg.message_id]
            parties += party_rows(aid, plan.parties)
            more_blobs, more_attachments = attachment_rows(aid, plan, digests)
            blobs += more_blobs
            attachments += more_attachments
            locations.append(location_row(aid, plan, now))
        for start in range(0, max(len(parties), len(blobs), len(locations)), _CHUNK):
            prepared.insert_ignore(db, ActivityParty, parties[start : start + _CHUNK])
            prepared.insert_ignore(db, Blob, blobs[start : start + _CHUNK])
            prepared.insert_many(db, Attachment, attachments[start : start + _CHUNK])
            prepared.insert_many(db, Location, locations[start : start + _CHUNK])
        # the batch's cursor: every message counted, the last one's token
        tokens = [p.token for p in plans if p.token is not None]
        f = first.folder
        txsql.bump_cursor(
            db, first.mailbox.row.id, f.name, f.kind, now, tokens[-1] if tokens else None, count=True, n=len(plans)
        )
        return [
            Outcome(
                "tracked",
                ids[p.msg.message_id],
                p.msg.message_id,
                p.regarding.record.ref if p.regarding.record is not None else None,
                p.reason,
            )
            for p in plans
        ]


__all__ = ["Outcome", "Writer", "batchable"]
