"""Hostile and oversized input through EWS (the fake Exchange): the whole
``mailgen.malformed_corpus()`` in the backfill and again live, and a 30 MB message, each
ends tracked or shunted with a reason; the daemon keeps running and the mailbox is only
read (MIME and read state unchanged; the Outlook category is the one write)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.daemonproc import DaemonProc, present_locations, shunts, wait_until
from tests.mailgen import large_attachment_message, malformed_corpus
from tests.servers.ews import EwsServer
from tests.test_crash_ews import ALICE, EwsWorld

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BACKFILL, LIVE = "Tracked/Contoso", "Cases/CAS-01001"


def _mailbox(server: EwsServer) -> list[tuple[str, str, bool, str]]:
    with server.store.lock:
        mailbox = server.store.mailbox(ALICE)
        return sorted(
            (f.name, i.id, i.is_read, hashlib.sha256(i.mime or b"").hexdigest())
            for f in mailbox.folders.values()
            for i in f.items.values()
        )


def test_malformed_corpus_and_a_30_mb_message_through_ews(tmp_path: Path) -> None:
    users = [{"smtp": ALICE, "password": "pw-alice", "folders": ["Tracked/Contoso", "Tracked/Unfiled", LIVE]},
             {"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": [ALICE]}]  # fmt: skip
    corpus = malformed_corpus()
    with EwsServer(users) as server:
        server.hub.heartbeat = 1.0
        backfill = {server.deliver(ALICE, raw, BACKFILL) for raw in corpus.values()}
        world = EwsWorld(tmp_path / "world", server)
        with DaemonProc(world.config, world.base / "daemon.log") as daemon:
            daemon.start()

            def resolved(folder: str, ids: set[str]) -> bool:
                done = {s for f, s in present_locations(world.db) if f == folder}
                done |= {s for f, s in shunts(world.db) if f == folder}
                return ids <= done

            wait_until(lambda: resolved(BACKFILL, backfill) or not daemon.alive(), timeout=120, what="the backfill")
            assert daemon.alive(), daemon.log_tail()
            wait_until(lambda: daemon.has_event("watching") or not daemon.alive(), timeout=60, what="watching")
            live = {server.deliver(ALICE, raw, LIVE) for raw in corpus.values()}
            large = large_attachment_message(30 * 1024 * 1024)
            live.add(server.deliver(ALICE, large, LIVE))
            wait_until(lambda: resolved(LIVE, live) or not daemon.alive(), timeout=180, what="the live corpus")
            assert daemon.alive(), daemon.log_tail()
            before = _mailbox(server)
            assert not any(read for _, _, read, _ in before)  # nothing marked read
            tracked = {s for f, s in present_locations(world.db)}
            shunted = shunts(world.db)
            assert all(row["reason"] for row in shunted.values())
            assert len(tracked) + len(shunted) == 2 * len(corpus) + 1
            big = [s for s in live if server.item(s).mime == large]
            assert big and big[0] in tracked  # the 30 MB message is tracked (no size limit set)
            assert daemon.terminate() == 0, daemon.log_tail()
        assert _mailbox(server) == before
