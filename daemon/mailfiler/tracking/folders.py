"""Folder-level bookkeeping: what a folder already holds, what left it,
and re-linking its messages when its regarding changes."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import peewee as pw

from mailfiler.store.db import transaction
from mailfiler.store.models import Activity, FolderCursor, Location, Mailbox, Shunt, TrackedFolder, utcnow

log = logging.getLogger("mailfiler.tracking")


def present_source_ids(mailbox: Mailbox, folder: str) -> set[str]:
    """Source ids the store believes are in a folder now."""
    present = Location.select(Location.source_id).where(
        (Location.mailbox == mailbox) & (Location.folder == folder) & (Location.gone_at.is_null())
    )
    return {r.source_id for r in present}


def shunted_source_ids(mailbox: Mailbox, folder: str) -> set[str]:
    """Source ids of a folder waiting in the shunt (retried only on request)."""
    shunted = Shunt.select(Shunt.source_id).where(
        (Shunt.mailbox == mailbox) & (Shunt.folder == folder) & (Shunt.resolved_at.is_null())
    )
    return {r.source_id for r in shunted}


def known_source_ids(mailbox: Mailbox, folder: str) -> set[str]:
    """Source ids already handled in a folder: present or shunted."""
    return present_source_ids(mailbox, folder) | shunted_source_ids(mailbox, folder)


def mark_gone(db: pw.Database, mailbox: Mailbox, folder: str, source_ids: Iterable[str]) -> int:
    """Record that messages left a folder.  Their activities stay tracked."""
    ids = list(source_ids)
    if not ids:
        return 0
    count = 0
    with transaction(db):
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            count += (
                Location.update(gone_at=utcnow())
                .where(
                    (Location.mailbox == mailbox)
                    & (Location.folder == folder)
                    & (Location.source_id.in_(chunk))
                    & (Location.gone_at.is_null())
                )
                .execute()
            )
    return count


def relink_folder(db: pw.Database, folder: TrackedFolder, record_id: int) -> int:
    """Point every message now in ``folder`` at ``record_id`` (Dynamics:
    re-pointing a folder's regarding re-links all of its emails)."""
    with transaction(db):
        in_folder = Location.select(Location.activity).where(
            (Location.mailbox == folder.mailbox_id) & (Location.folder == folder.folder) & (Location.gone_at.is_null())
        )
        # another user's folder that decided first keeps its regarding
        others = TrackedFolder.select(TrackedFolder.id).where(TrackedFolder.mailbox != folder.mailbox_id)
        return (
            Activity.update(
                regarding=record_id, correlation="folder", correlation_folder=folder.id, updated_at=utcnow()
            )
            .where(
                (Activity.id.in_(in_folder))
                & ((Activity.regarding.is_null()) | (Activity.regarding != record_id))
                & ((Activity.correlation_folder.is_null()) | (Activity.correlation_folder.not_in(others)))
            )
            .execute()
        )


def set_folder_state(
    mailbox: Mailbox, folder: str, state: str, error: str | None = None, *, synced: bool = False
) -> None:
    now = utcnow()
    values: dict = {"state": state, "last_error": error, "updated_at": now}
    if synced:
        values["last_sync_at"] = now
    updated = (
        FolderCursor.update(**values)
        .where((FolderCursor.mailbox == mailbox) & (FolderCursor.folder == folder))
        .execute()
    )
    if not updated:
        FolderCursor.insert(mailbox=mailbox, folder=folder, **values).on_conflict_ignore().execute()
