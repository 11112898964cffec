"""Meeting invitations in tracked mail become appointments (issue 5).

A ``text/calendar`` part (RFC 6047 iMIP) of a tracked message is applied to
the appointment with the same UID, in the tracker's transaction, regarding
the record the message is regarding:

- ``REQUEST`` / ``PUBLISH`` (or no METHOD): create the appointment, or update
  it; an update that carries only changed occurrences adds or replaces them;
- ``CANCEL``: the whole meeting is cancelled, or one occurrence is (EXDATE);
- ``REPLY``, ``COUNTER`` and the rest: nothing (an attendee's answer is not
  kept yet).

The appointment's regarding is set once, like an e-mail's: the first tracked
message that carries the invitation decides, later updates do not re-link.
From there the appointment syncs to calendars like any other.

The tracker (``Tracker._apply_invitations`` in :mod:`mailfiler.tracking.pipeline`)
calls :func:`apply_invitations` with the message's ``text/calendar`` parts right
after it creates the e-mail activity, in a savepoint of the same transaction: an
unreadable invitation, or a bug here, is logged and noted on the e-mail's
defects, and the e-mail is tracked all the same.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import icalendar

from mailfiler.errors import SyncItemUnreadable
from mailfiler.store.detailmodels import AppointmentDetails
from mailfiler.store.models import Activity, Mailbox, Record
from mailfiler.sync import ical
from mailfiler.sync.crm import AppointmentStore
from mailfiler.sync.items import OVERRIDE_FIELDS, time_to_str
from mailfiler.util.text import plural

if TYPE_CHECKING:
    import datetime as dt

log = logging.getLogger("mailfiler.sync.invitations")


@dataclass
class InvitationOutcome:
    uid: str | None
    #: created | updated | cancelled | ignored | unreadable
    action: str
    activity_id: int | None = None
    detail: str = ""


def apply_invitations(
    parts: Iterable[tuple[str, bytes]], *, regarding: Record | None, owner: str | None, mailbox: Mailbox | None
) -> list[InvitationOutcome]:
    """Apply every ``text/calendar`` part of (content type, bytes) pairs."""
    return [
        apply_invitation(data, regarding=regarding, owner=owner, mailbox=mailbox)
        for ctype, data in parts
        if ctype.lower().split(";")[0].strip() == "text/calendar"
    ]


def apply_invitation(
    data: bytes, *, regarding: Record | None, owner: str | None, mailbox: Mailbox | None
) -> InvitationOutcome:
    try:
        cal = icalendar.Calendar.from_ical(data)
    except Exception as exc:  # noqa: BLE001 - a broken invitation must not stop the e-mail being tracked
        return InvitationOutcome(None, "unreadable", detail=f"broken iCalendar: {exc}")
    method = str(cal.get("METHOD", "PUBLISH")).strip().upper()
    events = list(cal.walk("VEVENT"))
    if not events:
        return InvitationOutcome(None, "ignored", detail="no VEVENT")
    uid = str(events[0].get("UID", "")).strip()
    if not uid:
        return InvitationOutcome(None, "unreadable", detail="the event has no UID")
    store = AppointmentStore()
    existing = AppointmentDetails.get_or_none(AppointmentDetails.uid == uid)
    if method in ("REQUEST", "PUBLISH", "ADD"):
        return _request(data, uid, existing, store, regarding=regarding, owner=owner, mailbox=mailbox)
    if method == "CANCEL":
        return _cancel(events, uid, existing, store)
    return InvitationOutcome(uid, "ignored", detail=f"METHOD:{method}")


def _request(
    data: bytes,
    uid: str,
    existing: AppointmentDetails | None,
    store: AppointmentStore,
    *,
    regarding: Record | None,
    owner: str | None,
    mailbox: Mailbox | None,
) -> InvitationOutcome:
    try:
        parsed = ical.parse(data)
    except SyncItemUnreadable as exc:
        if existing is not None and "only changed occurrences" in str(exc):
            return _occurrences(data, uid, existing, store)
        return InvitationOutcome(uid, "unreadable", detail=str(exc))
    if existing is None:
        aid = store.create(parsed.fields, uid=uid, owner=owner, mailbox=mailbox, regarding=regarding)
        log.info("invitation %s tracked as appointment %d", uid, aid, extra={"event": "invitation-tracked"})
        return InvitationOutcome(uid, "created", aid)
    aid = existing.activity_id
    current = store.load_all([aid])[aid].fields
    store.write(aid, {k: v for k, v in parsed.fields.items() if current.get(k) != v})
    if regarding is not None:
        # the first tracked message decides, as for e-mail
        Activity.update(regarding=regarding).where((Activity.id == aid) & Activity.regarding.is_null()).execute()
    return InvitationOutcome(uid, "updated", aid)


def _occurrences(data: bytes, uid: str, existing: AppointmentDetails, store: AppointmentStore) -> InvitationOutcome:
    """An update of single occurrences only (VEVENTs with a RECURRENCE-ID, no master)."""
    aid = existing.activity_id
    overrides = {o["recurrence_id"]: o for o in json.loads(existing.overrides or "[]")}
    for ev in icalendar.Calendar.from_ical(data).walk("VEVENT"):
        # a DATE or DATE-TIME property (RFC 5545 §3.8.4.4); the stubs type any property's value
        rid = time_to_str(cast("dt.date", cast("icalendar.prop.vDDDTypes", ev["RECURRENCE-ID"]).dt))
        # read the occurrence as an event of its own: the same fields as a master
        del ev["RECURRENCE-ID"]
        single = icalendar.Calendar()
        single.add_component(ev)
        fields = ical.parse(single.to_ical()).fields
        overrides[rid] = {"recurrence_id": rid, **{k: fields[k] for k in OVERRIDE_FIELDS if k != "recurrence_id"}}
    store.write(aid, {"overrides": [overrides[k] for k in sorted(overrides)]})
    return InvitationOutcome(uid, "updated", aid, detail="occurrences")


def _cancel(events: list, uid: str, existing: AppointmentDetails | None, store: AppointmentStore) -> InvitationOutcome:
    if existing is None:
        return InvitationOutcome(uid, "ignored", detail="cancels an appointment that was never tracked")
    aid = existing.activity_id
    occurrences = [ev for ev in events if "RECURRENCE-ID" in ev]
    if not occurrences:
        store.write(aid, {"status": "cancelled"})
        return InvitationOutcome(uid, "cancelled", aid)
    exdates = set(json.loads(existing.exdates or "[]"))
    for ev in occurrences:
        exdates.add(time_to_str(ev["RECURRENCE-ID"].dt))
    store.write(aid, {"exdates": sorted(exdates)})
    return InvitationOutcome(uid, "cancelled", aid, detail=plural(len(occurrences), "occurrence"))
