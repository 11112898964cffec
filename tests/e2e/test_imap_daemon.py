"""The daemon on an IMAP mailbox (a real Dovecot): configured with `imap:`, it tracks
mail that lands by APPEND, follows moves, auto-tracks replies in the Inbox, shows a
wrong password in `status` while retrying with backoff, and catches up after the
server restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import E2EEnv, locations, wait_for
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.servers.dovecot import DovecotServer, ImapUser

# imap_user comes before env in each test's arguments: the daemon stops before
# the test user is removed, so it never sees its mailbox vanish
pytestmark = pytest.mark.dovecot

KUNDER = "Kunder/Åkesson AB"
#: a push is usually 0.5 s, but Dovecot's NOTIFY misses some changes until its
#: 30 s idle check; the watcher's STATUS sweep (every 10 s) bounds the delay
PUSH = 25.0


def imap_world(env: E2EEnv, user: ImapUser, *, password: str | None = None, tls: str = "none") -> None:
    secret = env.root / "imap.password"
    secret.write_text((password or user.password) + "\n", encoding="utf-8")
    secret.chmod(0o600)
    kw = user.settings_kwargs(tls)
    imap: dict[str, Any] = {
        "host": kw["host"],
        "port": kw["port"],
        "username": kw["username"],
        "password_file": str(secret),
        "tls": tls,
        "timeout": 10,
    }
    if kw["ca_file"]:
        imap["ca_file"] = kw["ca_file"]
    spec = env.add_mailbox(
        "alice", "alice@example.com", [(KUNDER, "account:akesson"), ("Tracked/Contoso", "account:contoso")]
    )
    spec.extra = {"imap": imap}
    env.write_config()


def test_tracks_appends_moves_and_inbox_replies_over_imap(imap_user: ImapUser, env: E2EEnv) -> None:
    imap_world(env, imap_user)
    with imap_user.client() as admin:
        admin.create(KUNDER)
        admin.create("Tracked/Contoso")
    daemon = env.start_daemon()
    daemon.wait_event("watching")

    with imap_user.client() as admin:
        admin.append(KUNDER, mail(1, frm="<sven@akesson.se>", subject="Offert"))
        act = env.wait_activity(mid(1), lambda a: a["regarding"] == "account:akesson", timeout=PUSH)
        assert locations(act) == [("alice", KUNDER)]

        # a client's UID MOVE: re-linked, one activity
        uid = admin.uids(KUNDER)[0]
        admin.move(KUNDER, uid, "Tracked/Contoso")
        act = env.wait_activity(mid(1), lambda a: locations(a) == [("alice", "Tracked/Contoso")], timeout=PUSH)
        assert act["regarding"] == "account:contoso"

        # a reply delivered to the Inbox is auto-tracked in its thread; other mail is not
        admin.append("INBOX", mail(2, frm="<sven@akesson.se>", subject="Re: Offert", reply_to=mid(1)))
        admin.append("INBOX", mail(3, frm="<carol@adatum.com>", subject="Lunch?"))
        act = env.wait_activity(mid(2), timeout=PUSH)
        assert (act["regarding"], act["correlation"]) == ("account:contoso", "in-reply-to")
        # reading never marks mail as read
        assert "\\Seen" not in repr(admin.snapshot())
    wait_for(lambda: _watched(env, "INBOX")["skipped"] == 1, timeout=PUSH, what="the unrelated Inbox message judged")
    assert env.activity(mid(3)) is None
    assert len(env.activities()) == 2
    status = env.status()
    mb = next(m for m in status["mailboxes"] if m["name"] == "alice")
    assert mb["backend"] == "imap" and mb["location"].startswith("imap://")
    assert imap_user.password not in Path(env.config_path).read_text() + str(status)


def test_server_restart_is_survived_and_caught_up(dovecot: DovecotServer, imap_user: ImapUser, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    imap_world(env, imap_user)
    with imap_user.client() as admin:
        admin.create(KUNDER)
        admin.create("Tracked/Contoso")
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    imap_user.save(KUNDER, mail(10, frm="<sven@akesson.se>"))
    env.wait_activity(mid(10), timeout=PUSH)

    since = daemon.mark()
    dovecot.stop()
    # mail that lands while the daemon cannot see the server
    try:
        daemon.wait_event("mailbox-error", since=since, timeout=30)
    finally:
        dovecot.start()
    imap_user.save(KUNDER, mail(11, frm="<sven@akesson.se>"))
    env.wait_activity(mid(11), timeout=60)
    daemon.wait_event("watching", since=since)
    assert sorted(a["message_id"] for a in env.activities()) == sorted([mid(10), mid(11)])


def test_wrong_password_shows_in_status_and_backs_off(imap_user: ImapUser, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    imap_world(env, imap_user, password="not-the-password")
    daemon = env.start_daemon()

    def failed_twice() -> bool:
        return len(daemon.events("mailbox-error")) >= 2

    wait_for(failed_twice, timeout=30, what="two failed logins")
    errors = daemon.events("mailbox-error")
    assert "login as" in errors[0].data["msg"] and "not-the-password" not in daemon.log_tail(200)
    # backoff, no tight loop: about 1 s, then about 2 s
    assert errors[1].at - errors[0].at > 0.7
    folder = env.folder_status(env.status(), "alice", KUNDER)
    assert folder["state"] == "error" and "login" in folder["last_error"]
    # its own class and hint (issue 16: the hint used to talk about a mailbox path)
    assert folder["error_code"] == "login-refused" and "password_file" in folder["hint"]
    text = env.cli("status").stdout
    assert "hint (alice): check the mailbox's username" in text and "path" not in text.split("hint (alice)")[1]
    res = env.cli("folders", "list", check=False)
    assert res.returncode == 69 and "login as" in res.stderr and "hint: check the mailbox's username" in res.stderr


def _watched(env: E2EEnv, folder: str) -> dict:
    mb = next(m for m in env.status()["mailboxes"] if m["name"] == "alice")
    return next((f for f in mb["watched"] if f["folder"] == folder), {"skipped": -1})


def test_folders_list_and_create_on_the_server(imap_user: ImapUser, env: E2EEnv) -> None:
    imap_world(env, imap_user)
    with imap_user.client() as admin:
        admin.create("Trash")
        admin.create("Archive/2026")
    listed = json.loads(env.cli("folders", "list", "--json").stdout)
    kinds = {r["folder"]: (r["kind"], r["exists"]) for r in listed}
    assert kinds[KUNDER] == ("tracked", False) and kinds["Tracked/Contoso"] == ("tracked", False)
    assert kinds["INBOX"] == ("watched", True) and kinds["Archive/2026"] == ("watched", True)
    assert kinds["Trash"] == ("-", True)

    dry = json.loads(env.cli("folders", "create", "--dry-run", "--json").stdout)
    assert sorted(dry["created"]["alice"]) == sorted([KUNDER, "Tracked/Contoso"])
    still = json.loads(env.cli("folders", "list", "--json").stdout)
    assert not next(r for r in still if r["folder"] == KUNDER)["exists"]  # a dry run creates nothing
    res = env.cli("folders", "create")
    assert res.returncode == 0 and f"alice: created {KUNDER}" in res.stdout
    listed = json.loads(env.cli("folders", "list", "--json").stdout)
    assert all(r["exists"] for r in listed)
