"""An in-memory target: the contract suite's reference and the property
test's fast side (vdirsyncer's ``MemoryStorage``)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence

from mailfiler.sync.target import (
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

    def _new_etag(self) -> str:
        return f"m{next(_counter)}"

    async def list(self) -> dict[str, str]:
        return {href: etag for href, (etag, _, _) in self.items.items()}

    async def get_multi(self, hrefs: Sequence[str]) -> list[Fetched]:
        return [Fetched(h, self.items[h][0], self.items[h][1], self.items[h][2]) for h in hrefs if h in self.items]

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        href = href_for(uid, self.kind)
        if href in self.items:
            raise SyncItemExists(f"{href} exists already", href=href)
        etag = self._new_etag()
        self.items[href] = (etag, bytes(data), dt.datetime.now(dt.UTC).replace(tzinfo=None))
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
        return new

    async def delete(self, href: str, etag: str) -> None:
        self._check(href, etag)
        del self.items[href]
