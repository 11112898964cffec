"""Turn a rule's regarding into a record: look it up, or create it when the
rule opts in.  Runs inside the tracking transaction, so a created record
and the activity that needs it commit together."""

from __future__ import annotations

import hashlib
import logging

import peewee as pw

from mailfiler.rules.actions import CreateContactSpec, RegardingSpec
from mailfiler.rules.templates import slug as rules_slug
from mailfiler.store.models import Record, RecordAddress
from mailfiler.store.records import get_by_ref

log = logging.getLogger("mailfiler.tracking")


def slug(text: str) -> str:
    """A record key made from a name, the same as the rules' ``|slug``
    filter (``Åkesson AB`` -> ``akesson-ab``), so rules can refer to it."""
    key = rules_slug(text)[:200]
    return key or hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def find(spec: RegardingSpec) -> Record | None:
    if spec.key is not None:
        return Record.get_or_none((Record.entity == spec.entity) & (Record.key == spec.key))
    if spec.name is not None:
        return (
            Record.select()
            .where((Record.entity == spec.entity) & (pw.fn.LOWER(Record.name) == spec.name.lower()))
            .order_by(Record.id)
            .first()
        )
    if spec.field in ("email", "domain") and spec.value:
        return (
            Record.select()
            .join(RecordAddress)
            .where(
                (Record.entity == spec.entity)
                & (RecordAddress.kind == spec.field)
                & (RecordAddress.value == spec.value.strip().lower().lstrip("@"))
            )
            .order_by(Record.id)
            .first()
        )
    return None


def _create(
    db: pw.Database,
    entity: str,
    key: str,
    name: str,
    *,
    emails: tuple[str, ...] | list[str] = (),
    domains: tuple[str, ...] | list[str] = (),
    parent: Record | None = None,
) -> tuple[Record, bool]:
    """Create a record (a savepoint, so a concurrent creator's row is reused)."""
    try:
        with db.atomic():
            rec = Record.create(entity=entity, key=key, name=name, parent=parent)
            for value in {e.strip().lower() for e in emails if e.strip()}:
                RecordAddress.create(record=rec, kind="email", value=value)
            for value in {d.strip().lower().lstrip("@") for d in domains if d.strip()}:
                RecordAddress.create(record=rec, kind="domain", value=value)
            return rec, True
    except pw.IntegrityError:
        return Record.get((Record.entity == entity) & (Record.key == key)), False


def resolve(db: pw.Database, spec: RegardingSpec) -> tuple[Record | None, bool]:
    """(record, created).  None when it does not exist and may not be created."""
    found = find(spec)
    if found is not None or not spec.create:
        return found, False
    fields = spec.fields
    name = fields.name or spec.name or spec.key or spec.value or spec.entity
    key = spec.key or slug(name if spec.field is None else (spec.value or name))
    emails = list(fields.emails) + ([spec.value] if spec.field == "email" and spec.value else [])
    domains = list(fields.domains) + ([spec.value] if spec.field == "domain" and spec.value else [])
    parent = None
    if fields.parent:
        try:
            parent = get_by_ref(fields.parent)
        except ValueError:
            parent = None
    return _create(db, spec.entity, key, name, emails=emails, domains=domains, parent=parent)


def create_contact(db: pw.Database, spec: CreateContactSpec, *, parent_precedence: tuple[str, ...]) -> Record | None:
    """Create a contact (or lead) for an unknown sender; None if it is known."""
    address = spec.address.strip().lower()
    if not address or "@" not in address:
        return None
    known = RecordAddress.select().where((RecordAddress.kind == "email") & (RecordAddress.value == address))
    if known.exists():
        return None
    parent = None
    if spec.parent_by_domain:
        domain = address.rpartition("@")[2]
        candidates = list(
            Record.select()
            .join(RecordAddress)
            .where((RecordAddress.kind == "domain") & (RecordAddress.value == domain))
            .order_by(Record.id)
        )
        rank = {e: i for i, e in enumerate(parent_precedence)}
        candidates.sort(key=lambda r: rank.get(r.entity, len(rank)))
        parent = candidates[0] if candidates else None
    name = " ".join(p for p in (spec.first, spec.last) if p) or spec.display_name or address
    rec, _ = _create(db, spec.entity, address, name, emails=[address], parent=parent)
    return rec
