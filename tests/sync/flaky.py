"""A target wrapper that fails on chosen calls: a server that errors mid-sync, a full disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mailfiler.errors import SyncError
from mailfiler.sources.target import Changes, Fetched, Target


class FlakyTarget(Target):
    """Delegates to *inner*; ``fail(op, n)`` decides whether the n-th call of
    *op* (upload, update, delete, get_multi, list) raises."""

    def __init__(self, inner: Target, fail: Callable[[str, int], Exception | None]) -> None:
        super().__init__(inner.kind, inner.location)
        self.backend = inner.backend
        self.inner = inner
        self.fail = fail
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        exc = self.fail(op, self.calls[op])
        if exc is not None:
            raise exc

    async def open(self, *, create: bool = True) -> None:
        await self.inner.open(create=create)

    async def list(self) -> dict[str, str]:
        self._maybe_fail("list")
        return await self.inner.list()

    async def get_multi(self, hrefs: Sequence[str]) -> list[Fetched]:
        self._maybe_fail("get_multi")
        return await self.inner.get_multi(hrefs)

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        self._maybe_fail("upload")
        return await self.inner.upload(data, uid=uid)

    async def update(self, href: str, data: bytes, etag: str) -> str:
        self._maybe_fail("update")
        return await self.inner.update(href, data, etag)

    async def delete(self, href: str, etag: str) -> None:
        self._maybe_fail("delete")
        await self.inner.delete(href, etag)

    async def changes_since(self, token: str | None) -> Changes | None:
        return await self.inner.changes_since(token)


def nth(op: str, *ns: int, exc: Exception | None = None) -> Callable[[str, int], Exception | None]:
    def fail(called: str, n: int) -> Exception | None:
        if called == op and n in ns:
            return exc or SyncError(f"injected failure of {op} #{n} (HTTP 503)")
        return None

    return fail
