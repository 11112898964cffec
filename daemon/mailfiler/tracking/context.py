"""What the tracker needs to know about a mailbox and a folder."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailfiler.config.schema import Config
from mailfiler.store.models import Mailbox, Record, TrackedFolder
from mailfiler.store.records import ENTITY_PRECEDENCE
from mailfiler.tracking.autotrack import NeverTrack


@dataclass
class MailboxContext:
    row: Mailbox
    #: addresses that make a message outgoing (the owner and the owner's record's addresses)
    owner_addresses: frozenset[str] = field(default_factory=frozenset)
    #: auto-tracking policy for mail outside tracked folders: none | replies | known | all
    policy: str = "replies"
    #: the mailbox's never-track list joined with the global one
    never: NeverTrack = field(default_factory=NeverTrack)


@dataclass
class FolderContext:
    #: the tracked folder; None for a folder auto-tracking watches
    row: TrackedFolder | None
    #: the record the folder stands for, when its regarding is set and exists
    regarding: Record | None = None
    #: the folder's path when there is no row
    path: str = ""
    #: a message the user tagged (track by tag): tracked wherever it is, and
    #: ``regarding`` (when set) comes from the tag, as Set Regarding sets it
    tagged: bool = False

    @property
    def name(self) -> str:
        return self.row.folder if self.row is not None else self.path

    @property
    def tracked(self) -> bool:
        """Mail here is always tracked: a tracked folder, or a tagged message; not a watched folder."""
        return self.row is not None or self.tagged

    @property
    def kind(self) -> str:
        if self.row is not None:
            return "tracked"
        return "tagged" if self.tagged else "watched"

    @property
    def method(self) -> str:
        """How ``regarding`` was decided, as the activity records it."""
        return "tag" if self.row is None and self.tagged else "folder"


def watched_folder(path: str) -> FolderContext:
    return FolderContext(row=None, path=path)


def tagged_message(path: str, regarding: Record | None = None) -> FolderContext:
    """The context of a tagged message in ``path``, a folder neither tracked nor watched."""
    return FolderContext(row=None, regarding=regarding, path=path, tagged=True)


def precedence(config: Config) -> list[str]:
    """Entity types in the order an address resolves to them: the built-in ones, then the config's."""
    return list(ENTITY_PRECEDENCE) + [e.name for e in config.entities]
