"""The daemon on an Exchange mailbox through EWS (the fake Exchange of tests/servers/ews,
not a real Exchange): configured with `ews:` under impersonation, it tracks mail that
Outlook delivers or drags into a tracked folder within about a second, re-links a
moved message, keeps tracking a folder renamed in Outlook, shows tracking with an
Outlook category and never marks mail read; it survives a rejected sync state, a
server restart while streaming, throttling, a wrong password and a wrong CA."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import E2EEnv, locations, wait_for
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.servers.ews import EwsServer
from tests.servers.tls import make_tls

ALICE = "alice@example.com"
KUNDER = "INBOX/Kunder/Åkesson AB"
CONTOSO = "INBOX/Clients/Contoso"
#: push: the fake notifies at once; the daemon catches up and commits
PUSH = 10.0


def fake(folder: str) -> str:
    return "Inbox" + folder[len("INBOX") :] if folder.startswith("INBOX") else folder


@pytest.fixture
def exchange() -> Iterator[EwsServer]:
    users = [
        {"smtp": ALICE, "password": "pw-alice", "folders": [fake(KUNDER), fake(CONTOSO)]},
        {"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": [ALICE]},
    ]
    with EwsServer(users) as server:
        server.hub.heartbeat = 1.0
        yield server


def ews_world(
    env: E2EEnv, server: EwsServer, *, password: str = "pw-svc", create_missing: bool = True, **ews: Any
) -> None:
    secret = env.root / "ews.password"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    config = {
        "url": server.ews_url,
        "username": "svc",
        "password_file": str(secret),
        "auth": "ntlm",
        "impersonate": ALICE,
        "version": "2016",
        "timeout": 10,
        "categories": True,
        **ews,
    }
    folders: list[tuple[str, str | None]] = [(KUNDER, "account:akesson"), (CONTOSO, "account:contoso")]
    spec = env.add_mailbox("alice", ALICE, folders, create_missing_folders=create_missing)
    spec.extra = {"ews": config}
    env.write_config()


def test_tracks_deliveries_moves_renames_and_sets_categories(exchange: EwsServer, env: E2EEnv) -> None:
    ews_world(env, exchange)
    daemon = env.start_daemon()
    daemon.wait_event("watching")

    started = time.monotonic()
    item = exchange.deliver(ALICE, mail(1, frm="<sven@akesson.se>", subject="Offert"), fake(KUNDER))
    act = env.wait_activity(mid(1), lambda a: a["regarding"] == "account:akesson", timeout=PUSH)
    assert time.monotonic() - started < 3.0  # about a second on an idle machine
    assert locations(act) == [("alice", KUNDER)]
    wait_for(lambda: exchange.item(item).categories == ["Tracked in CRM"], timeout=PUSH, what="the category")
    assert not exchange.item(item).is_read  # reading never marks mail read

    # dragged to another tracked folder in Outlook: a new item id, one activity, re-linked
    exchange.move_item(item, fake(CONTOSO))
    act = env.wait_activity(mid(1), lambda a: locations(a) == [("alice", CONTOSO)], timeout=PUSH)
    assert act["regarding"] == "account:contoso"

    # the folder renamed in Outlook: still tracked (by its id), new mail too
    exchange.rename_folder(ALICE, fake(CONTOSO), "Contoso Ltd")
    exchange.deliver(ALICE, mail(2, subject="After the rename"), "Inbox/Clients/Contoso Ltd")
    act = env.wait_activity(mid(2), timeout=PUSH)
    assert act["regarding"] == "account:contoso"
    assert len(env.activities()) == 2

    status = env.status()
    mb = next(m for m in status["mailboxes"] if m["name"] == "alice")
    assert mb["backend"] == "ews" and mb["location"].startswith("ews://alice@example.com@")
    assert "pw-svc" not in Path(env.config_path).read_text() + json.dumps(status) + daemon.log_tail(400)


def test_rejected_sync_state_and_a_restart_while_streaming(exchange: EwsServer, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    for n in range(5):
        exchange.deliver(ALICE, mail(10 + n, frm="<sven@akesson.se>"), fake(KUNDER))
    ews_world(env, exchange)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    env.wait_activities(lambda a: len(a) == 5, timeout=PUSH)

    # every sync state handed out is refused: a full listing diffed against the store
    exchange.invalidate_sync_states(ALICE)
    exchange.deliver(ALICE, mail(20, frm="<sven@akesson.se>"), fake(KUNDER))
    env.wait_activity(mid(20), timeout=PUSH)

    # the server restarts while the daemon streams; mail that lands meanwhile is caught up
    exchange.restart(down_for=1.0)
    exchange.deliver(ALICE, mail(21, frm="<sven@akesson.se>"), fake(KUNDER))
    env.wait_activity(mid(21), timeout=30)
    exchange.drop_streams()
    exchange.deliver(ALICE, mail(22, frm="<sven@akesson.se>"), fake(KUNDER))
    env.wait_activity(mid(22), timeout=30)
    ids = sorted(a["message_id"] for a in env.activities())
    assert ids == sorted([mid(n) for n in (10, 11, 12, 13, 14, 20, 21, 22)])  # none twice, none lost


def test_throttling_for_a_while_loses_nothing_and_does_not_hammer(exchange: EwsServer, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    ews_world(env, exchange)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    before = len(exchange.requests)
    exchange.throttle_for(8.0, back_off_ms=2000)
    for n in range(3):
        exchange.deliver(ALICE, mail(30 + n, frm="<sven@akesson.se>"), fake(KUNDER))
    env.wait_activities(lambda a: len(a) == 3, timeout=40)
    # ~8 s of ErrorServerBusy asking for 2 s pauses: a handful of refused requests, not a storm
    assert exchange.faults.fired["*"] <= 20
    assert len(exchange.requests) - before < 200


def test_wrong_password_shows_in_status_and_backs_off(exchange: EwsServer, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    ews_world(env, exchange, password="not-the-password")
    daemon = env.start_daemon()
    wait_for(lambda: len(daemon.events("mailbox-error")) >= 2, timeout=30, what="two refused logins")
    errors = daemon.events("mailbox-error")
    assert errors[1].at - errors[0].at > 0.7  # backoff, no tight loop
    assert "not-the-password" not in daemon.log_tail(200)
    folder = env.folder_status(env.status(), "alice", KUNDER)
    assert folder["state"] == "error" and folder["error_code"] == "login-refused"
    assert "password_file" in folder["hint"]
    time.sleep(2.0)
    assert len(exchange.requests) < 40  # a few attempts in ~5 s, not a loop


def test_wrong_ca_is_refused(tmp_path: Path, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    (tmp_path / "tls").mkdir()
    tls = make_tls(tmp_path / "tls")
    users = [{"smtp": ALICE, "password": "pw-alice", "folders": [fake(KUNDER), fake(CONTOSO)]},
             {"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": [ALICE]}]  # fmt: skip
    with EwsServer(users, tls=tls) as server:
        ews_world(env, server, ca_file=str(tls.wrong_ca_file))
        daemon = env.start_daemon()
        wait_for(lambda: daemon.events("mailbox-error"), timeout=30, what="a refused certificate")
        folder = env.folder_status(env.status(), "alice", KUNDER)
        assert folder["error_code"] == "tls-untrusted"
        env.close()


def test_folders_list_and_create_over_ews(exchange: EwsServer, env: E2EEnv) -> None:
    exchange.delete_folder(ALICE, fake(CONTOSO))
    ews_world(env, exchange)
    listed = json.loads(env.cli("folders", "list", "--json").stdout)
    kinds = {r["folder"]: (r["kind"], r["exists"]) for r in listed}
    assert kinds[KUNDER] == ("tracked", True) and kinds[CONTOSO] == ("tracked", False)
    assert kinds["INBOX"][1] is True and kinds["Sent Items"][1] is True
    res = env.cli("folders", "create")
    assert res.returncode == 0 and f"alice: created {CONTOSO}" in res.stdout
    assert exchange.folder_id(ALICE, fake(CONTOSO))


def test_folder_moved_keeps_tracking_and_a_deleted_one_is_missing(exchange: EwsServer, env: E2EEnv) -> None:
    ews_world(env, exchange, create_missing=False)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    exchange.deliver(ALICE, mail(40, frm="<sven@akesson.se>"), fake(KUNDER))
    env.wait_activity(mid(40), timeout=PUSH)

    # moved within the Inbox in Outlook: still tracked by its id
    exchange.create_folder(ALICE, "Inbox/Archive")
    exchange.move_folder(ALICE, fake(CONTOSO), "Inbox/Archive")
    exchange.deliver(ALICE, mail(41), "Inbox/Archive/Contoso")
    assert env.wait_activity(mid(41), timeout=PUSH)["regarding"] == "account:contoso"

    # deleted in Outlook: shown as missing, its tracked mail kept, the rest goes on
    exchange.delete_folder(ALICE, fake(KUNDER))
    env.wait_status(lambda s: env.folder_status(s, "alice", KUNDER)["state"] == "missing", timeout=PUSH,
                    what="the deleted folder missing")  # fmt: skip
    assert env.activity(mid(40)) is not None
    exchange.deliver(ALICE, mail(42), "Inbox/Archive/Contoso")
    env.wait_activity(mid(42), timeout=PUSH)
    assert daemon.proc.poll() is None


@pytest.mark.slow
def test_throttling_for_a_minute_loses_nothing_and_does_not_hammer(exchange: EwsServer, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    ews_world(env, exchange)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    before = len(exchange.requests)
    exchange.throttle_for(60.0, back_off_ms=5000)
    started = time.monotonic()
    for n in range(5):
        exchange.deliver(ALICE, mail(50 + n, frm="<sven@akesson.se>"), fake(KUNDER))
        time.sleep(2.0)
    env.wait_activities(lambda a: len(a) == 5, timeout=150)
    assert time.monotonic() - started >= 55  # nothing got through while Exchange refused
    # a minute of ErrorServerBusy asking for 5 s pauses: about one refused request per
    # caller and pause, not a storm
    refused = exchange.faults.fired["*"]
    assert refused <= 60, refused
    assert len(exchange.requests) - before < 200
    assert daemon.proc.poll() is None
