"""Crash safety, mbsync's way: kill mailfiler after (and before) every kind of durable write,
restart it, and prove that it converges on exactly the state of an uninterrupted run.

The world: one Maildir++ mailbox with 2,000 realistic messages over three tracked folders
(two with a regarding, one without); three messages sit in two folders at once, and five have
no Message-ID (mailfiler gives them a synthetic one). Every run is a real subprocess.

* ``MAILFILER_CRASH_AT=before_commit:N`` / ``after_commit:N`` make ``mailfiler once`` SIGKILL
  itself at the N-th pass of that point; the runs are chained so that the crashes land at
  chosen positions across the whole backfill (1, 2, 3, 10, folder boundaries, ..., the last).
* The daemon (``mailfiler run``) is SIGKILLed after seeded random delays and restarted.

End state every time: one activity per distinct message, each location once, nothing
shunted, each regarding right, attachment blobs intact, ``PRAGMA integrity_check`` ok, and
the same activities (message id -> regarding, parties, attachments, locations) as a run that
was never interrupted.
"""

from __future__ import annotations

import random
import signal
import time
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
    tree_hashes,
    wait_until,
)
from tests.mailgen import drop_into_maildir, maildirpp_folder_dir, message_id_for, realistic_message

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]


@dataclass
class Msg:
    i: int
    message_id: str | None  # None: no Message-ID header
    files: list[tuple[str, str]]  # (folder, source id) of every copy
    regarding: str | None
    attachments: int


@dataclass
class Corpus:
    maildir: Path
    messages: list[Msg]
    files: set[tuple[str, str]]
    per_folder: dict[str, int]
    hashes: dict[str, str]


def _source_id(path: Path) -> str:
    return path.name.split(":", 1)[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """The shared, read-only Maildir (mailfiler never writes to it; the tests check that)."""
    root = tmp_path_factory.mktemp("crash-maildir") / "Maildir"
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
        files = []
        for k, folder in enumerate(folders):
            # a mix of new/ and cur/ with flags, as a real mailbox has
            flags = "S" if (i + k) % 4 == 0 else ("RS" if (i + k) % 11 == 0 else None)
            path = drop_into_maildir(maildirpp_folder_dir(root, folder), raw, flags=flags, fsync=False)
            files.append((folder, _source_id(path)))
        refs = {regarding[f] for f in folders} - {None}
        assert len(refs) <= 1, "the corpus must not depend on processing order"
        n_att = 1 if i % 5 == 4 else 0
        messages.append(Msg(i, mid, files, next(iter(refs), None), n_att))
    all_files = {f for m in messages for f in m.files}
    per_folder = {folder: sum(1 for f, _ in all_files if f == folder) for folder, _ in FOLDERS}
    assert len(all_files) == N_MESSAGES + len(ALSO_IN)
    return Corpus(root, messages, all_files, per_folder, tree_hashes(root))


@pytest.fixture(scope="module")
def reference(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The store after one uninterrupted ``mailfiler once``."""
    world = World(tmp_path_factory.mktemp("crash-reference"), corpus.maildir, FOLDERS)
    res = cli(world.config, "once", "--json", timeout=240)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    return snapshot(world.db)


# --------------------------------------------------------------------------- checks


def assert_converged(world: World, corpus: Corpus) -> None:
    """The end state every run must reach, however often it was killed."""
    db = world.db
    problems: list[str] = []
    with open_db(db) as conn:
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    assert integrity == ["ok"], integrity
    assert fk == [], fk

    rows = query(
        db,
        "SELECT l.folder, l.source_id, l.gone_at, a.id, a.message_id, a.synthetic_id, r.entity || ':' || r.key,"
        " (SELECT COUNT(*) FROM attachment t WHERE t.activity_id = a.id)"
        " , a.correlation, (SELECT r2.entity || ':' || r2.key FROM activity p JOIN record r2 ON r2.id = p.regarding_id"
        "    WHERE p.id = a.correlated_activity_id)"
        " FROM location l JOIN activity a ON a.id = l.activity_id LEFT JOIN record r ON r.id = a.regarding_id",
    )
    by_loc = {(r[0], r[1]): r for r in rows}
    assert len(rows) == len(by_loc) == len(corpus.files), f"{len(rows)} location rows for {len(corpus.files)} files"
    assert set(by_loc) == corpus.files
    assert [r for r in rows if r[2] is not None] == [], "a present message was marked gone"
    n_activities = scalar(db, "SELECT COUNT(*) FROM activity")
    assert n_activities == len(corpus.messages), f"{n_activities} activities for {len(corpus.messages)} messages"

    seen: dict[int, int] = {}
    for m in corpus.messages:
        acts = {by_loc[f][3:] for f in m.files}
        if len(acts) != 1:
            problems.append(f"message {m.i}: its copies map to different activities {acts}")
            continue
        aid, mid, synthetic, regarding, n_att, correlation, parent_regarding = acts.pop()
        if aid in seen:
            problems.append(f"messages {seen[aid]} and {m.i} share activity {aid}")
        seen[aid] = m.i
        if m.message_id is not None and (mid != m.message_id or synthetic):
            problems.append(f"message {m.i}: message id {mid!r} (synthetic={synthetic}), expected {m.message_id!r}")
        if m.message_id is None and not (synthetic and mid.endswith(SYNTHETIC_SUFFIX)):
            problems.append(f"message {m.i} has no Message-ID but got {mid!r} (synthetic={synthetic})")
        # in the folder without a regarding, a reply inherits the regarding of the
        # tracked message it answers (correlation); otherwise it has none
        correlated = m.regarding is None and correlation in ("in-reply-to", "references")
        expected = parent_regarding if correlated else m.regarding
        if regarding != expected or (correlated and regarding is None):
            problems.append(f"message {m.i} ({mid}): regarding {regarding} by {correlation}, expected {expected}")
        if n_att != m.attachments:
            problems.append(f"message {m.i}: {n_att} attachments, expected {m.attachments}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:30])

    shunted = query(db, "SELECT folder, source_id, reason, detail FROM shunt")
    assert shunted == [], f"nothing may be shunted: {shunted[:5]}"

    # the folder cursor is committed with the messages it counts: never one too many or too few
    cursors = {f: (n, s) for f, n, s in query(db, "SELECT folder, processed, state FROM folder_cursor")}
    assert cursors == {f: (n, "ok") for f, n in corpus.per_folder.items()}

    # every attachment row has its blob, with the content its name promises
    assert_blobs_intact(db, world.state_dir)
    assert query(
        db, "SELECT COUNT(*) FROM attachment a LEFT JOIN blob b ON b.sha256 = a.blob_id WHERE b.sha256 IS NULL"
    ) == [(0,)]

    assert tree_hashes(corpus.maildir) == corpus.hashes, "mailfiler changed the Maildir"


# --------------------------------------------------------------------------- tests


def run_order(corpus: Corpus) -> list[tuple[str, str]]:
    """The (folder, source id) ``once`` commits, in its order: folders as configured, files by source id."""
    return [(f, sid) for f, _ in FOLDERS for sid in sorted(s for g, s in corpus.files if g == f)]


def crash_positions(corpus: Corpus) -> list[int]:
    """Where the backfill is killed, counted in commits from the start of the whole backfill:
    the first few, round numbers, both sides of every folder boundary, the last, and (in the
    order ``once`` works: folders as configured, files by source id) the second copy of each
    message held twice, the first message without a Message-ID and the first with an attachment."""
    total = len(corpus.files)
    positions = {1, 2, 3, 10, 100, 500, 1000, 1999, total - 1, total}
    edge = 0
    for folder, _ in FOLDERS[:-1]:
        edge += corpus.per_folder[folder]
        positions |= {edge, edge + 1}
    order = run_order(corpus)
    index = {key: n for n, key in enumerate(order, 1)}
    positions |= {max(index[f] for f in m.files) for m in corpus.messages if len(m.files) > 1}
    positions.add(min(index[m.files[0]] for m in corpus.messages if m.message_id is None))
    positions.add(min(index[m.files[0]] for m in corpus.messages if m.attachments))
    return sorted(p for p in positions if 1 <= p <= total)


def test_crash_at_every_commit_point_converges(corpus: Corpus, reference: dict[str, Any], tmp_path: Path) -> None:
    world = World(tmp_path / "crash", corpus.maildir, FOLDERS)
    total = len(corpus.files)
    positions = crash_positions(corpus)
    order = run_order(corpus)
    kill_at_commit_points(world, order, positions, total)

    res = cli(world.config, "once", "--json", timeout=240)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    assert_same_as(reference, snapshot(world.db))

    # and one more pass finds nothing to do
    again = cli_json(world.config, "once")
    assert [(r["new"], r["gone"], r["shunted"]) for r in again["alice"]] == [(0, 0, 0)] * len(FOLDERS)
    assert_same_as(reference, snapshot(world.db))


def test_random_sigkill_of_the_daemon_converges(corpus: Corpus, reference: dict[str, Any], tmp_path: Path) -> None:
    world = World(tmp_path / "daemon", corpus.maildir, FOLDERS)
    total = len(corpus.files)
    rng = random.Random(20240102)
    log = world.base / "daemon.log"
    kills: list[tuple[str, float, int]] = []
    for k in range(10):
        with DaemonProc(world.config, log) as daemon:
            daemon.start()
            # half the kills count from the spawn (they may hit start-up and migration),
            # half from the `started` log line (they hit the backfill)
            anchor = "spawn" if k % 2 == 0 else "started"
            if anchor == "started":
                wait_until(
                    lambda d=daemon: d.has_event("started") or not d.alive(),
                    timeout=60,
                    what="the daemon to start",
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
            states = {s for (s,) in query(world.db, "SELECT state FROM folder_cursor", before_migration=True)}
            return committed_count(world) == total and states == {"ok"} and daemon.has_event("started")

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
    assert_same_as(reference, snapshot(world.db))
