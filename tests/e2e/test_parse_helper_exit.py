"""Parse helpers when the daemon dies under them (issue 15).

The real daemon backfills a few thousand messages from a real Dovecot with two parse
helper processes, and is killed in the middle of it the way the field kills it: SIGKILL
(the OOM killer) and SIGABRT (the systemd watchdog).  A helper whose parent is gone must
exit at once and quietly: none is left behind, and nothing is written into the daemon's
log after the kill (a helper writing its answer into the dead daemon's pipe once printed
a ``BrokenPipeError`` traceback there, a second and misleading failure).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemonproc import DaemonProc, ImapWorld, scalar, wait_until
from tests.mailgen import realistic_message
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot

pytestmark = [pytest.mark.slow, pytest.mark.dovecot, pytest.mark.timeout(240)]

FOLDER = "Tracked/Contoso"
N = 4000


@pytest.fixture(scope="module")
def server() -> Iterator[DovecotServer]:
    yield from start_dovecot(tls=False)


@pytest.fixture(scope="module")
def user(server: DovecotServer) -> ImapUser:
    user = server.add_user()
    user.seed(FOLDER, [realistic_message(i) for i in range(N)])
    return user


def helpers_of(pid: int) -> list[int]:
    """The parse helper processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and b"mailfiler.tracking.parsepool" in cmdline:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT], ids=["SIGKILL", "SIGABRT"])
def test_helpers_exit_quietly_when_the_daemon_dies_mid_backfill(
    user: ImapUser, tmp_path: Path, sig: signal.Signals
) -> None:
    world = ImapWorld(tmp_path, user, [(FOLDER, "account:contoso")], limits={"parse_processes": 2})
    with DaemonProc(world.config, tmp_path / "daemon.log") as daemon:
        daemon.start()

        def busy() -> list[int]:
            # helpers at work, and the backfill under way but far from done
            helpers = helpers_of(daemon.pid)
            done = scalar(world.db, "SELECT count(*) FROM activity", before_migration=True) or 0
            return helpers if len(helpers) == 2 and done >= 200 else []

        helpers = wait_until(busy, timeout=90, what="two parse helpers at work", state=daemon.log_tail)
        done = scalar(world.db, "SELECT count(*) FROM activity")
        assert done < N, "the backfill ended before the kill"
        log_size = daemon.log.stat().st_size
        os.kill(daemon.pid, sig)
        assert daemon.proc is not None
        daemon.proc.wait(timeout=30)
        killed_at = time.monotonic()
        # promptly: a helper notices within a second or so, even in the middle of a batch
        wait_until(lambda: not any(alive(p) for p in helpers), timeout=5, what="the helpers to exit")
        gone_after = time.monotonic() - killed_at
        time.sleep(0.5)  # anything a helper would print on its way out is written by now
        after = daemon.log.read_bytes()[log_size:].decode("utf-8", "replace")
    assert after == "", f"written into the log after the kill:\n{after[-3000:]}"
    assert gone_after < 5
