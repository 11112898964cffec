"""What the tracker needs to know about a mailbox and a folder."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailfiler.store.models import Mailbox, Record, TrackedFolder


@dataclass
class MailboxContext:
    row: Mailbox
    #: addresses that make a message outgoing (the owner and the owner's record's addresses)
    owner_addresses: frozenset[str] = field(default_factory=frozenset)


@dataclass
class FolderContext:
    row: TrackedFolder
    #: the record the folder stands for, when its regarding is set and exists
    regarding: Record | None = None

    @property
    def name(self) -> str:
        return self.row.folder
