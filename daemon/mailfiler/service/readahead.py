"""A scan's messages read, parsed and their large attachments written ahead
of the worker, in batches, in the order the worker tracks them.

The stages run side by side on different batches, so that the slowest one
sets the pace rather than their sum:

* reading: one :meth:`Source.sizes_of` and one :meth:`Source.fetch_batch` per
  batch (over IMAP one ``UID FETCH`` of up to 400 UIDs instead of two round
  trips per message), in a producer task, at most :data:`DEPTH` batches ahead;
* parsing, in the parse helper processes (:class:`ParsePool`), and writing
  the files of attachments over ``blobs.INLINE_MAX``, in a thread (fsyncs),
  per batch in a task of its own (smaller ones go in with their rows);
* tracking: the worker, batch after batch.

Batches start small and grow (:data:`FIRST_COUNT` doubling up to
:data:`MAX_COUNT`), so that a scan's first messages are tracked without
waiting for a full batch.  What is held is bounded by bytes too, from
``limits.backfill_memory`` (the budget): each batch is at most a quarter of
it (or a single larger message), and the batches read and not yet tracked
(the one tracked, those ready, the one being read) at most half of it; a
batch that does not fit waits until the worker is done with the one before,
so a message over that is read only when nothing else is held.

Nothing here decides a message's fate.  A message over the size limit is
never read: it gets :class:`MessageTooLarge` (the worker shunts it by
streaming it).  A batch that fails to read for any reason but a lost
connection is marked "read one by one", as before read-ahead, so that one
bad message cannot hold up the others.  Parsing and writing ahead are best
effort: what they did not do, the worker and the tracker do themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from mailfiler.errors import MailboxUnavailable, MessageTooLarge
from mailfiler.sources.base import Source
from mailfiler.store.blobs import BlobStore, inline
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.parsepool import ParsePool

log = logging.getLogger("mailfiler.worker")

#: the first batch's size in messages; each next batch doubles, up to MAX_COUNT
FIRST_COUNT = 50
#: at most this many messages per batch (IMAP: UIDs per UID FETCH, see imapproto.FETCH_BATCH)
MAX_COUNT = 400
#: the default of limits.backfill_memory: what a backfill holds of its mail at once
DEFAULT_BUDGET = 64 * 1024 * 1024
#: batches read and ready ahead of the one the worker tracks (2 measured no faster)
DEPTH = 1
#: get(): the message must be read alone (its batch failed)
NOT_READ = object()


def too_large(size: int, limit: int) -> MessageTooLarge:
    return MessageTooLarge(f"message is {size} bytes; limits.max_message_bytes is {limit}", size=size)


def chunk_sizes(n: int) -> list[int]:
    """How ``n`` messages are cut into batches (before the byte limit cuts further):
    FIRST_COUNT, doubling up to MAX_COUNT."""
    sizes, count = [], FIRST_COUNT
    while n > 0:
        sizes.append(min(count, n))
        n -= sizes[-1]
        count = min(count * 2, MAX_COUNT)
    return sizes


def batch_bytes(budget: int) -> int:
    """At most this many bytes of mail in one batch (read-ahead, parse, commit)."""
    return max(1, budget // 4)


@dataclass
class _Batch:
    run: list[str]
    #: source id -> the bytes or the error reading it raised (absent: gone); None: read one by one
    read: dict[str, bytes | Exception] | None
    #: its messages' sizes, as counted against the budget
    nbytes: int = 0
    #: parsing and writing ahead: source id -> parsed message
    prepared: asyncio.Task[dict[str, ParsedMessage]] | None = None
    parsed: dict[str, ParsedMessage] = field(default_factory=dict)


class ReadAhead:
    def __init__(
        self,
        source: Source,
        folder: str,
        todo: list[str],
        hints: dict[str, str | None],
        limit: int,
        *,
        parser: ParsePool | None = None,
        blobs: BlobStore | None = None,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        self.source, self.folder, self.hints, self.limit = source, folder, hints, limit
        self.parser, self.blobs = parser, blobs
        self.max_batch = batch_bytes(budget)
        #: the batches read and not yet tracked hold at most this much (or one message)
        self.max_held = max(1, budget // 2)
        self._held = 0
        self._released = asyncio.Event()
        self._todo = todo
        #: batches read (or the error that ended reading; None: the end)
        self._queue: asyncio.Queue[_Batch | BaseException | None] = asyncio.Queue(maxsize=DEPTH)
        self._producer: asyncio.Task[None] | None = None
        self._current: _Batch = _Batch([], {})
        self._covered: set[str] = set()
        self._ended = False

    # -- the producer ---------------------------------------------------------------

    async def _runs(self) -> AsyncIterator[tuple[list[str], dict[str, Exception], int]]:
        """Runs of the todo list to read in one call, each with what is known
        without reading (too large, or the error asking its size raised) and
        the bytes it reads."""
        start = 0
        for count in chunk_sizes(len(self._todo)):
            chunk = self._todo[start : start + count]
            start += count
            sizes = await self.source.sizes_of(self.folder, {sid: self.hints[sid] for sid in chunk})
            run: list[str] = []
            known: dict[str, Exception] = {}
            nbytes = 0
            for sid in chunk:
                size = sizes.get(sid)
                if isinstance(size, int) and size <= self.limit:
                    if run and nbytes + size > self.max_batch:
                        yield run, known, nbytes
                        run, known, nbytes = [], {}, 0
                    nbytes += size
                elif isinstance(size, int):
                    known[sid] = too_large(size, self.limit)
                elif size is not None:
                    known[sid] = size
                run.append(sid)  # absent from sizes: gone, unless the batch finds it
            if run:
                yield run, known, nbytes

    async def _room_for(self, nbytes: int) -> None:
        """Wait until a batch of ``nbytes`` fits in what may be held (one that
        never fits is read when nothing else is held)."""
        while self._held and self._held + nbytes > self.max_held:
            self._released.clear()
            await self._released.wait()
        self._held += nbytes

    def hold(self, nbytes: int) -> None:
        """Count ``nbytes`` against what may be held, until :meth:`unhold` (the
        consumer's commit on the store's writer thread holds the whole budget:
        no new batch is read meanwhile, as when a commit blocked the event loop)."""
        self._held += nbytes

    def unhold(self, nbytes: int) -> None:
        self._held -= nbytes
        self._released.set()

    def _release(self, batch: _Batch) -> None:
        self._held -= batch.nbytes
        batch.nbytes = 0
        self._released.set()

    async def _produce(self) -> None:
        try:
            async for run, known, nbytes in self._runs():
                await self._room_for(nbytes)
                want = {sid: self.hints[sid] for sid in run if sid not in known}
                try:
                    got = await self.source.fetch_batch(self.folder, want) if want else {}
                except MailboxUnavailable:
                    raise
                except Exception:
                    log.debug("reading a batch of %d failed; reading them one by one", len(want), exc_info=True)
                    await self._queue.put(_Batch(run, None, nbytes))
                    continue
                batch = _Batch(run, {**got, **known}, nbytes)
                if self.parser is not None:
                    batch.prepared = asyncio.create_task(self._prepare(got))
                await self._queue.put(batch)
                # this frame must not keep the batch while it waits for room for the next
                del got, batch
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the worker, who meets it in get()
            await self._queue.put(exc)
            return
        await self._queue.put(None)

    async def _prepare(self, got: dict[str, bytes | Exception]) -> dict[str, ParsedMessage]:
        """Parse the batch in the helpers and write its large attachments (best effort)."""
        assert self.parser is not None
        raws = [(sid, value) for sid, value in got.items() if isinstance(value, bytes)]
        sids = [sid for sid, _ in raws]
        results = await self.parser.parse_many([value for _, value in raws])
        parsed = {sid: msg for sid, msg in zip(sids, results, strict=True) if msg is not None}
        if self.blobs is not None and any(not inline(a.data) for msg in parsed.values() for a in msg.attachments):
            try:
                await asyncio.to_thread(_put_blobs, self.blobs, list(parsed.values()))
            except OSError:  # disk full...: the tracker meets it again, for its message alone
                log.debug("writing a batch's attachments ahead failed", exc_info=True)
        return parsed

    # -- the worker's side ------------------------------------------------------------

    async def get(self, source_id: str) -> bytes | Exception | object | None:
        """What was read for ``source_id`` (the next in the todo list): the bytes
        or the error, None when it is gone, NOT_READ when it must be read alone."""
        if source_id not in self._covered:
            if self._ended:
                return NOT_READ  # not planned: never happens when asked in order
            if self._producer is None:
                self._producer = asyncio.create_task(self._produce())
            self._release(self._current)  # the worker is done with it
            item = await self._queue.get()
            if item is None or isinstance(item, BaseException):
                self._ended = True
                if isinstance(item, BaseException):
                    raise item
                return NOT_READ
            if item.prepared is not None:
                try:
                    item.parsed = await item.prepared
                except Exception:
                    log.debug("preparing a batch ahead failed", exc_info=True)
            self._current = item
            self._covered = set(item.run)
        if self._current.read is None:
            return NOT_READ
        return self._current.read.pop(source_id, None)

    def parsed(self, source_id: str) -> ParsedMessage | None:
        """The helpers' parse of ``source_id`` (call after :meth:`get`), if any."""
        return self._current.parsed.pop(source_id, None)

    async def aclose(self) -> None:
        """Stop reading ahead (a scan that stops early, or failed)."""
        tasks: list[asyncio.Task] = []
        if self._producer is not None:
            tasks.append(self._producer)
            self._producer = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, _Batch) and item.prepared is not None:
                tasks.append(item.prepared)
        for task in tasks:
            task.cancel()  # a no-op when it is done
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                # its own cancellation ends here; the caller's must not be swallowed
                me = asyncio.current_task()
                if me is not None and me.cancelling():
                    raise
            except Exception:  # noqa: BLE001 - a batch nobody will use: its error does not matter
                pass
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self._queue.get_nowait()


def _put_blobs(blobs: BlobStore, msgs: list[ParsedMessage]) -> None:
    """The files of the batch's large attachments (small ones go in with their
    rows); their bytes are then dropped from the parsed messages."""
    for msg in msgs:
        for part in msg.attachments:
            if not inline(part.data):
                blobs.put_part(part)


def put_large_attachments(blobs: BlobStore, msg: ParsedMessage) -> None:
    """:func:`_put_blobs` for one message (a scan's commit batch, before it waits)."""
    _put_blobs(blobs, [msg])


__all__ = [
    "DEFAULT_BUDGET",
    "NOT_READ",
    "ReadAhead",
    "batch_bytes",
    "chunk_sizes",
    "put_large_attachments",
    "too_large",
]
