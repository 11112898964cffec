"""Parse a backfill's messages in helper processes while the worker tracks others.

Parsing is pure Python and holds the GIL, so a thread does not help; a
helper process does (on a machine with a core to spare).  The worker's
read-ahead hands each batch it fetched to :meth:`ParsePool.parse_many`, and
tracks the previous batch meanwhile.

The contract is deliberately weak, so that nothing about a message's fate
depends on the pool: a result is either the :class:`ParsedMessage` that
:func:`parse_message` gives in this process, or None, meaning "parse it
yourself".  A helper answers None for a message it could not parse (the
worker then meets the error itself, with the same code path and shunt reason
as without helpers), and the pool answers None for a whole batch when it is
off, the batch is small (a push: latency counts, not throughput), or a helper
failed (it is started again at the next batch).

A helper is ``python -m mailfiler.tracking.parsepool`` on pipes, not a
multiprocessing pool: it does not re-import the caller's ``__main__`` and
needs no shared-memory semaphores (systemd sandboxing).  Helpers are started on the first batch that needs them and
stopped after a minute without work, so an idle daemon holds no extra process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from typing import IO

from mailfiler.tracking.parse import ParsedMessage, parse_message

log = logging.getLogger("mailfiler.tracking")

#: a batch smaller than this is parsed by the worker itself (pushed mail)
MIN_BATCH = 16
#: helpers are stopped after this many seconds without a batch
IDLE_SECONDS = 60.0
#: messages larger than this are parsed by the worker (not copied twice between processes)
MAX_SHIPPED_BYTES = 1024 * 1024
#: a helper that takes longer than this for a batch is stopped (the worker parses the batch)
BATCH_TIMEOUT = 120.0
#: at most this many bytes of mail in the helpers at once (limits.backfill_memory sets it)
MAX_BYTES = 16 * 1024 * 1024
_FRAME = struct.Struct("!Q")


def auto_workers(cpus: int | None = None) -> int:
    """Helper processes for ``parse_processes: auto``: none on one core (they
    would only compete with the worker), else one per spare core, at most 3."""
    cpus = cpus or os.cpu_count() or 1
    return max(0, min(3, cpus - 1))


def parse_workers(setting: int | str) -> int:
    """The number of helpers for the config's ``limits.parse_processes``."""
    return auto_workers() if setting == "auto" else int(setting)


def parse_chunk(raws: list[bytes]) -> list[ParsedMessage | None]:
    """Each message parsed; None for one that raised (the worker parses it again and meets the error)."""
    out: list[ParsedMessage | None] = []
    for raw in raws:
        try:
            out.append(parse_message(raw))
        except (Exception, RecursionError):  # noqa: BLE001 - any failure is the worker's to report
            out.append(None)
    return out


class HelperFailed(Exception):
    """A helper process died, hung or answered nonsense."""


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"the helper closed its output ({len(data)} of {size} bytes)")
    return data


class _Helper:
    """One helper process, talked to from a thread (blocking pipes: no event loop
    owns them, so a pool outlives the loop that started it); one batch at a time."""

    def __init__(self) -> None:
        # its stderr is the daemon's (the journal): a helper's traceback is seen
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailfiler.tracking.parsepool"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.lock = threading.Lock()

    def _exchange(self, raws: list[bytes]) -> list[ParsedMessage | None]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            payload = pickle.dumps(raws, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.write(_FRAME.pack(len(payload)))
            self.proc.stdin.write(payload)  # not joined to its header: that would copy the batch
            del payload
            self.proc.stdin.flush()
            (size,) = _FRAME.unpack(_read_exactly(self.proc.stdout, _FRAME.size))
            answer = _read_exactly(self.proc.stdout, size)
        # the helper is our own child running our own code: its pickles are trusted
        return pickle.loads(answer)

    async def parse(self, raws: list[bytes]) -> list[ParsedMessage | None]:
        try:
            results = await asyncio.wait_for(asyncio.to_thread(self._exchange, raws), BATCH_TIMEOUT)
        except TimeoutError as exc:
            self.kill()  # its thread, blocked on the pipe, then sees EOF and ends
            raise HelperFailed(f"no answer within {BATCH_TIMEOUT:g} s") from exc
        except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise HelperFailed(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(results, list) or len(results) != len(raws):
            raise HelperFailed("the answer does not match the batch")
        return results

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            self.proc.kill()

    def stop(self) -> None:
        """EOF on its input ends it; one that does not end is killed."""
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _stop_helpers(helpers: list[_Helper]) -> None:
    """At garbage collection or exit: no helper outlives its pool."""
    while helpers:
        helpers.pop().stop()


class ParsePool:
    def __init__(
        self,
        workers: int,
        *,
        min_batch: int = MIN_BATCH,
        idle_seconds: float = IDLE_SECONDS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.workers = max(0, workers)
        self.min_batch = min_batch
        self.idle_seconds = idle_seconds
        #: a batch is sent to the helpers in rounds of at most this many bytes
        self.max_bytes = max_bytes
        self._helpers: list[_Helper] = []
        weakref.finalize(self, _stop_helpers, self._helpers)
        self._idle: asyncio.TimerHandle | None = None
        self._busy = 0
        #: messages the helpers parsed, and helper failures (benches, tests)
        self.parsed = 0
        self.failures = 0

    @property
    def running(self) -> int:
        return len(self._helpers)

    async def parse_many(self, raws: Sequence[bytes | None]) -> list[ParsedMessage | None]:
        """One result per entry of ``raws`` (None in: None out)."""
        todo = [i for i, raw in enumerate(raws) if raw is not None and len(raw) <= MAX_SHIPPED_BYTES]
        results: list[ParsedMessage | None] = [None] * len(raws)
        if self.workers == 0 or len(todo) < self.min_batch:
            return results
        # in rounds of at most max_bytes: each is pickled, sent, parsed and sent back whole
        rounds: list[list[int]] = [[]]
        nbytes = 0
        for i in todo:
            size = len(raws[i] or b"")
            if rounds[-1] and nbytes + size > self.max_bytes:
                rounds.append([])
                nbytes = 0
            rounds[-1].append(i)
            nbytes += size
        for part in rounds:
            await self._parse_round(raws, part, results)
        self.parsed += sum(1 for r in results if r is not None)
        return results

    async def _parse_round(
        self, raws: Sequence[bytes | None], todo: list[int], results: list[ParsedMessage | None]
    ) -> None:
        self._busy += 1
        try:
            helpers = self._start()
            # one chunk per helper: few round trips, every helper busy
            n = min(len(helpers), len(todo))
            chunks = [todo[k::n] for k in range(n)]
            answers = await asyncio.gather(
                *(h.parse([raws[i] for i in chunk]) for h, chunk in zip(helpers, chunks, strict=False)),  # type: ignore[misc]
                return_exceptions=True,
            )
        finally:
            self._busy -= 1
            self._arm_idle()
        for helper, chunk, answer in zip(helpers, chunks, answers, strict=False):
            if isinstance(answer, BaseException):
                if not isinstance(answer, HelperFailed):
                    raise answer
                self.failures += 1
                log.warning(
                    "a parse helper process failed (%s); its messages are parsed in the daemon",
                    answer,
                    extra={"event": "parse-helper-failed"},
                )
                if helper in self._helpers:
                    self._helpers.remove(helper)
                await asyncio.to_thread(helper.stop)
                continue
            for i, parsed in zip(chunk, answer, strict=True):
                results[i] = parsed

    def _start(self) -> list[_Helper]:
        while len(self._helpers) < self.workers:
            try:
                helper = _Helper()
            except OSError as exc:
                log.warning(
                    "cannot start a parse helper process (%s); parsing in the daemon",
                    exc,
                    extra={"event": "parse-helper-failed"},
                )
                break
            self._helpers.append(helper)
            log.debug("started parse helper process %d", helper.proc.pid, extra={"event": "parse-helper-started"})
        return list(self._helpers)

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self.idle_seconds, lambda: loop.create_task(self._stop_if_idle()))

    async def _stop_if_idle(self) -> None:
        self._idle = None
        if self._busy == 0:
            await self.close()

    async def close(self) -> None:
        """Stop the helpers (at exit; a later batch starts them again)."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        helpers = list(self._helpers)
        self._helpers.clear()
        for helper in helpers:
            await asyncio.to_thread(helper.stop)
        if helpers:
            log.debug(
                "stopped %d parse helper process(es); they parsed %d message(s) so far",
                len(helpers),
                self.parsed,
                extra={"event": "parse-helpers-stopped", "parsed": self.parsed},
            )


#: a helper looks this often whether the daemon that started it is still there
ORPHAN_CHECK_SECONDS = 0.25


def _exit_when_orphaned(parent: int) -> None:
    """A helper's watch thread: when the daemon is gone (SIGKILL, the watchdog's
    SIGABRT, the OOM killer) the batch in hand has nobody to go to; end at once,
    without a word (a traceback would read as a second failure in the log)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(0)


def _serve() -> None:
    """The helper's loop: a frame of pickled messages in, a frame of results out, until EOF."""
    # Ctrl-C in a terminal reaches the whole process group: it is for the daemon, which stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        while True:
            head = stdin.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return
            (size,) = _FRAME.unpack(head)
            frame = stdin.read(size)
            if len(frame) < size:
                return  # the daemon died while sending it
            raws = pickle.loads(frame)
            del frame
            answer = pickle.dumps(parse_chunk(raws), protocol=pickle.HIGHEST_PROTOCOL)
            del raws
            stdout.write(_FRAME.pack(len(answer)))
            stdout.write(answer)
            stdout.flush()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon is gone or stopped reading: nothing to say to anyone
    # no flush of a dead pipe at interpreter exit (another BrokenPipeError, "ignored")
    os._exit(0)


__all__ = ["ParsePool", "auto_workers", "parse_chunk", "parse_workers"]

if __name__ == "__main__":
    _serve()
