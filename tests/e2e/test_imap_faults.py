"""Faults through the real daemon on IMAP mailboxes (a real Dovecot of this module's own).

Each test runs ``mailfiler run`` on one Dovecot user (``imap:`` in the config) and does to
the server what happens in the field:

* the server is SIGKILLed while the daemon idles, in the middle of fetching a 30 MB
  message (a relay between the daemon and Dovecot cuts the connection after a few MB of
  the literal), and during a backfill of a few hundred messages; the user is kicked
  (``* BYE``).  The daemon reconnects with jittered, capped backoff, catches up, and every
  message is tracked once;
* a tracked folder is deleted, renamed and re-created; its UIDVALIDITY changes in place
  (``doveadm mailbox update --uid-validity``) and by delete + re-create with the same mail:
  ``status`` says "missing" instead of crashing, and there are never duplicate activities
  and nothing is deleted;
* a server without CONDSTORE, QRESYNC, MOVE and NOTIFY: moves by COPY + ``\\Deleted`` +
  EXPUNGE still follow; a client that copies and flags ``\\Deleted`` but expunges only later;
  the same message in two folders (Gmail labels);
* TLS: implicit and STARTTLS with ``ca_file``, and a wrong CA refused with a clear error in
  ``status``.

Every test also checks that the mailbox on the server is only ever read (no ``\\Seen``).
The malformed corpus and the very large messages over IMAP are in
``tests/sources/test_imap_bad_input.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import DaemonProcess, E2EEnv, locations, wait_for
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.mailgen import large_attachment_message, realistic_message
from tests.servers.dovecot import AdminClient, DovecotServer, ImapUser, start_dovecot

# the user fixture comes before env in each test's arguments: the daemon stops
# before the test user's mail is removed
pytestmark = [pytest.mark.dovecot, pytest.mark.timeout(120)]

AKESSON = "Kunder/Åkesson AB"
CONTOSO = "Tracked/Contoso"
UNFILED = "Tracked/Unfiled"
FOLDERS: list[tuple[str, str | None]] = [(AKESSON, "account:akesson"), (CONTOSO, "account:contoso"), (UNFILED, None)]
PLAIN_DROPS = {"CONDSTORE", "QRESYNC", "MOVE", "NOTIFY"}


# --------------------------------------------------------------------------- servers and users


@pytest.fixture(scope="module")
def server() -> Iterator[DovecotServer]:
    """This module's Dovecot (with TLS): the tests kill and restart it."""
    yield from start_dovecot()


@pytest.fixture(scope="module")
def plain_server() -> Iterator[DovecotServer]:
    """A Dovecot that offers neither CONDSTORE, QRESYNC, MOVE nor NOTIFY."""
    yield from start_dovecot(tls=False, drop=PLAIN_DROPS)


def _running(server: DovecotServer) -> None:
    if server.process is None or server.process.poll() is not None:
        server.start()


@pytest.fixture
def user(server: DovecotServer) -> Iterator[ImapUser]:
    _running(server)
    user = server.add_user()
    try:
        yield user
    finally:
        _running(server)
        server.remove_user_mail(user.name)


@pytest.fixture
def plain_user(plain_server: DovecotServer) -> Iterator[ImapUser]:
    _running(plain_server)
    user = plain_server.add_user()
    try:
        yield user
    finally:
        plain_server.remove_user_mail(user.name)


# --------------------------------------------------------------------------- config and checks


def imap_world(
    env: E2EEnv,
    user: ImapUser,
    *,
    tls: str = "none",
    port: int | None = None,
    ca_file: str | Path | None = None,
    folders: list[tuple[str, str | None]] = FOLDERS,
    limits: dict[str, int] | None = None,
    create_missing: bool = True,
) -> None:
    """One mailbox ``alice`` on ``user``'s account, its password in a file."""
    secret = env.root / "imap.password"
    secret.write_text(user.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    kw = user.settings_kwargs(tls)
    imap: dict[str, Any] = {
        "host": kw["host"],
        "port": port or kw["port"],
        "username": kw["username"],
        "password_file": str(secret),
        "tls": tls,
        "timeout": 10,
    }
    if ca_file or kw["ca_file"]:
        imap["ca_file"] = str(ca_file or kw["ca_file"])
    spec = env.add_mailbox("alice", "alice@example.com", folders, create_missing_folders=create_missing)
    spec.extra = {"imap": imap}
    if limits:
        env.extra["limits"] = limits
    env.write_config()


def create_folders(user: ImapUser, folders: list[tuple[str, str | None]] = FOLDERS) -> None:
    with user.client() as admin:
        for folder, _ in folders:
            admin.create(folder)


def start(env: E2EEnv) -> DaemonProcess:
    daemon = env.start_daemon()
    daemon.wait_event("watching", timeout=30)
    return daemon


def message_ids(env: E2EEnv) -> list[str]:
    """Message-IDs of all activities, sorted: a duplicate shows as a repeat."""
    return sorted(a["message_id"] for a in env.activities())


def folder_state(env: E2EEnv, folder: str) -> dict[str, Any]:
    return env.folder_status(env.status(), "alice", folder)


def assert_nothing_seen(user: ImapUser) -> None:
    """Tracking never marks mail as read (nor flags, moves or deletes it)."""
    with user.client() as admin:
        snap = admin.snapshot()
    assert "\\Seen" not in repr(snap), snap


def backoff_gaps(daemon: DaemonProcess, since: int) -> list[float]:
    errors = daemon.events("mailbox-error", since=since)
    return [b.at - a.at for a, b in itertools.pairwise(errors)]


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def many_messages(n: int, folders: list[str], *, start: int = 0) -> dict[str, list[bytes]]:
    """``n`` realistic messages spread round-robin over ``folders``."""
    out: dict[str, list[bytes]] = {f: [] for f in folders}
    for i in range(start, start + n):
        out[folders[i % len(folders)]].append(realistic_message(i))
    return out


# --------------------------------------------------------------------------- a relay that cuts


class CuttingRelay:
    """A TCP relay from a local port to Dovecot's.  The first connection on which the
    server has sent more than ``cut_after`` bytes is cut there, in mid-response, and
    ``cut`` is set; later connections pass untouched."""

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.closed = False
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()  # the server is down: so is the relay
                continue
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            self._spawn(self._pump, client, upstream, False)
            self._spawn(self._pump, upstream, client, True)

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        relayed = 0
        try:
            while data := src.recv(65536):
                if from_server and not self.cut.is_set() and relayed + len(data) > self.cut_after:
                    self.cut.set()
                    break
                relayed += len(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for thread in self.threads:
            thread.join(5)


# --------------------------------------------------------------------------- the server goes away


def test_server_killed_while_idle_reconnects_with_backoff_and_catches_up(
    server: DovecotServer, user: ImapUser, env: E2EEnv
) -> None:
    env.expected_errors |= {"mailbox-error"}
    imap_world(env, user)
    create_folders(user)
    daemon = start(env)
    with user.client() as admin:
        admin.append(AKESSON, crlf(mail(1, frm="<sven@akesson.se>")))
    env.wait_activity(mid(1))

    since = daemon.mark()
    server.kill()  # every connection drops at once, no BYE
    # mail that lands while the daemon cannot reach the server
    user.seed(AKESSON, [mail(2, frm="<sven@akesson.se>")])
    user.seed(CONTOSO, [mail(3), mail(4)])
    try:
        wait_for(
            lambda: len(daemon.events("mailbox-error", since=since)) >= 3, timeout=30, what="three failed reconnects"
        )
    finally:
        server.start()
    # the backoff doubles (about 1 s, then 2 s), with jitter: never a tight loop
    first, second = backoff_gaps(daemon, since)[:2]
    assert 0.7 < first < 1.5 and 1.5 < second < 2.9 and second > first, (first, second)
    assert "retrying in" in daemon.events("mailbox-error", since=since)[0].data["msg"]

    daemon.wait_event("watching", since=since, timeout=30)
    env.wait_activities(lambda acts: len(acts) == 4, timeout=15, what="the mail that came while down")
    assert message_ids(env) == sorted(mid(n) for n in (1, 2, 3, 4))
    assert folder_state(env, AKESSON)["state"] == "ok" and folder_state(env, AKESSON)["last_error"] is None
    assert env.activity(mid(3))["regarding"] == "account:contoso"
    # and the new connections push as the old ones did
    with user.client() as admin:
        admin.append(CONTOSO, crlf(mail(5)))
    env.wait_activity(mid(5))
    assert_nothing_seen(user)


@pytest.mark.slow
def test_server_killed_while_fetching_a_large_message(server: DovecotServer, user: ImapUser, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    relay = CuttingRelay(server.port, cut_after=8 * 1024 * 1024)
    try:
        imap_world(env, user, port=relay.port)
        create_folders(user)
        daemon = start(env)
        large = large_attachment_message(30 * 1024 * 1024)
        large_id = f"<large-{30 * 1024 * 1024}.0@mail.contoso.com>"
        with user.client() as admin:
            admin.append(CONTOSO, crlf(large))
            admin.append(CONTOSO, crlf(mail(20)))
        since = daemon.mark()
        assert relay.cut.wait(30), "the daemon never fetched the large message"
        server.kill()
        daemon.wait_event("mailbox-error", since=since, timeout=15)
        server.start()
        daemon.wait_event("watching", since=since, timeout=30)
        acts = env.wait_activities(lambda a: len(a) == 2, timeout=60, what="both messages tracked")
        assert sorted(a["message_id"] for a in acts) == sorted([large_id, mid(20)])
        big = env.activity(large_id)
        assert big is not None and big["regarding"] == "account:contoso"
        assert locations(big) == [("alice", CONTOSO)]
        assert [(a["filename"], a["size"]) for a in big["attachments"]] == [("archive.bin", 30 * 1024 * 1024)]
        assert folder_state(env, CONTOSO)["shunted"] == 0
        assert_nothing_seen(user)
    finally:
        env.close()
        relay.close()


def test_server_killed_during_a_backfill_loses_nothing(server: DovecotServer, user: ImapUser, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    n = 300
    for folder, msgs in many_messages(n, [AKESSON, CONTOSO, UNFILED]).items():
        user.seed(folder, msgs)
    imap_world(env, user)
    with user.client() as admin:
        before = admin.snapshot()
    daemon = env.start_daemon()
    db = env.db_path

    def committed() -> int:
        return _count(db, "SELECT COUNT(*) FROM location WHERE gone_at IS NULL")

    wait_for(lambda: committed() >= 40, timeout=30, every=0.02, what="the backfill under way")
    since = daemon.mark()
    server.kill()
    at_kill = committed()
    daemon.wait_event("mailbox-error", since=since, timeout=15)
    assert 0 < at_kill < n, f"the kill did not land inside the backfill ({at_kill} of {n})"
    server.start()
    daemon.wait_event("watching", since=since, timeout=60)
    acts = env.wait_activities(lambda a: len(a) >= n, timeout=60, what="the whole backfill")
    assert len(acts) == n and len({a["message_id"] for a in acts}) == n
    assert sum(len(a["locations"]) for a in acts) == n
    assert _count(db, "SELECT COUNT(*) FROM shunt") == 0
    with user.client() as admin:
        assert admin.snapshot() == before, "the daemon changed the mailbox"


def test_a_kicked_session_reconnects(user: ImapUser, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    imap_world(env, user)
    create_folders(user)
    daemon = start(env)
    # pushed mail tracked first: the watch sessions are logged in, so the kick reaches them
    # (kicked before they log in, there is nothing to kick and nothing to notice)
    with user.client() as admin:
        admin.append(UNFILED, crlf(mail(29)))
    env.wait_activity(mid(29))
    since = daemon.mark()
    user.kick()  # doveadm kick: "* BYE" on every session of the user
    error = daemon.wait_event("mailbox-error", since=since, timeout=15)
    assert "closed by the server" in error.data["msg"] or "was lost" in error.data["msg"], error.data["msg"]
    daemon.wait_event("watching", since=since, timeout=30)
    with user.client() as admin:
        admin.append(UNFILED, crlf(mail(30)))
    act = env.wait_activity(mid(30))
    assert locations(act) == [("alice", UNFILED)]
    assert folder_state(env, UNFILED)["state"] == "ok"


# --------------------------------------------------------------------------- folders change under it


def test_a_deleted_tracked_folder_shows_missing_and_resumes_when_made_again(plain_user: ImapUser, env: E2EEnv) -> None:
    # Without NOTIFY each tracked folder has an IDLE connection of its own, and Dovecot
    # ends an IDLE whose folder is deleted with BYE: the daemon reconnects at once.  (With
    # NOTIFY nothing is pushed; the STATUS sweep notices, every 60 s, as
    # tests/sources/test_imap_watch.py shows with a short sweep.)
    env.expected_errors |= {"mailbox-error"}
    imap_world(env, plain_user, create_missing=False)
    create_folders(plain_user)
    daemon = start(env)
    with plain_user.client() as admin:
        admin.append(AKESSON, crlf(mail(40, frm="<sven@akesson.se>")))
        env.wait_activity(mid(40))
        since = daemon.mark()
        admin.imap.delete(admin.box(AKESSON))
    status = env.wait_status(
        lambda s: env.folder_status(s, "alice", AKESSON)["state"] == "missing",
        timeout=30,
        what=f"{AKESSON} reported missing",
    )
    assert "does not exist" in env.folder_status(status, "alice", AKESSON)["last_error"]
    daemon.wait_event("watching", since=since, timeout=30)
    assert daemon.proc.poll() is None
    # the other folders go on
    with plain_user.client() as admin:
        admin.append(CONTOSO, crlf(mail(41)))
    env.wait_activity(mid(41))
    assert env.activity(mid(40))["regarding"] == "account:akesson"  # the activity stays

    with plain_user.client() as admin:
        admin.create(AKESSON)
        admin.append(AKESSON, crlf(mail(42, frm="<sven@akesson.se>")))
    # a missing folder is polled (poll_interval, 15 s) until it is back
    act = env.wait_activity(mid(42), timeout=40)
    assert act["regarding"] == "account:akesson" and locations(act) == [("alice", AKESSON)]
    env.wait_status(lambda s: env.folder_status(s, "alice", AKESSON)["state"] == "ok", what="the folder ok again")
    assert message_ids(env) == sorted(mid(n) for n in (40, 41, 42))
    assert_nothing_seen(plain_user)


def test_a_renamed_tracked_folder(user: ImapUser, env: E2EEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFILER_DISCOVER_EVERY", "1")  # new folders are looked for every second
    archive = "Archive/Åkesson AB"
    imap_world(env, user, create_missing=False)
    create_folders(user)
    daemon = start(env)
    with user.client() as admin:
        for n in (50, 51):
            admin.append(AKESSON, crlf(mail(n, frm="<sven@akesson.se>")))
        env.wait_activities(lambda a: len(a) == 2, what="two messages tracked")
        admin.imap.rename(admin.box(AKESSON), admin.box(archive))
    # the tracked folder is missing; its mail, now in a folder auto-tracking watches,
    # keeps its activities and their regarding
    env.wait_status(lambda s: env.folder_status(s, "alice", AKESSON)["state"] == "missing", timeout=20, what="missing")
    acts = env.wait_activities(
        lambda a: all(("alice", archive) in locations(x) for x in a), timeout=20, what="the mail found in the archive"
    )
    assert sorted(a["message_id"] for a in acts) == [mid(50), mid(51)]
    assert {a["regarding"] for a in acts} == {"account:akesson"}

    # renamed back: tracked there again, new mail too
    since = daemon.mark()
    with user.client() as admin:
        admin.imap.rename(admin.box(archive), admin.box(AKESSON))
    daemon.wait_event("watch-changed", since=since, timeout=20)
    env.wait_status(lambda s: env.folder_status(s, "alice", AKESSON)["state"] == "ok", timeout=20, what="ok again")
    with user.client() as admin:
        admin.append(AKESSON, crlf(mail(52, frm="<sven@akesson.se>")))
    act = env.wait_activity(mid(52))
    assert act["regarding"] == "account:akesson" and locations(act) == [("alice", AKESSON)]
    assert message_ids(env) == [mid(50), mid(51), mid(52)]
    # the archive is gone, and so is the mail's location there
    for n in (50, 51):
        assert locations(env.activity(mid(n))) == [("alice", AKESSON)]
    assert_nothing_seen(user)


def test_uidvalidity_changed_in_place_re_identifies_by_message_id(user: ImapUser, env: E2EEnv) -> None:
    imap_world(env, user)
    create_folders(user)
    start(env)
    with user.client() as admin:
        for n in (60, 61, 62):
            admin.append(CONTOSO, crlf(mail(n)))
        env.wait_activities(lambda a: len(a) == 3, what="three messages tracked")
    before = _live_source_ids(env.db_path, CONTOSO)
    # doveadm's way: same messages, same UIDs, a new UIDVALIDITY
    user.server.doveadm("mailbox", "update", "-u", user.name, "--uid-validity", "4242", CONTOSO)
    with user.client() as admin:
        admin.append(CONTOSO, crlf(mail(63)))  # the next push for the folder
    env.wait_activity(mid(63))
    live = wait_for(
        lambda: (ids := _live_source_ids(env.db_path, CONTOSO)) and all(i.startswith("4242:") for i in ids) and ids,
        what="the locations re-identified under the new UIDVALIDITY",
    )
    assert sorted(live) == sorted(f"4242:{u}" for u in (1, 2, 3, 4)), (before, live)
    acts = env.activities()
    assert sorted(a["message_id"] for a in acts) == sorted(mid(n) for n in (60, 61, 62, 63))
    assert all(locations(a) == [("alice", CONTOSO)] and a["regarding"] == "account:contoso" for a in acts)


def test_folder_deleted_and_made_again_with_the_same_mail(user: ImapUser, env: E2EEnv) -> None:
    imap_world(env, user, create_missing=False)
    create_folders(user)
    start(env)
    raws = [crlf(mail(n, frm="<sven@akesson.se>")) for n in (70, 71, 72)]
    with user.client() as admin:
        for raw in raws:
            admin.append(AKESSON, raw)
        env.wait_activities(lambda a: len(a) == 3, what="three messages tracked")
        old = _live_source_ids(env.db_path, AKESSON)
        # a restore from backup: the folder is deleted, made again and filled with the same mail
        admin.imap.delete(admin.box(AKESSON))
        admin.create(AKESSON)
        for raw in raws:
            admin.append(AKESSON, raw)
    wait_for(
        lambda: (ids := _live_source_ids(env.db_path, AKESSON)) and len(ids) == 3 and not (ids & old),
        what="the mail re-identified under the new UIDVALIDITY",
    )
    acts = env.activities()
    assert sorted(a["message_id"] for a in acts) == sorted(mid(n) for n in (70, 71, 72))
    assert all(locations(a) == [("alice", AKESSON)] and a["regarding"] == "account:akesson" for a in acts)
    assert _count(env.db_path, "SELECT COUNT(*) FROM location") == 6  # the old ones kept, marked gone


# --------------------------------------------------------------------------- clients that move in odd ways


def test_a_server_without_condstore_qresync_move_notify(plain_user: ImapUser, env: E2EEnv) -> None:
    caps = set(plain_user.server.capabilities_after_login(plain_user))
    assert not caps & PLAIN_DROPS and "IDLE" in caps
    # two tracked folders and INBOX: each gets an IDLE connection (max_idle 3)
    folders = [(AKESSON, "account:akesson"), (UNFILED, None)]
    imap_world(env, plain_user, folders=folders)
    create_folders(plain_user, folders)
    start(env)
    with plain_user.client() as admin:
        uid = admin.append(UNFILED, crlf(mail(80, frm="<sven@akesson.se>")))
        act = env.wait_activity(mid(80))
        assert act["regarding"] is None and locations(act) == [("alice", UNFILED)]
        # a client without MOVE: UID COPY, then \Deleted, then EXPUNGE
        copy(admin, UNFILED, uid, AKESSON)
        admin.expunge(UNFILED, uid)
        act = env.wait_activity(mid(80), lambda a: locations(a) == [("alice", AKESSON)])
        assert act["regarding"] == "account:akesson"
        admin.append("INBOX", crlf(mail(81, frm="<sven@akesson.se>", subject="Re: x", reply_to=mid(80))))
        act = env.wait_activity(mid(81))
        assert act["regarding"] == "account:akesson" and locations(act) == [("alice", "INBOX")]
    assert len(env.activities()) == 2
    assert_nothing_seen(plain_user)


def test_copy_and_deleted_without_expunge_then_expunge_later(user: ImapUser, env: E2EEnv) -> None:
    imap_world(env, user)
    create_folders(user)
    start(env)
    with user.client() as admin:
        uid = admin.append(AKESSON, crlf(mail(90, frm="<sven@akesson.se>")))
        env.wait_activity(mid(90))
        copy(admin, AKESSON, uid, CONTOSO)
        admin.store(AKESSON, uid, "T")  # \Deleted, and no EXPUNGE yet
        act = env.wait_activity(mid(90), lambda a: ("alice", CONTOSO) in locations(a))
        assert act["regarding"] == "account:contoso"  # re-linked: the target has a regarding
        time.sleep(1.5)  # a while with the message flagged but still there
        assert len(env.activities()) == 1
        admin.select(AKESSON)
        admin.imap.expunge()
        act = env.wait_activity(mid(90), lambda a: locations(a) == [("alice", CONTOSO)])
        assert act["regarding"] == "account:contoso"
    assert message_ids(env) == [mid(90)]


def test_the_same_message_in_two_folders_is_one_activity(user: ImapUser, env: E2EEnv) -> None:
    imap_world(env, user)
    create_folders(user)
    start(env)
    with user.client() as admin:
        uid = admin.append(UNFILED, crlf(mail(95)))
        copy(admin, UNFILED, uid, CONTOSO)  # a second label, as Gmail does it
        act = env.wait_activity(mid(95), lambda a: len(a["locations"]) == 2)
        assert locations(act) == [("alice", CONTOSO), ("alice", UNFILED)]
        assert act["regarding"] == "account:contoso"
        admin.expunge(UNFILED, uid)  # the label removed again
        act = env.wait_activity(mid(95), lambda a: locations(a) == [("alice", CONTOSO)])
    assert message_ids(env) == [mid(95)]
    assert_nothing_seen(user)


# --------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_tls_with_ca_file_through_the_config(user: ImapUser, env: E2EEnv, tls: str) -> None:
    imap_world(env, user, tls=tls)
    create_folders(user)
    start(env)
    with user.client() as admin:
        admin.append(CONTOSO, crlf(mail(100)))
    assert env.wait_activity(mid(100))["regarding"] == "account:contoso"
    assert user.password not in env.config_path.read_text()


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
def test_a_wrong_ca_is_refused_with_a_clear_error_in_status(user: ImapUser, env: E2EEnv, tls: str) -> None:
    env.expected_errors |= {"mailbox-error"}
    assert user.server.tls is not None
    imap_world(env, user, tls=tls, ca_file=user.server.tls.wrong_ca_file)
    create_folders(user)
    daemon = env.start_daemon()
    error = daemon.wait_event("mailbox-error", timeout=15)
    assert "not trusted" in error.data["msg"] and "ca_file" in error.data["msg"], error.data["msg"]
    status = env.wait_status(
        lambda s: env.folder_status(s, "alice", CONTOSO)["state"] == "error", what="the error in status"
    )
    last_error = env.folder_status(status, "alice", CONTOSO)["last_error"]
    assert "not trusted" in last_error and "127.0.0.1" in last_error, last_error
    assert env.activities() == []


# --------------------------------------------------------------------------- helpers


def copy(admin: AdminClient, folder: str, uid: int, dest: str) -> int:
    """UID COPY; returns the UID in ``dest`` (COPYUID)."""
    admin.select(folder)
    typ, data = admin.imap.uid("COPY", str(uid), admin.box(dest))
    assert typ == "OK", data
    _, codes = admin.imap.response("COPYUID")
    return int(codes[-1].split()[2])


def _live_source_ids(db: Path, folder: str) -> set[str]:
    if not db.exists():
        return set()
    with contextlib.closing(sqlite3.connect(str(db), timeout=30)) as conn:
        rows = conn.execute("SELECT source_id FROM location WHERE folder = ? AND gone_at IS NULL", (folder,))
        return {r[0] for r in rows}


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(str(db), timeout=30)) as conn:
        try:
            return conn.execute(sql).fetchone()[0]
        except sqlite3.OperationalError:
            return 0
