"""Crash safety on a Microsoft 365 mailbox (the Graph fake: Microsoft 365 cannot be reached
from here), as ``tests/test_crash_imap.py`` does on Dovecot: kill mailfiler before and after
many commits of a 2,000-message backfill and at random moments while the daemon runs;
restart it; prove it converges on exactly the state of an uninterrupted run.

The cursor is a delta link: a message's token names the delta round it came in, its place
and its id (``GraphSource.message_token``), so a restart replays that round and skips what
was committed; every message must still be tracked exactly once.  The mailbox must end as it
was (nothing read, no category: marks are off).
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
from tests.graph.helpers import UPN, tenant
from tests.graph.world import graph_block
from tests.mailgen import message_id_for, realistic_message
from tests.servers.graph import GraphFake
from tests.servers.tls import make_tls
from tests.test_crash_imap import Msg, crash_positions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@dataclass
class Corpus:
    graph: GraphFake
    messages: list[Msg]
    per_folder: dict[str, int]
    #: every message of the mailbox: (immutable id, folder id, read, categories)
    mailbox: list


class GraphWorld(World):
    def __init__(self, base: Path, graph: GraphFake) -> None:
        base.mkdir(parents=True, exist_ok=True)
        block = graph_block(graph, base, poll=(0.2, 1.0))
        super().__init__(base, base / "unused-maildir", FOLDERS, None, {"graph": block})

    def write_config(self, *, limits: dict[str, int] | None = None) -> None:
        super().write_config(limits=limits)
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        for mb in data["mailboxes"]:
            mb.pop("maildir", None)
            mb.pop("layout", None)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def mailbox_state(graph: GraphFake) -> list:
    box = graph.mailbox(UPN)
    with box.tenant.lock:
        return sorted((m.immutable_id, m.folder_id, m.is_read, tuple(m.categories)) for m in box.messages.values())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    tls = make_tls(tmp_path_factory.mktemp("graph-tls"))
    with GraphFake(tls) as graph:
        tenant(graph, [f for f, _ in FOLDERS])
        regarding = dict(FOLDERS)
        messages: list[Msg] = []
        per_folder = {f: 0 for f, _ in FOLDERS}
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
                graph.deliver(UPN, folder, raw)
                per_folder[folder] += 1
            refs = {regarding[f] for f in folders} - {None}
            messages.append(Msg(i, mid, folders, next(iter(refs), None), 1 if i % 5 == 4 else 0))
        yield Corpus(graph, messages, per_folder, mailbox_state(graph))


@pytest.fixture(scope="module")
def reference(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    world = GraphWorld(tmp_path_factory.mktemp("crash-graph-reference"), corpus.graph)
    res = cli(world.config, "once", "--json", timeout=300)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    order = [(f, s) for f, s in query(world.db, "SELECT folder, source_id FROM location ORDER BY id")]
    return {"snapshot": snapshot(world.db), "order": order}


def assert_converged(world: World, corpus: Corpus) -> None:
    """The IMAP crash test's end state (the store's checks are the same), with the
    mailbox check made against the fake's mailbox."""
    import tests.test_crash_imap as imap_test

    saved = imap_test.assert_mailbox_untouched
    imap_test.assert_mailbox_untouched = lambda _corpus: _assert_untouched(corpus)  # type: ignore[assignment]
    try:
        imap_test.assert_converged(world, corpus)  # type: ignore[arg-type]
    finally:
        imap_test.assert_mailbox_untouched = saved  # type: ignore[assignment]


def _assert_untouched(corpus: Corpus) -> None:
    assert mailbox_state(corpus.graph) == corpus.mailbox, "mailfiler changed the mailbox (read flag, categories)"


def test_crash_at_many_commit_points_converges(corpus: Corpus, reference: dict[str, Any], tmp_path: Path) -> None:
    world = GraphWorld(tmp_path / "crash", corpus.graph)
    total = len(reference["order"])
    positions = crash_positions(corpus, reference["order"], reference["snapshot"])  # type: ignore[arg-type]
    kill_at_commit_points(world, reference["order"], positions, total)

    res = cli(world.config, "once", "--json", timeout=240)
    assert res.returncode == 0, describe(res)
    assert_converged(world, corpus)
    assert_same_as(reference["snapshot"], snapshot(world.db))
    again = cli_json(world.config, "once")
    assert [(r["new"], r["gone"], r["shunted"]) for r in again["alice"]][: len(FOLDERS)] == [(0, 0, 0)] * len(FOLDERS)
    assert_same_as(reference["snapshot"], snapshot(world.db))


def test_random_sigkill_of_the_daemon_converges(corpus: Corpus, reference: dict[str, Any], tmp_path: Path) -> None:
    world = GraphWorld(tmp_path / "daemon", corpus.graph)
    total = len(reference["order"])
    rng = random.Random(20261206)
    log = world.base / "daemon.log"
    kills: list[tuple[str, float, int]] = []
    for k in range(8):
        with DaemonProc(world.config, log) as daemon:
            daemon.start()
            anchor = "spawn" if k % 2 == 0 else "started"
            if anchor == "started":
                wait_until(
                    lambda d=daemon: d.has_event("started") or not d.alive(), timeout=60, what="the daemon to start"
                )
            delay = rng.uniform(0.05, 1.5)
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
            timeout=240,
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
