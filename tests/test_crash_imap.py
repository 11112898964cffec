"""Crash safety on an IMAP mailbox, mbsync's way: kill mailfiler before and after many
commits of a 2,000-message backfill from a real Dovecot, and at random moments while the
daemon runs; restart it; prove it converges on exactly the state of an uninterrupted run.

The world (as in ``tests/test_crash_safety.py``, which does the same on a Maildir): one
Dovecot user with 2,000 realistic messages over three tracked folders (two with a regarding,
one without), seeded straight into the server's storage; three messages sit in two folders at
once, five have no Message-ID.  Every run is a real ``mailfiler`` subprocess configured with
``imap:``.

* ``MAILFILER_CRASH_AT=before_commit:N`` / ``after_commit:N``: ``mailfiler once`` SIGKILLs
  itself at the N-th pass of that point; the runs are chained so that the crashes land at
  chosen positions across the whole backfill (the first few, round numbers, both sides of each
  folder boundary, the second copy of each message held twice, the last).
* ``mailfiler run`` is SIGKILLed after seeded random delays and restarted.

End state every time: one activity per distinct message (compared by Message-ID with the
uninterrupted run: regarding, parties, attachments, locations), each location once, nothing
shunted, attachment blobs intact, ``PRAGMA integrity_check`` ok, and the mailbox on the server
exactly as it was (flags included: nothing marked ``\\Seen``).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.daemonproc import (
    ALSO_IN,
    FOLDERS,
    MESSAGE_ID_LINE,
    N_MESSAGES,
    NO_MESSAGE_ID,
    SYNTHETIC_SUFFIX,
    DaemonProc,
    ImapWorld,
    World,
    assert_blobs_intact,
    assert_same_as,
    cli,
    cli_json,
    committed_count,
    describe,
    kill_at_commit_points,
    open_db,
    query,
    quick_check,
    scalar,
    snapshot,
    wait_until,
)
from tests.mailgen import message_id_for, realistic_message
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot

pytestmark = [pytest.mark.slow, pytest.mark.dovecot, pytest.mark.timeout(280)]


@dataclass
class Msg:
    i: int
    message_id: str | None  # None: no Message-ID header
    folders: list[str]
    regarding: str | None
    attachments: int


@dataclass
class Corpus:
    user: ImapUser
    messages: list[Msg]
    per_folder: dict[str, int]
    #: AdminClient.snapshot() of the seeded mailbox: every folder's STATUS, every message's UID, flags, size
    mailbox: list


@pytest.fixture(scope="module")
def server() -> Iterator[DovecotServer]:
    yield from start_dovecot(tls=False)


@pytest.fixture(scope="module")
def corpus(server: DovecotServer) -> Corpus:
    """The shared mailbox (mailfiler never changes it; the tests check that)."""
    user = server.add_user()
    regarding = dict(FOLDERS)
    messages: list[Msg] = []
    seeds: dict[str, list[bytes]] = {f: [] for f, _ in FOLDERS}
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
            seeds[folder].append(raw)
        refs = {regarding[f] for f in folders} - {None}
        assert len(refs) <= 1, "the corpus must not depend on processing order"
        messages.append(Msg(i, mid, folders, next(iter(refs), None), 1 if i % 5 == 4 else 0))
    for folder, raws in seeds.items():
        user.seed(folder, raws)
    with user.client() as admin:
        mailbox = admin.snapshot()  # also makes Dovecot give every message its UID
    per_folder = {f: len(raws) for f, raws in seeds.items()}
    assert sum(per_folder.values()) == N_MESSAGES + len(ALSO_IN)
    return Corpus(user, messages, per_folder, mailbox)


@pytest.fixture(scope="module")
def reference(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The store after one uninterrupted ``mailfiler once``, and the order it tracked in."""
    world = ImapWorld(tmp_path_factory.mktemp("crash-imap-reference"), corpus.user)
    res = cli(world.config, "once", "--json", timeout=240)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    order = [(f, s) for f, s in query(world.db, "SELECT folder, source_id FROM location ORDER BY id")]
    return {"snapshot": snapshot(world.db), "order": order}


# --------------------------------------------------------------------------- checks


def assert_converged(world: World, corpus: Corpus) -> None:
    """The end state every run must reach, however often it was killed."""
    db = world.db
    with open_db(db) as conn:
        assert [r[0] for r in conn.execute("PRAGMA integrity_check")] == ["ok"]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

    rows = query(
        db,
        "SELECT l.folder, l.source_id, l.gone_at, a.id, a.message_id, a.synthetic_id, r.entity || ':' || r.key,"
        " (SELECT COUNT(*) FROM attachment t WHERE t.activity_id = a.id), a.correlation,"
        " (SELECT r2.entity || ':' || r2.key FROM activity p JOIN record r2 ON r2.id = p.regarding_id"
        "    WHERE p.id = a.correlated_activity_id)"
        " FROM location l JOIN activity a ON a.id = l.activity_id LEFT JOIN record r ON r.id = a.regarding_id",
    )
    n_locations = sum(corpus.per_folder.values())
    assert len(rows) == len({(r[0], r[1]) for r in rows}) == n_locations, f"{len(rows)} locations"
    assert [r for r in rows if r[2] is not None] == [], "a present message was marked gone"
    assert scalar(db, "SELECT COUNT(*) FROM activity") == N_MESSAGES

    by_mid: dict[str, list[tuple]] = {}
    for r in rows:
        by_mid.setdefault(r[4], []).append(r)
    problems: list[str] = []
    synthetic = sorted(mid for mid in by_mid if mid.endswith(SYNTHETIC_SUFFIX))
    assert len(synthetic) == len(NO_MESSAGE_ID), synthetic
    for m in corpus.messages:
        if m.message_id is None:
            continue  # checked by count above and by the comparison with the reference
        locs = by_mid.get(m.message_id, [])
        if sorted(r[0] for r in locs) != sorted(m.folders):
            problems.append(f"message {m.i}: locations {sorted(r[0] for r in locs)}, expected {sorted(m.folders)}")
            continue
        _, _, _, _, _, synth, regarding, n_att, correlation, parent = locs[0]
        correlated = m.regarding is None and correlation in ("in-reply-to", "references")
        expected = parent if correlated else m.regarding
        if synth or regarding != expected or (correlated and regarding is None):
            problems.append(f"message {m.i}: regarding {regarding} by {correlation}, expected {expected}")
        if n_att != m.attachments:
            problems.append(f"message {m.i}: {n_att} attachments, expected {m.attachments}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:30])

    assert query(db, "SELECT folder, source_id, reason FROM shunt") == [], "nothing may be shunted"
    cursors = {f: (n, s) for f, n, s in query(db, "SELECT folder, processed, state FROM folder_cursor")}
    assert {f: cursors.get(f) for f in corpus.per_folder} == {f: (n, "ok") for f, n in corpus.per_folder.items()}

    assert_blobs_intact(db, world.state_dir)
    assert_mailbox_untouched(corpus)


def assert_mailbox_untouched(corpus: Corpus) -> None:
    with corpus.user.client() as admin:
        now = admin.snapshot()
    assert "\\Seen" not in repr(now), "tracking marked mail as read"
    assert now == corpus.mailbox, "mailfiler changed the mailbox on the server"


# --------------------------------------------------------------------------- tests


def crash_positions(corpus: Corpus, order: list[tuple[str, str]], ref: dict[str, Any]) -> list[int]:
    """Where the backfill is killed, counted in commits from its start (``order``: the
    (folder, source id) the uninterrupted run tracked, in its order)."""
    total = len(order)
    positions = {1, 2, 3, 10, 100, 500, 1000, 1999, total - 1, total}
    edge = 0
    for folder, _ in FOLDERS[:-1]:
        edge += corpus.per_folder[folder]
        positions |= {edge, edge + 1}
    index = {key: n for n, key in enumerate(order, 1)}
    by_location = {(f, s): mid for mid, a in ref["activities"].items() for f, s, _ in a["locations"]}
    copies: dict[str, list[int]] = {}
    for key, n in index.items():
        copies.setdefault(by_location[key], []).append(n)
    positions |= {max(ns) for ns in copies.values() if len(ns) > 1}  # the second copy of a message
    positions.add(min(index[k] for k, mid in by_location.items() if mid.endswith(SYNTHETIC_SUFFIX)))
    positions.add(
        min(index[(f, s)] for a in ref["activities"].values() if a["attachments"] for f, s, _ in a["locations"])
    )
    return sorted(p for p in positions if 1 <= p <= total)


def test_crash_at_many_commit_points_converges(corpus: Corpus, reference: dict[str, Any], tmp_path: Path) -> None:
    world = ImapWorld(tmp_path / "crash", corpus.user)
    total = len(reference["order"])
    positions = crash_positions(corpus, reference["order"], reference["snapshot"])
    kill_at_commit_points(world, reference["order"], positions, total)

    res = cli(world.config, "once", "--json", timeout=240)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    assert_same_as(reference["snapshot"], snapshot(world.db))
    # and one more pass finds nothing to do
    again = cli_json(world.config, "once")
    assert [(r["new"], r["gone"], r["shunted"]) for r in again["alice"]][: len(FOLDERS)] == [(0, 0, 0)] * len(FOLDERS)
    assert_same_as(reference["snapshot"], snapshot(world.db))


def test_random_sigkill_of_the_daemon_converges(corpus: Corpus, reference: dict[str, Any], tmp_path: Path) -> None:
    world = ImapWorld(tmp_path / "daemon", corpus.user)
    total = len(reference["order"])
    rng = random.Random(20261122)
    log = world.base / "daemon.log"
    kills: list[tuple[str, float, int]] = []
    for k in range(10):
        with DaemonProc(world.config, log) as daemon:
            daemon.start()
            # half the kills count from the spawn (start-up, migration, login), half from
            # the `started` log line (the backfill)
            anchor = "spawn" if k % 2 == 0 else "started"
            if anchor == "started":
                wait_until(
                    lambda d=daemon: d.has_event("started") or not d.alive(), timeout=60, what="the daemon to start"
                )
            delay = rng.uniform(0.05, 1.0)
            time.sleep(delay)  # the random kill moment, not a wait for a result
            assert daemon.alive(), f"the daemon exited on its own:\n{daemon.log_tail()}"
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

        wait_until(
            lambda: finished() or not daemon.alive(),
            timeout=180,
            interval=0.2,
            what="the restarted daemon to finish the backfill",
            state=lambda: f"{committed_count(world)}/{total} committed; kills {kills}",
        )
        assert daemon.alive(), daemon.log_tail()
        assert daemon.terminate() == 0, daemon.log_tail()
        errors = [e for e in daemon.events(this_run=False) if e.get("level") in ("error", "critical")]
        assert errors == [], errors[:3]

    assert_converged(world, corpus)
    assert_same_as(reference["snapshot"], snapshot(world.db))
