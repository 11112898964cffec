"""Folder-level bookkeeping: what a folder already holds, what left it,
and re-linking its messages when its regarding changes."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import peewee as pw

from mailfiler.store.db import transaction
from mailfiler.store.models import (
    Activity,
    FolderCursor,
    Location,
    Mailbox,
    SeenMessage,
    Shunt,
    TrackedFolder,
    delete_from,
    utcnow,
)

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


def seen_source_ids(mailbox: Mailbox, folder: str) -> set[str]:
    """Source ids auto-tracking judged and did not track (or found there first)."""
    seen = SeenMessage.select(SeenMessage.source_id).where(
        (SeenMessage.mailbox == mailbox) & (SeenMessage.folder == folder)
    )
    return {r.source_id for r in seen}


def known_source_ids(mailbox: Mailbox, folder: str) -> set[str]:
    """Source ids already handled in a folder: present, shunted or seen."""
    return present_source_ids(mailbox, folder) | shunted_source_ids(mailbox, folder) | seen_source_ids(mailbox, folder)


def known_among(mailbox: Mailbox, folder: str, source_ids: Iterable[str]) -> set[str]:
    """Which of ``source_ids`` are already handled in a folder (present,
    shunted or seen): the few ids of a catch-up, without loading the folder."""
    ids = list(source_ids)
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for model, cond in (
            (Location, Location.gone_at.is_null()),
            (Shunt, Shunt.resolved_at.is_null()),
            (SeenMessage, None),
        ):
            where = (model.mailbox == mailbox) & (model.folder == folder) & (model.source_id.in_(chunk))
            if cond is not None:
                where &= cond
            out.update(r.source_id for r in model.select(model.source_id).where(where))
    return out


def folder_token(mailbox: Mailbox, folder: str, *, kind: str | None = None) -> str | None:
    """The backend's cursor token last committed for a folder (None: none yet).

    With ``kind``, only a token from a scan of that kind: a folder that was
    watched and is now tracked must be listed in full once (mail that
    auto-tracking left alone is tracked now that the folder is)."""
    row = (
        FolderCursor.select(FolderCursor.token, FolderCursor.kind)
        .where((FolderCursor.mailbox == mailbox) & (FolderCursor.folder == folder))
        .first()
    )
    if row is None or (kind is not None and row.kind != kind):
        return None
    return row.token


def save_token(mailbox: Mailbox, folder: str, token: str | None) -> None:
    """Set a folder's cursor token (None forgets it: the next scan lists the
    folder in full).  Call it inside the transaction of what it covers."""
    now = utcnow()
    updated = (
        FolderCursor.update(token=token, updated_at=now)
        .where((FolderCursor.mailbox == mailbox) & (FolderCursor.folder == folder))
        .execute()
    )
    if not updated and token is not None:
        FolderCursor.insert(
            mailbox=mailbox, folder=folder, token=token, updated_at=now, state="syncing"
        ).on_conflict_ignore().execute()


def record_baseline(db: pw.Database, mailbox: Mailbox, folder: str, source_ids: Iterable[str]) -> int:
    """Note the messages a watched folder held when auto-tracking first saw
    it: they are not tracked retroactively, and not read."""
    ids = list(source_ids)
    now = utcnow()
    with transaction(db):
        for start in range(0, len(ids), 500):
            rows = [
                {"mailbox": mailbox, "folder": folder, "source_id": sid, "verdict": "baseline", "seen_at": now}
                for sid in ids[start : start + 500]
            ]
            SeenMessage.insert_many(rows).on_conflict_ignore().execute()
    return len(ids)


def forget_seen(db: pw.Database, mailbox: Mailbox, folder: str, source_ids: Iterable[str]) -> int:
    """Messages that left a watched folder: a later return is judged afresh."""
    ids = list(source_ids)
    count = 0
    with transaction(db):
        for start in range(0, len(ids), 500):
            count += (
                delete_from(SeenMessage)
                .where(
                    (SeenMessage.mailbox == mailbox)
                    & (SeenMessage.folder == folder)
                    & (SeenMessage.source_id.in_(ids[start : start + 500]))
                )
                .execute()
            )
    return count


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
    mailbox: Mailbox,
    folder: str,
    state: str,
    error: str | None = None,
    *,
    synced: bool = False,
    kind: str | None = None,
    code: str | None = None,
) -> None:
    """``code``: the error's :attr:`~mailfiler.errors.MailfilerError.code`, for its hint in status."""
    now = utcnow()
    values: dict = {"state": state, "last_error": error, "error_code": code, "updated_at": now}
    if kind is not None:
        values["kind"] = kind
    if synced:
        values["last_sync_at"] = now
    updated = (
        FolderCursor.update(**values)
        .where((FolderCursor.mailbox == mailbox) & (FolderCursor.folder == folder))
        .execute()
    )
    if not updated:
        FolderCursor.insert(mailbox=mailbox, folder=folder, **values).on_conflict_ignore().execute()
