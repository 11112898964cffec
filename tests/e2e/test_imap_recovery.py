"""Reconnects after repeated restarts of a real Dovecot (issue 15).

The supervisor's backoff used to be set once per mailbox and never reset: across six
outages with healthy hours between them the waits were 1, 2, 4, 8, 16 and 32 s, and mail
after the fourth restart was tracked after 39 s instead of about 2.  Under the retry policy
(util/retrypolicy.py) a connection that has been up for ``retry.healthy_after`` seconds
starts the next outage from ``retry.initial`` again: each recovery is as fast as the first.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import E2EEnv
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.e2e.test_imap_faults import create_folders, crlf, imap_world, start
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot

pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(180)]

CONTOSO = "Tracked/Contoso"
FOLDERS: list[tuple[str, str | None]] = [(CONTOSO, "account:contoso")]
#: seconds a connection must be up before the next outage starts the backoff afresh
HEALTHY = 2.0
OUTAGES = 5


@pytest.fixture(scope="module")
def server() -> Iterator[DovecotServer]:
    """This module's own Dovecot: the test kills and restarts it."""
    yield from start_dovecot(tls=False)


@pytest.fixture
def user(server: DovecotServer) -> Iterator[ImapUser]:
    user = server.add_user()
    try:
        yield user
    finally:
        if server.process is None or server.process.poll() is not None:
            server.start()
        server.remove_user_mail(user.name)


def test_each_recovery_is_as_fast_as_the_first(server: DovecotServer, user: ImapUser, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    imap_world(env, user, folders=FOLDERS)
    env.mailboxes["alice"].extra["retry"] = {"initial": 1, "max": 60, "healthy_after": HEALTHY}
    env.write_config()
    create_folders(user, FOLDERS)
    daemon = start(env)
    # pushed mail tracked: the listeners are up before the first outage
    with user.client() as admin:
        admin.append(CONTOSO, crlf(mail(0)))
    env.wait_activity(mid(0))
    recoveries: list[float] = []
    for n in range(1, OUTAGES + 1):
        since = daemon.mark()
        server.kill()  # every connection drops at once
        daemon.wait_event("mailbox-error", since=since, timeout=15)
        server.start()
        restarted = time.monotonic()
        with user.client() as admin:
            admin.append(CONTOSO, crlf(mail(n)))
        env.wait_activity(mid(n), timeout=60)
        recoveries.append(time.monotonic() - restarted)
        time.sleep(HEALTHY + 0.5)  # healthy for a while before the next outage
    first = recoveries[0]
    print("recoveries (s):", [round(r, 1) for r in recoveries])
    # before: the waits doubled across outages (1, 2, 4, 8, 16 s): the fifth took over 16 s
    assert max(recoveries) < 2 * max(first, 2.0) + 1.0, [round(r, 1) for r in recoveries]
    errors = daemon.events("mailbox-error", since=0)
    assert len(errors) <= 2 * OUTAGES, [e.data["msg"] for e in errors]
