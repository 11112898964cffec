"""Helpers for the store tests: the Store handle, building mail, setting up runtimes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import peewee as pw

from mailfiler.config.schema import Config
from mailfiler.service.runtime import MailboxRuntime, precedence
from mailfiler.store import db as storedb
from mailfiler.store import models as m
from mailfiler.store.blobs import BlobStore
from mailfiler.store.migrations import migrate
from mailfiler.tracking.parse import parse_message
from mailfiler.tracking.pipeline import Outcome, Tracker


@dataclass
class Store:
    backend: str  # "sqlite" | "postgres"
    url: str
    db: pw.Database
    state_dir: Path

    @property
    def is_postgres(self) -> bool:
        return self.backend == "postgres"

    def config(self, **fields: object) -> Config:
        """A validated Config pointing at this store (pydantic coerces the dicts)."""
        return Config(database=self.url, state_dir=self.state_dir, **fields)  # type: ignore[arg-type]

    def tracker(self, config: Config | None = None, *, ambiguous: str | None = None) -> Tracker:
        config = config or self.config()
        return Tracker(
            self.db,
            BlobStore(self.state_dir),
            precedence=precedence(config),
            ambiguous=ambiguous or config.tracking.ambiguous_addresses,
            correlation=config.correlation,
        )


# --------------------------------------------------------------------------- building mail


@contextmanager
def migrated_store(kind: str, url: str, tmp_path: Path) -> Iterator[Store]:
    """A connected, migrated store (the models bound to it), closed after."""
    db = storedb.connect(url)
    try:
        migrate(db)
        yield Store(kind, url, db, tmp_path / "state")
    finally:
        db.close()


def make_message(
    message_id: str | None,
    *,
    sender: str = "Anna Andersson <anna@contoso.com>",
    to: Sequence[str] = ("Erik Eriksson <erik@fabrikam.com>",),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str = "Offert 2024",
    body: str = "Hej!\n\nSe bifogad offert.\n",
    attachments: Iterable[tuple[str, bytes]] = (),
    date: str = "Tue, 02 Jan 2024 09:15:00 +0100",
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    if to:
        msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    if bcc:
        msg["Bcc"] = ", ".join(bcc)
    msg["Subject"] = subject
    msg["Date"] = date
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(body)
    for filename, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=filename)
    return msg.as_bytes()


def track_raw(tracker: Tracker, rt: MailboxRuntime, folder: str, source_id: str, raw: bytes) -> Outcome:
    """What the worker does for one message, minus the Maildir."""
    return tracker.track(rt.ctx, rt.folders[folder], source_id, parse_message(raw))


def mailbox_config(name: str, owner: str, maildir: Path, folders: dict[str, str | None]) -> dict[str, object]:
    return {
        "name": name,
        "owner": owner,
        "maildir": maildir,
        "tracked_folders": [{"folder": f, "regarding": r} for f, r in folders.items()],
    }


def counts() -> dict[str, int]:
    """Rows per table that tracking writes."""
    tables = (m.Activity, m.ActivityParty, m.Attachment, m.Blob, m.Location, m.FolderCursor, m.Shunt)
    return {t.__name__: t.select().count() for t in tables}
