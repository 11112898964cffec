"""Raw MIME through ``/mailFolders/{folder}/messages/{id}/$value``.

Graph gives no exact MIME size before the MIME itself (a message's
``PidTagMessageSize`` is the store's size, not the MIME's), so the size the
worker asks for first is learnt by reading: the bytes of a message up to
:data:`KEEP_MAX` are kept in a small cache (at most :data:`CACHE_BYTES`) for
the fetch that follows, so a message is downloaded once; a larger one is
counted as it streams and read again only if the worker wants it (it shunts
one over its size limit by streaming it to a file: :meth:`copy_to`).

Batches (a backfill's :meth:`Reader.read_many`) go through ``$batch``: 20
``$value`` requests in one round trip, four batches in flight (the mailbox's
concurrency limit).  A batch answers non-JSON bodies base64-encoded inside one
JSON document, a third larger and held whole, so an answer over
:data:`BATCH_BYTES` is dropped as it streams in and its messages are read one
by one, streamed, as are the sub-requests that failed (throttled: after the
Retry-After).  Against the fake, batches read small messages 2.7 times as fast
as four streamed requests (``bench/graph_backfill.py``); over the internet,
where each round trip costs tens of milliseconds, the gap is wider.

The folder is part of the URL: with immutable ids a message moved to another
folder keeps its id, and reading it through its old folder must be a 404
(:class:`MessageVanished`), not the message.  Reading never changes the
message (``$value`` does not mark it read).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import time
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from mailfiler.errors import MailboxUnavailable, MessageVanished
from mailfiler.sources.graph.client import BATCH_MAX, BatchUnusable, GraphClient, GraphError

#: a message up to this size is kept after its size was read
KEEP_MAX = 4 * 1024 * 1024
#: the cache of messages read for their size, waiting for their fetch
CACHE_BYTES = 32 * 1024 * 1024
#: how long a cached message stays (the worker fetches right after asking sizes)
CACHE_SECONDS = 120.0
#: attempts when the connection breaks mid-message
ATTEMPTS = 3
#: a $batch answer larger than this is not held: its messages are read one by one
BATCH_BYTES = 8 * 1024 * 1024

#: what :meth:`Reader.read_many` hands each message to: (id, size, bytes or None, error or None)
Taker = Callable[[str, int, "bytes | None", "Exception | None"], None]


def value_path(folder_id: str, source_id: str) -> str:
    return f"/mailFolders/{quote(folder_id, safe='')}/messages/{quote(source_id, safe='')}/$value"


class Reader:
    def __init__(self, client: GraphClient) -> None:
        self.client = client
        self._cache: collections.OrderedDict[tuple[str, str], tuple[float, bytes]] = collections.OrderedDict()
        self._cached_bytes = 0
        #: source id -> size learnt by counting a message too large to keep
        self._sizes: dict[tuple[str, str], int] = {}

    # -- the cache ------------------------------------------------------------------------

    def _put(self, key: tuple[str, str], data: bytes) -> None:
        self._drop(key)
        self._cache[key] = (time.monotonic(), data)
        self._cached_bytes += len(data)
        now = time.monotonic()
        while self._cache and (
            self._cached_bytes > CACHE_BYTES or next(iter(self._cache.values()))[0] < now - CACHE_SECONDS
        ):
            _, (_, old) = self._cache.popitem(last=False)
            self._cached_bytes -= len(old)

    def _drop(self, key: tuple[str, str]) -> bytes | None:
        entry = self._cache.pop(key, None)
        if entry is None:
            return None
        self._cached_bytes -= len(entry[1])
        return entry[1] if entry[0] >= time.monotonic() - CACHE_SECONDS else None

    # -- reading ----------------------------------------------------------------------------

    async def _stream(self, folder_id: str, source_id: str, sink: Callable[[bytes], None]) -> int:
        """Stream the message into ``sink``; its size.  Retries a broken connection
        from the start (``reset`` is the sink's job: it gets no partial message)."""
        path = value_path(folder_id, source_id)
        for attempt in range(1, ATTEMPTS + 1):
            chunks: list[bytes] = []
            total = 0
            try:
                async with self.client.open("GET", path, headers={"Accept": "*/*"}) as response:
                    async for chunk in response.aiter_raw():
                        total += len(chunk)
                        chunks.append(chunk)
                        if len(chunks) >= 64:  # hand on in pieces: bounded memory for a large message
                            for c in chunks:
                                sink(c)
                            chunks.clear()
                    for c in chunks:
                        sink(c)
                return total
            except GraphError as exc:
                if exc.status in (404, 400):
                    raise MessageVanished(
                        f"message {source_id} is not in the folder", folder=folder_id, source_id=source_id
                    ) from exc
                raise MailboxUnavailable(f"reading message {source_id}: {exc}") from exc
            except (httpx.TransportError, httpx.DecodingError) as exc:
                if attempt == ATTEMPTS:
                    raise MailboxUnavailable(f"the connection broke reading message {source_id}") from exc
                await asyncio.sleep(0.3 * attempt)
                sink(b"")  # an empty piece: the sink starts over
        raise AssertionError("unreachable")

    async def _read(self, folder_id: str, source_id: str, keep_max: int | None) -> tuple[int, bytes | None]:
        """(size, the bytes when size <= keep_max or keep_max is None)."""
        parts: list[bytes] = []
        state = {"size": 0, "keeping": True}

        def sink(chunk: bytes) -> None:
            if not chunk:  # a retry starts over
                parts.clear()
                state.update(size=0, keeping=True)
                return
            state["size"] += len(chunk)
            if keep_max is not None and state["size"] > keep_max:
                state["keeping"] = False
                parts.clear()
            if state["keeping"]:
                parts.append(chunk)

        size = await self._stream(folder_id, source_id, sink)
        return size, (b"".join(parts) if state["keeping"] else None)

    async def size(self, folder_id: str, source_id: str) -> int:
        key = (folder_id, source_id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] >= time.monotonic() - CACHE_SECONDS:
            return len(cached[1])
        size, data = await self._read(folder_id, source_id, KEEP_MAX)
        if data is not None:
            self._put(key, data)
        else:
            self._sizes[key] = size
        return size

    async def fetch(self, folder_id: str, source_id: str) -> bytes:
        key = (folder_id, source_id)
        self._sizes.pop(key, None)
        data = self._drop(key)
        if data is not None:
            return data
        _, got = await self._read(folder_id, source_id, None)
        assert got is not None
        return got

    async def copy_to(self, folder_id: str, source_id: str, out: BinaryIO) -> int:
        def sink(chunk: bytes) -> None:
            if not chunk:
                out.seek(0)
                out.truncate()
            else:
                out.write(chunk)

        return await self._stream(folder_id, source_id, sink)

    async def read_many(self, folder_id: str, ids: list[str], take: Taker, keep_max: int | None) -> None:
        """Several messages: through ``$batch``, 20 a request, and one by one what a batch
        could not give.  Each is handed to ``take(id, size, bytes or None, error or None)`` as
        it comes, nothing is gathered here: the bytes when ``keep_max`` is None or the
        message is no larger (else only its size: a message read for its size alone is
        counted as it streams, never held).  Vanished messages are left out."""
        leftover: list[str] = []

        async def chunk_read(chunk: list[str]) -> None:
            requests = [
                {
                    "id": str(i),
                    "method": "GET",
                    "url": self.client.mailbox_path.lstrip("/") + value_path(folder_id, sid),
                }
                for i, sid in enumerate(chunk)
            ]
            try:
                answers = await self.client.batch(requests, max_bytes=BATCH_BYTES)
            except BatchUnusable:
                leftover.extend(chunk)
                return
            for i, sid in enumerate(chunk):
                answer = answers.pop(str(i), None)
                if answer is not None and answer.status == 404:
                    continue  # gone
                if answer is not None and answer.status == 200 and isinstance(answer.body, str):
                    try:
                        data = base64.b64decode(answer.body, validate=True)
                    except (binascii.Error, ValueError):
                        data = None
                    if data is not None:
                        keep = keep_max is None or len(data) <= keep_max
                        take(sid, len(data), data if keep else None, None)
                        continue
                if answer is not None and answer.status in (429, 503):
                    self.client.note_throttled(answer.headers)
                leftover.append(sid)

        async def single(sid: str) -> None:
            try:
                size, data = await self._read(folder_id, sid, keep_max)
            except MessageVanished:
                return
            except MailboxUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker raises it again for this message alone
                take(sid, 0, None, exc)
                return
            take(sid, size, data, None)

        chunks = [ids[i : i + BATCH_MAX] for i in range(0, len(ids), BATCH_MAX)]
        await _gather([chunk_read(c) for c in chunks])
        if leftover:
            await _gather([single(sid) for sid in leftover])

    async def sizes(self, folder_id: str, ids: list[str]) -> dict[str, int | Exception]:
        """Sizes, reading the messages (the small ones kept for the fetch, within the cache's budget)."""
        out: dict[str, int | Exception] = {}
        todo = []
        for sid in ids:
            cached = self._cache.get((folder_id, sid))
            if cached is not None and cached[0] >= time.monotonic() - CACHE_SECONDS:
                out[sid] = len(cached[1])
            else:
                todo.append(sid)

        def take(sid: str, size: int, data: bytes | None, error: Exception | None) -> None:
            out[sid] = error if error is not None else size
            if data is not None:
                self._put((folder_id, sid), data)  # evicts the oldest beyond CACHE_BYTES

        if todo:
            await self.read_many(folder_id, todo, take, KEEP_MAX)
        return {sid: out[sid] for sid in ids if sid in out}

    async def fetch_many(self, folder_id: str, ids: list[str]) -> dict[str, bytes | Exception]:
        out: dict[str, bytes | Exception] = {}
        todo = []
        for sid in ids:
            data = self._drop((folder_id, sid))
            if data is not None:
                out[sid] = data
            else:
                todo.append(sid)

        def take(sid: str, size: int, data: bytes | None, error: Exception | None) -> None:
            out[sid] = error if error is not None else (data if data is not None else b"")

        if todo:
            await self.read_many(folder_id, todo, take, None)
        return {sid: out[sid] for sid in ids if sid in out}


async def _gather(coros: list[Any]) -> None:
    """Run them all; the first error (a MailboxUnavailable) raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for coro in coros:
                group.create_task(coro)
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None
