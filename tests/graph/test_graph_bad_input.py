"""Hostile and oversized input through Microsoft Graph (the fake): the daemon meets the whole
malformed corpus in a backfill and live, plus a 30 MB message; every message ends tracked or
shunted with the same reasons as on a Maildir, the daemon keeps running, and the mailbox is
never changed (nothing read).  With a 1 MB size limit the 30 MB message is shunted
``too-large`` with a byte-identical copy, streamed (never held whole)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.daemonproc import DaemonProc, World, cli, describe, present_locations, shunts, wait_until
from tests.graph.helpers import UPN, tenant
from tests.graph.world import graph_block
from tests.mailgen import large_attachment_message, malformed_corpus, realistic_message
from tests.servers.graph import GraphFake
from tests.servers.tls import make_tls
from tests.test_bad_input import LARGE_BYTES, SHUNTED, TRACKED

BACKFILL = "INBOX/Tracked/Contoso"
LIVE = "INBOX/Tracked/Unfiled"
FOLDERS: list[tuple[str, str | None]] = [(BACKFILL, "account:contoso"), (LIVE, None)]

pytestmark = pytest.mark.timeout(300)


class GraphWorld(World):
    def __init__(self, base: Path, graph: GraphFake, limits: dict[str, int] | None = None) -> None:
        base.mkdir(parents=True, exist_ok=True)
        super().__init__(base, base / "unused", FOLDERS, limits, {"graph": graph_block(graph, base, poll=(0.2, 0.5))})

    def write_config(self, *, limits: dict[str, int] | None = None) -> None:
        super().write_config(limits=limits)
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        for mb in data["mailboxes"]:
            mb.pop("maildir", None)
            mb.pop("layout", None)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphFake]:
    (tmp_path / "tls").mkdir()
    with GraphFake(make_tls(tmp_path / "tls")) as fake:
        tenant(fake, [BACKFILL, LIVE])
        yield fake


def _state(graph: GraphFake) -> list:
    box = graph.mailbox(UPN)
    with box.tenant.lock:
        return sorted((m.immutable_id, m.folder_id, m.is_read, tuple(m.categories)) for m in box.messages.values())


def test_daemon_tracks_or_shunts_every_bad_message_and_keeps_running(graph: GraphFake, tmp_path: Path) -> None:
    world = GraphWorld(tmp_path / "world", graph)
    corpus = malformed_corpus()
    names: dict[tuple[str, str], str] = {}  # (folder, immutable id) -> corpus name
    for name, data in corpus.items():
        names[(BACKFILL, graph.deliver(UPN, BACKFILL, data).immutable_id)] = name

    def resolved() -> set[tuple[str, str]]:
        return present_locations(world.db) | set(shunts(world.db))

    with DaemonProc(world.config, world.base / "daemon.log") as daemon:
        daemon.start()
        wait_until(lambda: set(names) <= resolved() or not daemon.alive(), timeout=90, what="the backfill")
        assert daemon.alive(), daemon.log_tail()
        for name, data in corpus.items():
            names[(LIVE, graph.deliver(UPN, LIVE, data).immutable_id)] = name
        big = large_attachment_message(LARGE_BYTES)
        big_key = (LIVE, graph.deliver(UPN, LIVE, big).immutable_id)
        wait_until(lambda: set(names) | {big_key} <= resolved() or not daemon.alive(), timeout=120, what="live")
        assert daemon.alive(), daemon.log_tail()
        normal = (LIVE, graph.deliver(UPN, LIVE, realistic_message(1)).immutable_id)
        wait_until(lambda: normal in present_locations(world.db), timeout=30, what="a normal message after them")
        assert daemon.terminate() == 0, daemon.log_tail()
        errors = [e for e in daemon.events() if e.get("level") in ("error", "critical")]
        assert errors == [], errors[:3]

    located = present_locations(world.db)
    shunted = shunts(world.db)
    assert {names[k] for k in shunted} == set(SHUNTED)
    for key, row in shunted.items():
        assert row["reason"] == SHUNTED[names[key]], (names[key], row)
    assert {names[k] for k in located if k in names} == set(TRACKED)
    assert big_key in located  # 30 MB is under the default limit: tracked
    assert not any(read for _, _, read, _ in _state(graph)), "tracking marked mail as read"


def test_a_30_mb_message_over_the_limit_is_shunted_with_a_streamed_copy(graph: GraphFake, tmp_path: Path) -> None:
    world = GraphWorld(tmp_path / "world", graph, limits={"max_message_bytes": 1_000_000})
    big = large_attachment_message(LARGE_BYTES)
    big_key = (BACKFILL, graph.deliver(UPN, BACKFILL, big).immutable_id)
    normal = (BACKFILL, graph.deliver(UPN, BACKFILL, realistic_message(2)).immutable_id)
    res = cli(world.config, "once", "--json")
    assert res.returncode == 0, describe(res)
    s = shunts(world.db)
    assert set(s) == {big_key} and s[big_key]["reason"] == "too-large"
    copies = list((world.state_dir / "shunt").rglob("*.eml"))
    assert len(copies) == 1
    assert hashlib.sha256(copies[0].read_bytes()).digest() == hashlib.sha256(big).digest()
    assert present_locations(world.db) == {normal}
