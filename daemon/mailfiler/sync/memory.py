"""An in-memory target: the contract suite's reference, a fast side for
tests, and the one target here with sync tokens (``changes_since``), so the
engine's token path is tested before a CalDAV server brings real ones."""

from __future__ import annotations

import builtins
import datetime as dt
import itertools
from collections.abc import Sequence

from mailfiler.sources.target import (
    Changes,
    Fetched,
    SyncItemExists,
    SyncItemNotFound,
    SyncPreconditionFailed,
    Target,
    href_for,
)

_counter = itertools.count(1)


class MemoryTarget(Target):
    backend = "memory"

    def __init__(self, kind: str, location: str = "memory") -> None:
        super().__init__(kind, location)
        self.items: dict[str, tuple[str, bytes, dt.datetime]] = {}
        #: every change in order: (href, etag or None when deleted); a token is a position in it
        self.journal: list[tuple[str, str | None]] = []
        self.supports_tokens = True

    async def changes_since(self, token: str | None) -> Changes | None:
        if not self.supports_tokens:
            return None
        now = str(len(self.journal))
        if token is None:
            return Changes(now)
        if not token.isdigit() or int(token) > len(self.journal):
            return None  # a token we never gave: list everything (as a server's 403 valid-sync-token)
        changes = Changes(now)
        for href, etag in self.journal[int(token) :]:
            if etag is None:
                changes.changed.pop(href, None)
                changes.deleted.add(href)
            else:
                changes.deleted.discard(href)
                changes.changed[href] = etag
        return changes

    def _new_etag(self) -> str:
        return f"m{next(_counter)}"

    async def list(self) -> dict[str, str]:
        return {href: etag for href, (etag, _, _) in self.items.items()}

    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]:  # in this class, list is the method
        return [Fetched(h, self.items[h][0], self.items[h][1], self.items[h][2]) for h in hrefs if h in self.items]

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        href = href_for(uid, self.kind)
        if href in self.items:
            raise SyncItemExists(f"{href} exists already", href=href)
        etag = self._new_etag()
        self.items[href] = (etag, bytes(data), dt.datetime.now(dt.UTC).replace(tzinfo=None))
        self.journal.append((href, etag))
        return href, etag

    def _check(self, href: str, etag: str) -> None:
        if href not in self.items:
            raise SyncItemNotFound(f"no item {href}", href=href)
        if self.items[href][0] != etag:
            raise SyncPreconditionFailed(f"{href} changed since it was read", href=href)

    async def update(self, href: str, data: bytes, etag: str) -> str:
        self._check(href, etag)
        new = self._new_etag()
        self.items[href] = (new, bytes(data), dt.datetime.now(dt.UTC).replace(tzinfo=None))
        self.journal.append((href, new))
        return new

    async def delete(self, href: str, etag: str) -> None:
        self._check(href, etag)
        del self.items[href]
        self.journal.append((href, None))
