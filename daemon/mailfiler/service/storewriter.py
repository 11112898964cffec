"""The home of tracking's writes: one thread per store that runs them, so
that a commit never blocks the event loop (pushes, IMAP reads and keepalives,
signals and the watchdog go on while a backfill batch commits).

The store is synchronous (peewee).  Writes queue by priority: a pushed
message's write goes before any backfill batch waiting, so its latency is at
most the one batch being committed, whatever the backfill has queued.  One
thread, so the writes of one store never contend with each other for
SQLite's write lock; each mailbox still awaits its own writes in order.

The thread opens its own connection (peewee keeps one per thread) and
closes it, and ends, after a second without work: nothing is left behind
by a store that is no longer used (tests make many).
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import peewee as pw

T = TypeVar("T")

#: priorities: lower runs first
PUSH = 0
BACKFILL = 1
#: the thread ends after this long without work (seconds)
IDLE_S = 1.0

_Job = tuple[int, int, Callable[[], Any] | None, "asyncio.Future[Any] | None", "asyncio.AbstractEventLoop | None"]


class StoreWriter:
    """Runs callables on the store's writer thread, by priority."""

    def __init__(self, db: pw.Database) -> None:
        self.db = db
        self._jobs: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._order = itertools.count()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    async def run(self, priority: int, fn: Callable[[], T]) -> T:
        """``fn()`` on the writer thread; its result or its exception."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._jobs.put((priority, next(self._order), fn, done, loop))
        self._ensure_thread()
        return await done

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="mailfiler-store-writer", daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        try:
            while True:
                try:
                    _, _, fn, done, loop = self._jobs.get(timeout=IDLE_S)
                except queue.Empty:
                    with self._lock:
                        if self._jobs.empty():
                            self._thread = None
                            return
                    continue
                assert fn is not None and done is not None and loop is not None
                try:
                    result: Any = fn()
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                    _settle(loop, done, exc=exc)
                else:
                    _settle(loop, done, result=result)
        finally:
            self.db.close()  # this thread's connection


def _settle(loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any], *, result: Any = None, exc: Any = None) -> None:
    def settle() -> None:
        if done.cancelled():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


_writers: dict[int, tuple[pw.Database, StoreWriter]] = {}
_writers_lock = threading.Lock()


def writer_for(db: pw.Database) -> StoreWriter:
    """The store's writer (one per database object)."""
    with _writers_lock:
        found = _writers.get(id(db))
        if found is None or found[0] is not db:
            if len(_writers) > 64:  # stores no longer used (tests): their threads have ended
                _writers.clear()
            found = _writers[id(db)] = (db, StoreWriter(db))
        return found[1]
