"""One message of a batch (:mod:`mailfiler.tracking.batch`), in a module of its
own so that modules batch calls can name it without importing batch."""

from __future__ import annotations

from dataclasses import dataclass

from mailfiler.tracking.context import FolderContext, MailboxContext
from mailfiler.tracking.parse import ParsedMessage


@dataclass(frozen=True)
class Item:
    """One message to track, with what ``Tracker.track`` takes besides it."""

    mailbox: MailboxContext
    folder: FolderContext
    source_id: str
    msg: ParsedMessage
    may_be_shunted: bool = True
    token: str | None = None
