"""The CRM side of the sync: contacts and appointments in the store, read
and written as the field dicts of :mod:`mailfiler.sync.items`.

Reading loads every item of a kind in a handful of queries (not one per
item), because a resync with no changes still compares every item.
Writing happens inside the caller's transaction, one item at a time.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import peewee as pw

from mailfiler.store.detailmodels import AppointmentDetails, ContactDetails, ContactPhone, PostalAddress
from mailfiler.store.models import Activity, ActivityParty, Mailbox, Record, RecordAddress, delete_from, utcnow
from mailfiler.store.records import ENTITY_PRECEDENCE, resolve_addresses
from mailfiler.sync.items import ADDRESS_PARTS, Fields, empty_fields, is_all_day, utc_instant

#: namespace of the UIDs derived for contacts that never had a vCard
_UID_NS = uuid.UUID("6f1c0a52-9b7e-4d43-8f0e-2b8f7f6a5c11")
_ROLE_TO_PARTY = {"required": "to", "optional": "cc"}
_PARTY_TO_ROLE = {v: k for k, v in _ROLE_TO_PARTY.items()}


@dataclass
class CrmItem:
    id: int
    uid: str
    fields: Fields
    modified: dt.datetime | None
    #: what sync filters look at
    owner: str | None = None
    ref: str | None = None  # contact:KEY (contacts)
    regarding: str | None = None  # the parent (contacts) or the regarding (appointments), ENTITY:KEY
    parties: frozenset[str] = field(default_factory=frozenset)


def tuple_rows(query: Iterable[object]) -> list[tuple[Any, ...]]:
    """A ``.tuples()`` query's rows (the peewee stubs type them as model objects)."""
    return cast("list[tuple[Any, ...]]", list(query))


@dataclass(frozen=True)
class CrmRows:
    """The raw rows a kind's items are built from: every column the sync reads,
    and nothing else.  Their :meth:`digest` changes whenever anything the
    engine would see changes, whoever wrote it and whether or not it touched
    an ``updated_at``, so an equal digest lets a resync skip the CRM side."""

    tables: tuple[list[tuple[Any, ...]], ...]

    @functools.cached_property
    def _digest(self) -> str:
        # repr, not pickle: pickle's output depends on which equal objects are shared
        return hashlib.blake2b(repr(self.tables).encode(), digest_size=16).hexdigest()

    def digest(self) -> str:
        return self._digest


def _max(*values: dt.datetime | None) -> dt.datetime | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


class ContactStore:
    """Contacts: ``Record`` rows of entity ``contact`` with their details."""

    kind = "contacts"

    @staticmethod
    def derived_uid(key: str) -> str:
        return str(uuid.uuid5(_UID_NS, f"contact:{key}"))

    def load_all(self, ids: list[int] | None = None) -> dict[int, CrmItem]:
        """Every contact, or those with *ids*."""
        return self.build(self.fetch(ids))

    def fetch(self, ids: list[int] | None = None) -> CrmRows:
        """The rows every contact is built from (see :class:`CrmRows`).

        Plain tuples, not model objects: a resync with no changes still
        reads every contact, and building peewee models was most of its cost.
        Every query is ordered, so the same contents give the same digest."""
        contact = Record.entity == "contact"
        if ids is not None:
            contact &= Record.id.in_(ids)
        records = tuple_rows(
            Record.select(Record.id, Record.key, Record.name, Record.parent, Record.updated_at)
            .where(contact)
            .order_by(Record.id)
            .tuples()
        )
        details = tuple_rows(
            ContactDetails.select(
                ContactDetails.record, ContactDetails.uid, ContactDetails.given_name, ContactDetails.family_name,
                ContactDetails.additional_names, ContactDetails.prefix, ContactDetails.suffix, ContactDetails.job_title,
                ContactDetails.notes, ContactDetails.company, ContactDetails.owner, ContactDetails.updated_at,
            ).join(Record).where(contact).order_by(ContactDetails.record).tuples()
        )  # fmt: skip
        emails = tuple_rows(
            RecordAddress.select(RecordAddress.record, RecordAddress.value)
            .join(Record)
            .where(contact & (RecordAddress.kind == "email"))
            .order_by(RecordAddress.record, RecordAddress.value)
            .tuples()
        )
        phones = tuple_rows(
            ContactPhone.select(ContactPhone.record, ContactPhone.kind, ContactPhone.number)
            .join(Record)
            .where(contact)
            .order_by(ContactPhone.record, ContactPhone.position, ContactPhone.id)
            .tuples()
        )
        columns = [getattr(PostalAddress, part) for part in ADDRESS_PARTS]
        postal = tuple_rows(
            PostalAddress.select(PostalAddress.record, *columns)
            .join(Record)
            .where(contact)
            .order_by(PostalAddress.record, PostalAddress.position, PostalAddress.id)
            .tuples()
        )
        parent_ids = sorted({r[3] for r in records if r[3]})
        parents = [
            row
            for chunk in _chunks(parent_ids)
            for row in tuple_rows(
                Record.select(Record.id, Record.entity, Record.key, Record.name)
                .where(Record.id.in_(chunk))
                .order_by(Record.id)
                .tuples()
            )
        ]
        return CrmRows((records, details, emails, phones, postal, parents))

    def build(self, rows: CrmRows) -> dict[int, CrmItem]:
        """The contacts of :meth:`fetch`'s rows."""
        records, detail_rows, email_rows, phone_rows, postal_rows, parent_rows = rows.tables
        details = {row[0]: row for row in detail_rows}
        emails: dict[int, list[str]] = defaultdict(list)
        for rid, value in email_rows:
            emails[rid].append(value)
        phones: dict[int, list[list[str]]] = defaultdict(list)
        for rid, kind, number in phone_rows:
            phones[rid].append([kind, number])
        postal: dict[int, list[dict[str, str]]] = defaultdict(list)
        for rid, *parts in postal_rows:
            postal[rid].append(dict(zip(ADDRESS_PARTS, parts, strict=True)))
        parents = {pid: (entity, key, name) for pid, entity, key, name in parent_rows}
        items = {}
        for rid, key, name, parent_id, updated_at in records:
            d = details.get(rid)
            parent = parents.get(parent_id) if parent_id else None
            f = empty_fields("contacts")
            f["name"] = name
            if d is not None:
                (f["given_name"], f["family_name"], f["additional_names"], f["prefix"], f["suffix"],
                 f["job_title"], f["notes"], f["company"]) = d[2:10]  # fmt: skip
            if not f["company"] and parent is not None and parent[0] == "account":
                f["company"] = parent[2]
            f["emails"] = sorted(set(emails[rid]))
            f["phones"] = phones[rid]
            f["addresses"] = postal[rid]
            items[rid] = CrmItem(
                id=rid,
                uid=(d[1] if d is not None and d[1] else self.derived_uid(key)),
                fields=f,
                modified=_max(updated_at, d[11] if d else None),
                owner=d[10] if d is not None else None,
                ref=f"contact:{key}",
                regarding=f"{parent[0]}:{parent[1]}" if parent is not None else None,
                parties=frozenset(f["emails"]),
            )
        return items

    def find_by_emails(self, emails: list[str]) -> list[int]:
        if not emails:
            return []
        q = (
            RecordAddress.select(RecordAddress.record)
            .join(Record)
            .where(
                (RecordAddress.kind == "email")
                & RecordAddress.value.in_([e.lower() for e in emails])
                & (Record.entity == "contact")
            )
            .order_by(RecordAddress.record)
        )
        return list(dict.fromkeys(a.record_id for a in q))

    def create(self, fields: Fields, *, uid: str, owner: str | None, mailbox: Mailbox, regarding: Record | None) -> int:
        rec = Record.create(entity="contact", key=self._new_key(fields), name=fields.get("name") or "(no name)")
        ContactDetails.create(record=rec, uid=uid, owner=owner)
        if regarding is not None and regarding.entity == "account":
            rec.parent = regarding
            rec.save()
        self.write(rec.id, {k: v for k, v in fields.items() if k != "name"})
        return rec.id

    def _new_key(self, fields: Fields) -> str:
        """A readable key: the first e-mail address, else the name, made unique."""
        base = (fields.get("emails") or [""])[0] or re.sub(r"[^\w.@-]+", ".", (fields.get("name") or "").lower())
        base = base.strip(".")[:200] or "contact"
        key, n = base, 1
        while Record.select().where((Record.entity == "contact") & (Record.key == key)).exists():
            n += 1
            key = f"{base}-{n}"
        return key

    def write(self, record_id: int, changed: Fields) -> None:
        if not changed:
            return
        rec = Record.get_by_id(record_id)
        d, _ = ContactDetails.get_or_create(record=rec)
        now = utcnow()
        if "name" in changed:
            rec.name = changed["name"] or "(no name)"
        for name in ("given_name", "family_name", "additional_names", "prefix", "suffix", "job_title", "notes"):
            if name in changed:
                setattr(d, name, changed[name] or "")
        if "company" in changed:
            d.company = changed["company"] or ""
            account = self._account_named(d.company)
            if account is not None:
                rec.parent = account
        if "emails" in changed:
            wanted = {e.lower() for e in changed["emails"] or []}
            have = {
                a.value: a
                for a in RecordAddress.select().where((RecordAddress.record == rec) & (RecordAddress.kind == "email"))
            }
            for value in set(have) - wanted:
                have[value].delete_instance()
            for value in sorted(wanted - set(have)):
                RecordAddress.create(record=rec, kind="email", value=value)
        if "phones" in changed:
            delete_from(ContactPhone).where(ContactPhone.record == rec).execute()
            for i, (kind, number) in enumerate(changed["phones"] or []):
                ContactPhone.create(record=rec, position=i, kind=kind[:32], number=number[:64])
        if "addresses" in changed:
            delete_from(PostalAddress).where(PostalAddress.record == rec).execute()
            for i, item in enumerate(changed["addresses"] or []):
                PostalAddress.create(record=rec, position=i, **{p: item.get(p, "") for p in ADDRESS_PARTS})
        rec.updated_at = d.updated_at = now
        rec.save()
        d.save()

    @staticmethod
    def _account_named(name: str) -> Record | None:
        """The account a company name stands for (case-insensitive), if exactly one."""
        if not name:
            return None
        found = list(
            Record.select().where((Record.entity == "account") & (pw.fn.LOWER(Record.name) == name.lower())).limit(2)
        )
        return found[0] if len(found) == 1 else None

    def delete(self, record_id: int) -> None:
        delete_from(Record).where(Record.id == record_id).execute()


class AppointmentStore:
    """Appointments: ``Activity`` rows of kind ``appointment`` with their details.

    The organizer is the ``from`` party; required and optional attendees are
    ``to`` and ``cc``, as Outlook addresses a meeting request."""

    kind = "calendar"

    def load_all(self, ids: list[int] | None = None) -> dict[int, CrmItem]:
        """Every appointment, or those with *ids*."""
        return self.build(self.fetch(ids))

    def fetch(self, ids: list[int] | None = None) -> CrmRows:
        """The rows every appointment is built from (plain tuples, ordered, as for contacts)."""
        appointment = Activity.kind == "appointment"
        if ids is not None:
            appointment &= Activity.id.in_(ids)
        D = AppointmentDetails
        rows = tuple_rows(
            Activity.select(
                Activity.id, Activity.subject, Activity.body_text, Activity.updated_at, Activity.owner,
                Activity.regarding, D.uid, D.start, D.end, D.location, D.status, D.rrule, D.exdates, D.overrides,
            ).join(D).where(appointment).order_by(Activity.id).tuples()
        )  # fmt: skip
        parties = tuple_rows(
            ActivityParty.select(ActivityParty.activity, ActivityParty.role, ActivityParty.address,
                                 ActivityParty.display_name)
            .join(Activity).where(appointment).order_by(ActivityParty.id).tuples()
        )  # fmt: skip
        refs = [
            row
            for chunk in _chunks(sorted({r[5] for r in rows if r[5]}))
            for row in tuple_rows(
                Record.select(Record.id, Record.entity, Record.key)
                .where(Record.id.in_(chunk))
                .order_by(Record.id)
                .tuples()
            )
        ]
        return CrmRows((rows, parties, refs))

    def build(self, fetched: CrmRows) -> dict[int, CrmItem]:
        """The appointments of :meth:`fetch`'s rows."""
        rows, party_rows, ref_rows = fetched.tables
        parties: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
        for aid, role, address, name in party_rows:
            parties[aid].append((role, address, name))
        refs = {rid: f"{entity}:{key}" for rid, entity, key in ref_rows}
        items = {}
        for (
            aid,
            subject,
            body,
            updated_at,
            owner,
            regarding_id,
            uid,
            start,
            end,
            location,
            status,
            rrule,
            ex,
            ov,
        ) in rows:
            f = empty_fields("calendar")
            f.update(
                subject=subject,
                start=start,
                end=end,
                location=location,
                status=status,
                body=body,
                rrule=rrule,
                exdates=json.loads(ex) if ex else [],
                overrides=json.loads(ov) if ov else [],
            )
            attendees = {}
            for role, address, name in parties[aid]:
                if role == "from":
                    f["organizer"] = [address, name]
                elif role in _PARTY_TO_ROLE:
                    attendees[address] = [address, name, _PARTY_TO_ROLE[role]]
            f["attendees"] = [attendees[k] for k in sorted(attendees)]
            items[aid] = CrmItem(
                id=aid,
                uid=uid,
                fields=f,
                modified=updated_at,
                owner=owner,
                regarding=refs.get(regarding_id) if regarding_id else None,
                parties=frozenset(p[1] for p in parties[aid]),
            )
        return items

    def find_by_emails(self, emails: list[str]) -> list[int]:
        return []

    def create(
        self, fields: Fields, *, uid: str, owner: str | None, mailbox: Mailbox | None, regarding: Record | None
    ) -> int:
        organizer = (fields.get("organizer") or [""])[0]
        activity = Activity.create(
            message_id=f"appointment:{uid}"[:998],
            synthetic_id=True,
            kind="appointment",
            direction="outgoing" if organizer and organizer == owner else "incoming",
            subject=fields.get("subject") or "",
            regarding=regarding,
            correlation="sync" if regarding is not None else None,
            owner=owner,
            owner_mailbox=mailbox,
        )
        AppointmentDetails.create(activity=activity, uid=uid, start=fields.get("start") or "")
        self.write(activity.id, fields)
        return activity.id

    def write(self, activity_id: int, changed: Fields) -> None:
        if not changed:
            return
        a = Activity.get_by_id(activity_id)
        d = AppointmentDetails.get_by_id(activity_id)
        if "subject" in changed:
            a.subject = changed["subject"] or ""
        if "body" in changed:
            a.body_text = changed["body"] or ""
        for name in ("start", "end", "location", "status", "rrule"):
            if name in changed:
                value: Any = changed[name]
                setattr(d, name, value if value is not None or name in ("end", "rrule") else "")
        if "status" in changed:
            d.status = changed["status"] or "confirmed"
        if "exdates" in changed:
            d.exdates = json.dumps(changed["exdates"] or [], ensure_ascii=False) if changed["exdates"] else None
        if "overrides" in changed:
            d.overrides = json.dumps(changed["overrides"] or [], ensure_ascii=False) if changed["overrides"] else None
        d.all_day = is_all_day(d.start)
        d.starts_at = utc_instant(d.start)
        d.ends_at = utc_instant(d.end)
        a.sent_at = d.starts_at
        if "organizer" in changed or "attendees" in changed:
            self._write_parties(a, changed)
        a.updated_at = utcnow()
        a.save()
        d.save()

    def _write_parties(self, a: Activity, changed: Fields) -> None:
        wanted: list[tuple[str, str, str]] = []
        current = {p.role: p for p in ActivityParty.select().where(ActivityParty.activity == a)}
        organizer = (
            changed["organizer"]
            if "organizer" in changed
            else ([current["from"].address, current["from"].display_name] if "from" in current else None)
        )
        if organizer and organizer[0]:
            wanted.append(("from", organizer[0], organizer[1]))
        if "attendees" in changed:
            attendees = changed["attendees"] or []
        else:
            attendees = [
                [p.address, p.display_name, _PARTY_TO_ROLE[p.role]]
                for p in ActivityParty.select().where(
                    (ActivityParty.activity == a) & ActivityParty.role.in_(list(_PARTY_TO_ROLE))
                )
            ]
        for address, name, role in attendees:
            wanted.append((_ROLE_TO_PARTY.get(role, "to"), address, name))
        delete_from(ActivityParty).where(ActivityParty.activity == a).execute()
        resolved = resolve_addresses([w[1] for w in wanted], precedence=ENTITY_PRECEDENCE)
        for role, address, name in wanted:
            records: Sequence[Record | None] = resolved.get(address.lower()) or [None]
            for rec in records:
                ActivityParty.create(activity=a, role=role, address=address.lower(), display_name=name, record=rec)

    def delete(self, activity_id: int) -> None:
        delete_from(Activity).where(Activity.id == activity_id).execute()


STORES: dict[str, type[ContactStore | AppointmentStore]] = {"contacts": ContactStore, "calendar": AppointmentStore}
