"""The sync loop retries under the mailbox's retry policy (sync/runner.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailfiler.config.schema import Mailbox
from mailfiler.sync.engine import Result
from mailfiler.sync.runner import SyncLoop
from mailfiler.util.retrypolicy import JITTER


def mailbox(tmp_path: Path, retry: dict[str, float]) -> Mailbox:
    return Mailbox.model_validate(
        {
            "name": "alice",
            "owner": "alice@example.com",
            "maildir": str(tmp_path / "Maildir"),
            "sync": {"vdir": {"contacts": str(tmp_path / "contacts")}, "interval": 300},
            "retry": retry,
        }
    )


def test_a_server_out_of_reach_is_retried_sooner_and_sooner_not_at_the_interval(tmp_path: Path) -> None:
    loop = SyncLoop(None, lambda: None, asyncio.Event())  # type: ignore[arg-type]
    mb = mailbox(tmp_path, {"initial": 2, "max": 100, "healthy_after": 60})
    down = [Result("contacts", "https://dav.example/", "sync", state="unavailable")]
    waits = [loop._next_in(mb, down) for _ in range(8)]
    for wait, nominal in zip(waits, [2, 4, 8, 16, 32, 64], strict=False):
        assert nominal * (1 - JITTER) <= wait <= nominal * (1 + JITTER), waits
    assert all(w <= 100 for w in waits[6:])
    # a sync that raised counts the same; one that went through waits the interval
    assert loop._next_in(mb, None) <= 100
    assert loop._next_in(mb, [Result("contacts", "x", "sync")]) == 300
    # never later than the interval
    slow = mailbox(tmp_path, {"initial": 1000, "max": 5000, "healthy_after": 60})
    assert loop._next_in(slow, down) == 300
