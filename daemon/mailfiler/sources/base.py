"""The mailbox backend abstraction.

Every backend (Maildir now, IMAP and Exchange later) implements
:class:`Source` and passes the shared contract suite in
``tests/contract/``.  A backend knows folders and opaque per-folder message
ids (``source_id``); it knows nothing of the CRM.  Ids are stable while a
message stays in a folder; a move shows up as ``gone`` in one folder and
``added`` in another, and the tracker re-identifies the message by its
Message-ID.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal

ChangeKind = Literal["added", "gone", "rescan"]


@dataclass(frozen=True)
class Change:
    """One change seen by a push watcher.

    ``rescan`` asks for a full diff of the folder (a folder appeared, or the
    watcher lost events)."""

    kind: ChangeKind
    folder: str
    source_id: str | None = None
    hint: str | None = None  # backend-specific locator, e.g. the file path


@dataclass(frozen=True)
class Listing:
    """The messages a folder holds now: source_id -> hint."""

    folder: str
    messages: dict[str, str | None]


class Source(abc.ABC):
    """A mailbox: list folders, list and fetch messages, push changes."""

    #: name of the backend in config and status ("maildir", "imap", ...)
    backend: str = ""

    async def open(self, *, create: bool = False) -> None:  # noqa: B027 - optional hook
        """Connect or check the mailbox is readable.  ``create`` makes an
        empty mailbox first where the backend can (a new local Maildir)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    async def list_folders(self) -> list[str]:
        """Every folder in the mailbox, with "/" as separator."""

    @abc.abstractmethod
    async def folder_exists(self, folder: str) -> bool: ...

    @abc.abstractmethod
    async def create_folder(self, folder: str) -> None: ...

    @abc.abstractmethod
    async def list_messages(self, folder: str) -> Listing:
        """Raise :class:`~mailfiler.errors.FolderMissing` if it does not exist."""

    @abc.abstractmethod
    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        """Size in bytes; raise :class:`~mailfiler.errors.MessageVanished` if gone."""

    @abc.abstractmethod
    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        """The raw message, never altering its state (no \\Seen, no rename).

        Raise :class:`~mailfiler.errors.MessageVanished` if it is gone."""

    @abc.abstractmethod
    def watch(self, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
        """Yield batches of changes in ``folders`` until ``stop`` is set."""

    async def copy_raw(self, folder: str, source_id: str, hint: str | None, dest: str) -> bool:
        """Stream a message to a file without holding it in memory (for
        shunting messages too large to fetch).  False if unsupported."""
        return False
