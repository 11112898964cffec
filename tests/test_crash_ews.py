"""Crash safety on an Exchange mailbox through EWS (the fake Exchange), as
``tests/test_crash_imap.py`` does on Dovecot: SIGKILL ``mailfiler once`` before and after
many commits of a 2,000-message backfill, and the daemon at random moments; restart; the
store converges on exactly the state of an uninterrupted run (every message tracked
exactly once), the SyncFolderItems state committed with the messages it covers.

The mailbox is compared before and after without categories and ChangeKeys (the Outlook
category is the one write mailfiler makes): MIME and read state unchanged."""

from __future__ import annotations

import hashlib
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.daemonproc import (
    ALSO_IN,
    FOLDERS,
    MESSAGE_ID_LINE,
    N_MESSAGES,
    NO_MESSAGE_ID,
    DaemonProc,
    World,
    assert_same_as,
    cli,
    cli_json,
    committed_count,
    describe,
    kill_at_commit_points,
    query,
    quick_check,
    snapshot,
    wait_until,
)
from tests.mailgen import message_id_for, realistic_message
from tests.servers.ews import EwsServer
from tests.test_crash_imap import Corpus, Msg, assert_converged, crash_positions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

ALICE = "alice@example.com"


class EwsView:
    """What ``assert_mailbox_untouched`` reads: the mailbox without categories and ChangeKeys."""

    def __init__(self, server: EwsServer) -> None:
        self.server = server

    def client(self) -> EwsView:
        return self

    def __enter__(self) -> EwsView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def snapshot(self) -> list[tuple[str, str, bool, str]]:
        with self.server.store.lock:
            mailbox = self.server.store.mailbox(ALICE)
            return sorted(
                (f.name, i.id, i.is_read, hashlib.sha256(i.mime or b"").hexdigest())
                for f in mailbox.folders.values()
                for i in f.items.values()
            )


class EwsWorld(World):
    def __init__(self, base: Path, server: EwsServer) -> None:
        base.mkdir(parents=True, exist_ok=True)
        secret = base / "ews.password"
        secret.write_text("pw-svc\n", encoding="utf-8")
        secret.chmod(0o600)
        ews = {"url": server.ews_url, "username": "svc", "password_file": str(secret), "auth": "ntlm",
               "impersonate": ALICE, "version": "2016", "timeout": 30, "categories": True}  # fmt: skip
        super().__init__(base, base / "unused-maildir", FOLDERS, None, {"ews": ews})

    def write_config(self, *, limits: dict[str, int] | None = None) -> None:
        super().write_config(limits=limits)
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        for mb in data["mailboxes"]:
            mb.pop("maildir", None)
            mb.pop("layout", None)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def server() -> Iterator[EwsServer]:
    users = [{"smtp": ALICE, "password": "pw-alice", "folders": [f for f, _ in FOLDERS]},
             {"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": [ALICE]}]  # fmt: skip
    with EwsServer(users) as fake:
        fake.hub.heartbeat = 1.0
        yield fake


@pytest.fixture(scope="module")
def corpus(server: EwsServer) -> Corpus:
    regarding = dict(FOLDERS)
    messages: list[Msg] = []
    for i in range(N_MESSAGES):
        raw = realistic_message(i)
        mid: str | None = message_id_for(i)
        if i in NO_MESSAGE_ID:
            raw, n = MESSAGE_ID_LINE.subn(b"", raw, count=1)
            assert n == 1
            mid = None
        folders = [FOLDERS[i % 3][0]]
        if i in ALSO_IN:
            folders.append(ALSO_IN[i])
        for folder in folders:
            server.deliver(ALICE, raw, folder)
        refs = {regarding[f] for f in folders} - {None}
        messages.append(Msg(i, mid, folders, next(iter(refs), None), 1 if i % 5 == 4 else 0))
    per_folder = {f: len(server.items(ALICE, f)) for f, _ in FOLDERS}
    view = EwsView(server)
    return Corpus(view, messages, per_folder, view.snapshot())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory, server: EwsServer) -> dict[str, Any]:
    world = EwsWorld(tmp_path_factory.mktemp("crash-ews-reference"), server)
    res = cli(world.config, "once", "--json", timeout=240)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    order = [(f, s) for f, s in query(world.db, "SELECT folder, source_id FROM location ORDER BY id")]
    return {"snapshot": snapshot(world.db), "order": order}


def test_crash_at_many_commit_points_converges(
    corpus: Corpus, reference: dict[str, Any], tmp_path: Path, server: EwsServer
) -> None:
    world = EwsWorld(tmp_path / "crash", server)
    total = len(reference["order"])
    positions = crash_positions(corpus, reference["order"], reference["snapshot"])
    kill_at_commit_points(world, reference["order"], positions, total)
    res = cli(world.config, "once", "--json", timeout=240)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    assert_same_as(reference["snapshot"], snapshot(world.db))
    again = cli_json(world.config, "once")
    assert [(r["new"], r["gone"], r["shunted"]) for r in again["alice"]][: len(FOLDERS)] == [(0, 0, 0)] * len(FOLDERS)


def test_random_sigkill_of_the_daemon_converges(
    corpus: Corpus, reference: dict[str, Any], tmp_path: Path, server: EwsServer
) -> None:
    world = EwsWorld(tmp_path / "daemon", server)
    total = len(reference["order"])
    rng = random.Random(20261206)
    log = world.base / "daemon.log"
    kills: list[tuple[str, float, int]] = []
    for k in range(8):
        with DaemonProc(world.config, log) as daemon:
            daemon.start()
            anchor = "spawn" if k % 2 == 0 else "started"
            if anchor == "started":
                wait_until(lambda d=daemon: d.has_event("started") or not d.alive(), timeout=60, what="start")
            delay = rng.uniform(0.5, 8.0)  # exchangelib takes a few seconds before the first commit
            time.sleep(delay)  # the random kill moment
            assert daemon.alive(), daemon.log_tail()
            assert daemon.kill() == -signal.SIGKILL
        quick_check(world)
        kills.append((anchor, round(delay, 3), committed_count(world)))
    assert any(0 < n < total for _, _, n in kills), f"no kill landed inside the backfill: {kills}"
    with DaemonProc(world.config, log) as daemon:
        daemon.start()

        def finished() -> bool:
            rows = query(world.db, "SELECT folder, state FROM folder_cursor", before_migration=True)
            states = {s for f, s in rows if f in corpus.per_folder}
            return committed_count(world) == total and states == {"ok"} and daemon.has_event("watching")

        wait_until(lambda: finished() or not daemon.alive(), timeout=180, interval=0.2, what="the backfill",
                   state=lambda: f"{committed_count(world)}/{total}; kills {kills}")  # fmt: skip
        assert daemon.alive(), daemon.log_tail()
        assert daemon.terminate() == 0, daemon.log_tail()
    assert_converged(world, corpus)
    assert_same_as(reference["snapshot"], snapshot(world.db))
