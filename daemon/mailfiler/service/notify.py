"""systemd service notification (sd_notify) and watchdog support.

The daemon runs as a ``Type=notify`` unit with ``WatchdogSec=``. It tells
systemd when it is ready, what it is doing, and that it is still alive. The
watchdog ping is sent only while a health check passes, so a wedged daemon
stops pinging and systemd restarts it.

Everything here does nothing when the daemon is not started by systemd
(``NOTIFY_SOCKET`` unset), so the same code runs in a terminal or in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator

import sdnotify

log = logging.getLogger(__name__)


class _SystemdSocket(sdnotify.SystemdNotifier):
    """``sdnotify.SystemdNotifier`` with a safer connect; ``notify()`` is sdnotify's.

    sdnotify's own constructor drops the socket unclosed when connect fails
    (a ResourceWarning, an error under ``-W error``) and leaves it blocking.
    """

    def __init__(self, address: str) -> None:
        # debug=True makes sdnotify's notify() raise instead of swallowing
        # every error silently, so Notifier can at least log failures.
        self.debug = True
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # Never block the event loop if systemd is not draining the
            # socket: a full queue fails fast (and is logged) instead.
            sock.setblocking(False)
            # "@name" is a Linux abstract-namespace socket.
            sock.connect("\0" + address[1:] if address.startswith("@") else address)
        except OSError:
            sock.close()
            raise
        self.socket = sock


class Notifier:
    """Send sd_notify(3) messages to systemd via the ``sdnotify`` package.

    A no-op when ``NOTIFY_SOCKET`` is unset. Sending never raises: losing a
    status message must not take the daemon down (at worst systemd times
    out or restarts us, which is what it would do anyway).
    """

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET") or None
        self._systemd: _SystemdSocket | None = None

    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notification socket."""
        return self._address is not None

    def ready(self) -> None:
        """Startup (or a reload) is finished; the daemon is serving."""
        self._send("READY=1")

    def status(self, text: str) -> None:
        """Free-form status line shown by ``systemctl status``."""
        # The protocol is newline-separated KEY=VALUE pairs: a newline in the
        # text would end STATUS= and could inject another assignment.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        """Shutdown has begun."""
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """A configuration reload has begun; call :meth:`ready` when it ends.

        ``ready()`` must follow whether or not the new configuration was
        accepted (a rejected one leaves the old one in force), otherwise
        systemd keeps the unit in the "reloading" state until it times out.
        :meth:`reload` does both.
        """
        # MONOTONIC_USEC lets systemd >= 253 tell this reload apart from an
        # earlier one; older versions ignore the extra field.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    @contextlib.contextmanager
    def reload(self) -> Iterator[None]:
        """``with notifier.reload(): ...`` sends RELOADING=1, then READY=1."""
        self.reloading()
        try:
            yield
        finally:
            self.ready()

    def watchdog(self) -> None:
        """Keep-alive ping; see :func:`watchdog_loop`."""
        self._send("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; a later message reopens it."""
        if self._systemd is not None and self._systemd.socket is not None:
            self._systemd.socket.close()
        self._systemd = None

    def _connect(self, address: str) -> _SystemdSocket | None:
        if self._systemd is None:
            try:
                self._systemd = _SystemdSocket(address)
            except OSError as exc:
                # Stay disconnected and retry on the next message.
                log.debug("cannot connect to NOTIFY_SOCKET %s: %s", address, exc)
        return self._systemd

    def _send(self, state: str) -> None:
        if self._address is None:
            return
        notifier = self._connect(self._address)
        if notifier is None:
            return
        # sdnotify encodes with latin-1, but systemd reads UTF-8 (and
        # latin-1 cannot encode e.g. a Cyrillic folder name in STATUS=):
        # hand it a str whose latin-1 encoding is the UTF-8 bytes.
        wire = state.encode("utf-8", errors="replace").decode("latin-1")
        try:
            notifier.notify(wire)
        except OSError as exc:
            log.debug("sd_notify %r failed: %s", state.partition("\n")[0], exc)
            # The receiver may have gone away; reconnect next time.
            self.close()


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings, or None when the watchdog is off.

    systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) when the unit has
    ``WatchdogSec=``. Pinging at half the timeout, as sd_watchdog_enabled(3)
    recommends, tolerates one late ping.
    """
    pid = os.environ.get("WATCHDOG_PID")
    # A child process may inherit the variables; only the named PID pings.
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


async def watchdog_loop(
    notifier: Notifier,
    health: Callable[[], str | None],
    interval: float,
) -> None:
    """Ping the watchdog every ``interval`` seconds while ``health()`` passes.

    ``health()`` returns None when healthy, or a reason string. When it
    reports a problem (or raises) no ping is sent, so if the problem lasts
    for ``WatchdogSec=`` systemd kills and restarts the daemon. If the event
    loop itself is blocked this coroutine never runs and pings stop too.
    Runs until cancelled.
    """
    was_healthy = True
    while True:
        exc_info = False
        try:
            reason = health()
        except Exception as exc:  # noqa: BLE001 - a broken health check counts as unhealthy
            reason = f"health check raised {exc!r}"
            exc_info = True
        if reason is None:
            notifier.watchdog()
            if not was_healthy:
                log.info("watchdog: healthy again, pinging resumed")
            was_healthy = True
        else:
            log.warning("watchdog: unhealthy, not pinging systemd: %s", reason, exc_info=exc_info)
            was_healthy = False
        await asyncio.sleep(interval)


class LoopLagMonitor:
    """Measure event-loop lag: how late a periodic sleep wakes up.

    A blocking call in a coroutine (slow disk, a sync DB call, a CPU-heavy
    parse) delays every other task; large lag means the daemon is wedged
    even though the process is alive. :meth:`health` turns that into a
    watchdog verdict.
    """

    def __init__(self, threshold: float, period: float = 0.5) -> None:
        self.threshold = threshold
        self.period = period
        self._last_lag = 0.0
        self._due: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def lag(self) -> float:
        """Seconds the latest wake-up was late (0.0 before the first one).

        Also counts a wake-up that is overdue right now, so a reading taken
        straight after a long block does not depend on which task the loop
        happens to resume first.
        """
        if self._due is None or self._loop is None:
            return self._last_lag
        overdue = self._loop.time() - self._due
        return max(self._last_lag, overdue)

    def health(self) -> str | None:
        """None if lag is within the threshold, else a reason string."""
        lag = self.lag
        if lag > self.threshold:
            return f"event loop lag {lag:.2f}s exceeds {self.threshold:.2f}s"
        return None

    def start(self) -> asyncio.Task[None]:
        """Start the sampling task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name="loop-lag-monitor")
        return self._task

    async def stop(self) -> None:
        """Cancel the sampling task and wait for it to finish."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._due = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        # loop.time() is the clock asyncio.sleep() schedules against.
        while True:
            self._due = loop.time() + self.period
            await asyncio.sleep(self.period)
            self._last_lag = max(0.0, loop.time() - self._due)
