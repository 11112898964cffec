"""Read-only views of contacts, appointments and sync state for the CLI."""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee as pw

from mailfiler.store.models import Mailbox, Record, with_aliases
from mailfiler.store.records import require_record
from mailfiler.store.syncmodels import SyncCollection, SyncItem, SyncShunt
from mailfiler.sync.crm import AppointmentStore, ContactStore


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


def contacts(*, owner: str | None = None) -> list[dict[str, Any]]:
    items = ContactStore().load_all()
    refs = {r.id: r.ref for r in Record.select(Record.id, Record.entity, Record.key).where(Record.entity == "contact")}
    out = []
    for cid, it in sorted(items.items(), key=lambda kv: kv[1].fields["name"].lower()):
        if owner is not None and (it.owner or "") != owner.lower():
            continue
        out.append({"ref": refs.get(cid), "uid": it.uid, "owner": it.owner, "parent": it.regarding, **it.fields})
    return out


def appointments(*, regarding: str | None = None) -> list[dict[str, Any]]:
    wanted = None
    if regarding:
        rec = require_record(regarding)
        wanted = rec.ref
    items = AppointmentStore().load_all()
    out = []
    for aid, it in sorted(items.items(), key=lambda kv: (kv[1].fields["start"] or "", kv[0])):
        if wanted is not None and it.regarding != wanted:
            continue
        out.append({"id": aid, "uid": it.uid, "owner": it.owner, "regarding": it.regarding, **it.fields})
    return out


def status() -> list[dict[str, Any]]:
    """Per active sync collection: last sync, state, counts, last error."""
    shunted = dict(
        (r.collection_id, r.n)
        for r in with_aliases(
            SyncShunt.select(SyncShunt.collection, pw.fn.COUNT(SyncShunt.id).alias("n"))
            .where(SyncShunt.resolved_at.is_null())
            .group_by(SyncShunt.collection)
        )
    )
    unlinked = dict(
        (r.collection_id, r.n)
        for r in with_aliases(
            SyncItem.select(SyncItem.collection, pw.fn.COUNT(SyncItem.id).alias("n"))
            .where(SyncItem.state == "unlinked")
            .group_by(SyncItem.collection)
        )
    )
    q = (
        SyncCollection.select(SyncCollection, Mailbox)
        .join(Mailbox)
        .where(SyncCollection.active & Mailbox.active)
        .order_by(Mailbox.name, SyncCollection.kind, SyncCollection.location)
    )
    return [
        {
            "mailbox": c.mailbox.name,
            "kind": c.kind,
            "backend": c.backend,
            "location": c.location,
            "role": c.role,
            "state": c.state,
            "last_sync": _iso(c.last_sync_at),
            "items": c.items,
            "unlinked": unlinked.get(c.id, 0),
            "shunted": shunted.get(c.id, 0),
            "last_error": c.last_error,
        }
        for c in q
    ]


def shunted() -> list[dict[str, Any]]:
    q = (
        SyncShunt.select(SyncShunt, SyncCollection, Mailbox)
        .join(SyncCollection)
        .join(Mailbox)
        .where(SyncShunt.resolved_at.is_null())
        .order_by(SyncShunt.id)
    )
    return [
        {
            "id": s.id,
            "mailbox": s.collection.mailbox.name,
            "collection": s.collection.location,
            "href": s.href,
            "reason": s.reason,
            "detail": s.detail,
            "attempts": s.attempts,
            "copy": s.raw_path,
            "last_attempt_at": _iso(s.last_attempt_at),
        }
        for s in q
    ]
