"""The shunt: messages that could not be tracked, kept with their reason
and a copy of their bytes so they can be retried (Mailman's shunt queue).

The source message is never touched; the copy lives under
``state_dir/shunt/``."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import peewee as pw

from mailfiler.store.db import transaction
from mailfiler.store.models import Mailbox, Shunt, utcnow
from mailfiler.util.fsio import atomic_write, fsync_dir

log = logging.getLogger("mailfiler.shunt")


class ShuntStore:
    def __init__(self, db: pw.Database, state_dir: Path) -> None:
        self.db = db
        self.state_dir = state_dir
        self.root = state_dir / "shunt"

    def _copy_path(self, mailbox: str, digest: str) -> Path:
        return self.root / mailbox / f"{digest}.eml"

    def keep(
        self,
        mailbox: Mailbox,
        folder: str,
        source_id: str,
        *,
        reason: str,
        detail: str,
        raw: bytes | None = None,
        raw_file: Path | None = None,
        message_id: str | None = None,
    ) -> Shunt:
        """Record a failed message (idempotent per location; counts attempts)."""
        rel: str | None = None
        size = 0
        if raw is not None:
            digest = hashlib.sha256(raw).hexdigest()
            target = self._copy_path(mailbox.name, digest)
            if not target.exists():
                atomic_write(target, raw)
            rel, size = str(target.relative_to(self.state_dir)), len(raw)
        elif raw_file is not None:
            # too large to hold in memory: stream the copy
            digest = hashlib.sha256(f"{mailbox.name}/{folder}/{source_id}".encode()).hexdigest()
            target = self._copy_path(mailbox.name, digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(raw_file, target)
                fsync_dir(target.parent)
                rel, size = str(target.relative_to(self.state_dir)), target.stat().st_size
            except OSError as exc:
                detail = f"{detail} (no copy kept: {exc.strerror})"
        now = utcnow()
        with transaction(self.db):
            row = Shunt.get_or_none(
                (Shunt.mailbox == mailbox) & (Shunt.folder == folder) & (Shunt.source_id == source_id)
            )
            if row is None:
                row = Shunt.create(
                    mailbox=mailbox,
                    folder=folder,
                    source_id=source_id,
                    message_id=message_id,
                    reason=reason,
                    detail=detail[:4000],
                    raw_path=rel,
                    size=size,
                    created_at=now,
                    last_attempt_at=now,
                )
            else:
                row.attempts += 1
                row.reason = reason
                row.detail = detail[:4000]
                row.raw_path = rel or row.raw_path
                row.size = size or row.size
                row.message_id = message_id or row.message_id
                row.last_attempt_at = now
                row.resolved_at = None
                row.save()
        return row

    def raw(self, row: Shunt) -> bytes | None:
        if not row.raw_path:
            return None
        path = self.state_dir / row.raw_path
        return path.read_bytes() if path.exists() else None

    def pending(self) -> list[Shunt]:
        return list(Shunt.select().where(Shunt.resolved_at.is_null()).order_by(Shunt.id))
