"""The sync target abstraction: one collection (an address book or a
calendar) on the user's side, as vdirsyncer's ``Storage``.

It sits with the sources, below the sync engine, because a mailbox backend
brings collections of its own (an Exchange contacts folder, a Graph
calendar) from its own package, which may not import sync (.importlinter).

An item is named by its ``href`` and versioned by an opaque ``etag`` that
changes whenever its content does.  Every write names the etag it expects
(``update`` and ``delete``), so an item the user changed while a sync ran
is never overwritten blindly: the write fails with
:class:`SyncPreconditionFailed` and the next sync sees the new state.

The API is async and batched (``get_multi``) because the next targets are
CalDAV and CardDAV servers, where a round trip costs more than the work;
``changes_since`` gives a server's RFC 6578 sync token a way in, and may
return None when the target has nothing better than a full listing.
Every target passes the contract suite in ``tests/sync/target_contract.py``.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailfiler.errors import SyncItemExists, SyncItemNotFound, SyncPreconditionFailed, SyncTargetUnavailable

__all__ = [
    "EXTENSIONS",
    "Changes",
    "Fetched",
    "SyncItemExists",
    "SyncItemNotFound",
    "SyncPreconditionFailed",
    "SyncTargetUnavailable",
    "Target",
    "etag_key",
    "href_for",
]

#: one file extension per collection kind (the vdir layout; also the DAV resource names)
EXTENSIONS = {"contacts": ".vcf", "calendar": ".ics"}
KINDS = tuple(EXTENSIONS)

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+=-]{0,150}$")


def href_for(uid: str, kind: str) -> str:
    """A file or resource name for a new item: its UID when that is a safe
    name (what khard and khal do), else a hash of it."""
    stem = uid if _SAFE.match(uid) else hashlib.sha256(uid.encode()).hexdigest()[:40]
    return stem + EXTENSIONS[kind]


def etag_key(etag: str | None) -> str | None:
    """An etag as compared to tell whether an item changed.

    A weak etag (``W/"x"``, RFC 9110 §8.8.1) names the same version as
    ``"x"``: Apache's mod_dav, for one, gives ``W/`` for a second after a
    write and the strong form afterwards, and the item did not change.  The
    etag itself is kept as the server gave it, for ``If-Match``."""
    if etag is not None and etag.startswith("W/"):
        return etag[2:]
    return etag


@dataclass(frozen=True)
class Fetched:
    href: str
    etag: str
    data: bytes
    #: when the item last changed, if the target knows (UTC, naive)
    modified: dt.datetime | None = None


@dataclass
class Changes:
    """What changed since a sync token: ``changed`` maps href to its new etag."""

    token: str
    changed: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)


class Target(ABC):
    """One collection of items of one ``kind`` (``contacts`` or ``calendar``)."""

    #: short backend name shown in status (vdir, caldav, ...)
    backend: str = ""

    def __init__(self, kind: str, location: str) -> None:
        if kind not in EXTENSIONS:
            raise ValueError(f"unknown collection kind {kind!r}")
        self.kind = kind
        self.location = location

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.kind]

    async def open(self, *, create: bool = True) -> None:  # noqa: B027 - optional hook
        """Connect or check the collection; make it if *create* and it is missing.

        Raises :class:`SyncTargetUnavailable`."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def list(self) -> dict[str, str]:
        """Every item: href -> etag."""

    @abstractmethod
    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]:  # in this class, list is the method
        """The items named; an item that vanished since ``list`` is left out."""

    async def get(self, href: str) -> Fetched:
        """One item; raises :class:`SyncItemNotFound`."""
        found = await self.get_multi([href])
        if not found:
            raise SyncItemNotFound(f"{self.location}: no item {href}", href=href)
        return found[0]

    @abstractmethod
    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        """Store a new item; return (href, etag).  Raises :class:`SyncItemExists`."""

    @abstractmethod
    async def update(self, href: str, data: bytes, etag: str) -> str:
        """Replace an item if it still has *etag*; return the new etag.

        Raises :class:`SyncItemNotFound` or :class:`SyncPreconditionFailed`."""

    @abstractmethod
    async def delete(self, href: str, etag: str) -> None:
        """Delete an item if it still has *etag*.

        Raises :class:`SyncItemNotFound` or :class:`SyncPreconditionFailed`."""

    async def changes_since(self, token: str | None) -> Changes | None:
        """Changes since *token* (None: the current token with no changes), or
        None when the target cannot tell (the engine then lists everything)."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.location}>"
