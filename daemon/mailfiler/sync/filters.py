"""Sync filters: which CRM items go to a mailbox's address book and calendar.

Filters are OR'ed and the conditions inside one filter AND'ed, as Dynamics
combines its sync filters: adding a filter can only widen what syncs, and
an empty list syncs nothing.  An item that stops matching is removed from
the user's side at the next sync (a "logical delete")."""

from __future__ import annotations

from collections.abc import Sequence

from mailfiler.config.syncschema import SyncFilter
from mailfiler.sync.crm import CrmItem


def matches(item: CrmItem, filters: Sequence[SyncFilter], *, owner: str) -> bool:
    return any(_one(item, f, owner) for f in filters)


def _one(item: CrmItem, f: SyncFilter, owner: str) -> bool:
    if f.all is False:
        return False
    if f.owner is not None:
        owners = {owner} if f.owner == "mailbox" else set(f.owner)
        if (item.owner or "").lower() not in owners:
            return False
    if f.regarding is not None:
        wanted = {_norm(r) for r in f.regarding}
        if not ({_norm(item.regarding), _norm(item.ref)} & wanted):
            return False
    return not (f.party is not None and owner not in item.parties)


def _norm(ref: str | None) -> str | None:
    if ref is None:
        return None
    entity, _, key = ref.partition(":")
    return f"{entity.strip().lower()}:{key.strip()}"
