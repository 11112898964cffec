"""Tests for mailfiler.service.notify against a real AF_UNIX datagram socket."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator

import pytest

from mailfiler.service.notify import (
    LoopLagMonitor,
    Notifier,
    watchdog_interval,
    watchdog_loop,
)


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path

    def recv(self, timeout: float = 1.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode("utf-8")

    def drain(self) -> list[str]:
        """Every datagram queued right now, without waiting."""
        self.sock.setblocking(False)
        out: list[str] = []
        while True:
            try:
                out.append(self.sock.recv(4096).decode("utf-8"))
            except BlockingIOError:
                return out


@pytest.fixture
def fake_systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    # sun_path is limited to 108 bytes, and pytest's tmp_path can be longer
    # than that, so use a short directory directly under /tmp.
    directory = tempfile.mkdtemp(prefix="mfn-", dir="/tmp")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        yield FakeSystemd(sock, path)
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def notifier(fake_systemd: FakeSystemd) -> Iterator[Notifier]:
    # Depends on fake_systemd so NOTIFY_SOCKET is set before Notifier reads it.
    n = Notifier()
    try:
        yield n
    finally:
        n.close()


# --- Notifier ---------------------------------------------------------------


def test_messages_reach_socket(fake_systemd: FakeSystemd, notifier: Notifier) -> None:
    assert notifier.enabled
    notifier.ready()
    notifier.status("filing INBOX (3 new)")
    notifier.watchdog()
    notifier.stopping()
    assert fake_systemd.recv() == "READY=1"
    assert fake_systemd.recv() == "STATUS=filing INBOX (3 new)"
    assert fake_systemd.recv() == "WATCHDOG=1"
    assert fake_systemd.recv() == "STOPPING=1"
    assert fake_systemd.drain() == []


def test_status_cannot_inject_assignments(fake_systemd: FakeSystemd, notifier: Notifier) -> None:
    notifier.status("line one\nREADY=1")
    assert fake_systemd.recv() == "STATUS=line one READY=1"


def test_status_is_sent_as_utf8(fake_systemd: FakeSystemd, notifier: Notifier) -> None:
    # sdnotify itself encodes latin-1, which cannot encode this at all.
    notifier.status("Входящие → CRM")
    assert fake_systemd.recv() == "STATUS=Входящие → CRM"


def test_reloading_then_ready(fake_systemd: FakeSystemd, notifier: Notifier) -> None:
    notifier.reloading()
    first, usec = fake_systemd.recv().split("\n")
    assert first == "RELOADING=1"
    assert usec.startswith("MONOTONIC_USEC=") and int(usec.partition("=")[2]) > 0
    notifier.ready()
    assert fake_systemd.recv() == "READY=1"


def test_reload_context_sends_ready_even_on_error(fake_systemd: FakeSystemd, notifier: Notifier) -> None:
    with pytest.raises(ValueError), notifier.reload():
        raise ValueError("bad config")
    assert fake_systemd.recv().startswith("RELOADING=1\n")
    assert fake_systemd.recv() == "READY=1"


def test_noop_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready()
    notifier.status("x")
    notifier.reloading()
    notifier.watchdog()
    notifier.stopping()
    assert notifier._systemd is None  # never even opened a socket


def test_missing_socket_does_not_raise(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/tmp/mailfiler-test-no-such-dir/notify")
    caplog.set_level(logging.DEBUG, logger="mailfiler.service.notify")
    notifier = Notifier()
    assert notifier.enabled
    notifier.ready()
    notifier.watchdog()
    notifier.close()
    assert "cannot connect to NOTIFY_SOCKET" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_receiver_gone_after_connect_does_not_raise(
    fake_systemd: FakeSystemd, notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailfiler.service.notify")
    notifier.ready()
    assert fake_systemd.recv() == "READY=1"
    fake_systemd.sock.close()
    notifier.watchdog()  # ECONNREFUSED on the connected socket
    notifier.watchdog()  # reconnect attempt: ENOENT/ECONNREFUSED
    assert "sd_notify 'WATCHDOG=1' failed" in caplog.text
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


def test_full_socket_queue_does_not_block(
    fake_systemd: FakeSystemd, notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    # systemd not reading: the send must fail fast rather than hang the loop.
    caplog.set_level(logging.DEBUG, logger="mailfiler.service.notify")
    started = time.monotonic()
    for _ in range(500):
        notifier.watchdog()
    assert time.monotonic() - started < 5
    assert "failed" in caplog.text


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"mailfiler-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = Notifier()
        notifier.ready()
        notifier.close()
        sock.settimeout(1.0)
        assert sock.recv(4096) == b"READY=1"


# --- watchdog_interval ------------------------------------------------------


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("120000000", None, 60.0),
        ("120000000", "self", 60.0),
        ("120000000", "other", None),
        ("0", None, None),
        ("-5", None, None),
        ("garbage", None, None),
        (None, None, None),
        (None, "self", None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    pid: str | None,
    expected: float | None,
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            if value == "self":
                value = str(os.getpid())
            elif value == "other":
                value = str(os.getpid() + 1)
            monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected


# --- watchdog_loop ----------------------------------------------------------


@pytest.mark.asyncio
async def test_watchdog_pings_only_while_healthy(
    fake_systemd: FakeSystemd, notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailfiler.service.notify")
    reason: str | None = None
    task = asyncio.create_task(watchdog_loop(notifier, lambda: reason, 0.02))
    try:
        await asyncio.sleep(0.2)
        healthy = fake_systemd.drain()
        assert len(healthy) >= 3
        assert set(healthy) == {"WATCHDOG=1"}

        # Every ping sent before this point is already queued (sending is
        # synchronous on this loop), so drain, then expect silence.
        reason = "store writer stuck for 300s"
        fake_systemd.drain()
        await asyncio.sleep(0.2)
        assert fake_systemd.drain() == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings
        assert all("store writer stuck for 300s" in r.getMessage() for r in warnings)

        reason = None
        await asyncio.sleep(0.2)
        assert "WATCHDOG=1" in fake_systemd.drain()
        assert "healthy again" in caplog.text
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_watchdog_raising_health_check_is_unhealthy(
    fake_systemd: FakeSystemd, notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    def health() -> str | None:
        raise RuntimeError("boom")

    task = asyncio.create_task(watchdog_loop(notifier, health, 0.02))
    try:
        await asyncio.sleep(0.1)
        assert fake_systemd.drain() == []
        assert "health check raised RuntimeError('boom')" in caplog.text
        assert not task.done()  # the loop keeps running
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- LoopLagMonitor ---------------------------------------------------------


@pytest.mark.asyncio
async def test_loop_lag_monitor_detects_blocked_loop() -> None:
    monitor = LoopLagMonitor(threshold=0.2, period=0.02)
    assert monitor.lag == 0.0
    monitor.start()
    try:
        await asyncio.sleep(0.1)
        assert monitor.lag < 0.2
        assert monitor.health() is None

        time.sleep(0.4)  # a blocking call wedges the event loop
        # Measured before the monitor task has had a chance to run again.
        assert monitor.lag >= 0.3
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert monitor.lag >= 0.3
        reason = monitor.health()
        assert reason is not None and "event loop lag" in reason

        await asyncio.sleep(0.1)  # recovered
        assert monitor.lag < 0.2
        assert monitor.health() is None
    finally:
        await monitor.stop()
    assert monitor.lag < 0.2


@pytest.mark.asyncio
async def test_loop_lag_monitor_feeds_watchdog(
    fake_systemd: FakeSystemd, notifier: Notifier, caplog: pytest.LogCaptureFixture
) -> None:
    monitor = LoopLagMonitor(threshold=0.2, period=0.02)
    monitor.start()
    task = asyncio.create_task(watchdog_loop(notifier, monitor.health, 0.2))
    try:
        await asyncio.sleep(0.05)
        assert fake_systemd.drain() == ["WATCHDOG=1"]  # first tick is immediate
        # Block past the next tick: that tick runs late, right after the
        # block, sees the lag (whichever task resumes first) and withholds
        # its ping.
        time.sleep(0.4)
        await asyncio.sleep(0.1)
        assert fake_systemd.drain() == []
        assert "event loop lag" in caplog.text
        await asyncio.sleep(0.25)  # the following tick sees a healthy loop
        assert "WATCHDOG=1" in fake_systemd.drain()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await monitor.stop()


@pytest.mark.asyncio
async def test_loop_lag_monitor_start_is_idempotent() -> None:
    monitor = LoopLagMonitor(threshold=1.0)
    assert monitor.start() is monitor.start()
    await monitor.stop()
    await monitor.stop()  # stopping twice is harmless
