"""Parse helper processes (tracking/parsepool.py): real helper processes, no mocks.

What must hold: a helper's result is exactly what the daemon's own parse gives, or
None ("parse it yourself"); a dead or hung helper costs nothing but speed; small
batches (pushes) stay in the daemon; helpers stop when idle; and a scan with helpers
stores exactly what a scan without them stores."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailfiler.service.readahead import ReadAhead
from mailfiler.sources.maildir import MaildirSource
from mailfiler.store.blobs import INLINE_MAX, BlobStore, inline
from mailfiler.tracking import parsepool
from mailfiler.tracking.parse import parse_message
from mailfiler.tracking.parsepool import ParsePool, auto_workers, parse_workers
from tests.mailgen import (
    drop_into_maildir,
    maildirpp_folder_dir,
    make_maildir_folder,
    malformed_corpus,
    realistic_message,
)
from tests.store.helpers import make_message

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


def _own_parse(raw: bytes):
    try:
        return parse_message(raw)
    except Exception:  # noqa: BLE001
        return None


def test_auto_uses_the_spare_cores_only() -> None:
    assert [auto_workers(n) for n in (1, 2, 3, 4, 16)] == [0, 1, 2, 3, 3]
    assert parse_workers(0) == 0 and parse_workers(2) == 2
    assert parse_workers("auto") == auto_workers()


async def test_helpers_give_exactly_the_daemons_own_parse() -> None:
    corpus = [realistic_message(i, seed=3) for i in range(40)] + list(malformed_corpus().values())
    pool = ParsePool(2, min_batch=1)
    try:
        got = await pool.parse_many(corpus)
    finally:
        await pool.close()
    assert len(got) == len(corpus)
    for raw, result in zip(corpus, got, strict=True):
        own = _own_parse(raw)
        if own is None:
            assert result is None  # the daemon meets the error itself
        else:
            assert result is not None and dataclasses.asdict(result) == dataclasses.asdict(own)
    assert pool.parsed == sum(1 for r in got if r is not None) > 40


async def test_small_batches_and_large_messages_stay_in_the_daemon() -> None:
    pool = ParsePool(1, min_batch=16)
    msgs = [realistic_message(i) for i in range(15)]
    assert await pool.parse_many(msgs) == [None] * 15
    assert pool.running == 0  # no helper was started for a push
    big = b"Subject: x\r\nMessage-ID: <big@x>\r\n\r\n" + b"a" * (parsepool.MAX_SHIPPED_BYTES + 1)
    got = await pool.parse_many([*[realistic_message(i) for i in range(16)], big, None])
    await pool.close()
    assert all(r is not None for r in got[:16]) and got[16:] == [None, None]


async def test_a_helper_that_dies_costs_only_speed(caplog: pytest.LogCaptureFixture) -> None:
    pool = ParsePool(1, min_batch=1)
    msgs = [realistic_message(i) for i in range(20)]
    assert all(r is not None for r in await pool.parse_many(msgs))
    [helper] = pool._helpers
    os.kill(helper.proc.pid, signal.SIGKILL)
    helper.proc.wait()
    with caplog.at_level(logging.WARNING, logger="mailfiler.tracking"):
        assert await pool.parse_many(msgs) == [None] * 20  # the worker parses them itself
    assert pool.failures == 1 and "parse helper process failed" in caplog.text
    # the next batch starts a new helper
    assert all(r is not None for r in await pool.parse_many(msgs))
    assert pool.running == 1
    await pool.close()
    assert pool.running == 0


async def test_a_hung_helper_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = ParsePool(1, min_batch=1)
    msgs = [realistic_message(i) for i in range(3)]
    assert all(r is not None for r in await pool.parse_many(msgs))
    [helper] = pool._helpers
    os.kill(helper.proc.pid, signal.SIGSTOP)  # alive, never answers
    monkeypatch.setattr(parsepool, "BATCH_TIMEOUT", 0.5)
    assert await pool.parse_many(msgs) == [None] * 3
    assert pool.failures == 1 and pool.running == 0
    assert helper.proc.returncode == -signal.SIGKILL  # stopped, though it could not even read its EOF
    await pool.close()


async def test_idle_helpers_stop() -> None:
    pool = ParsePool(1, min_batch=1, idle_seconds=0.2)
    await pool.parse_many([realistic_message(1)])
    [helper] = pool._helpers
    for _ in range(100):
        if pool.running == 0 and helper.proc.returncode is not None:
            break
        await asyncio.sleep(0.05)
    assert pool.running == 0 and helper.proc.returncode == 0  # it exited on EOF, not killed


def test_a_process_that_forgets_close_leaves_no_helper() -> None:
    """An embedder (or a test) that never calls close(): the helpers end with the process."""
    script = (
        "import asyncio, sys\n"
        "from mailfiler.tracking.parsepool import ParsePool\n"
        "from tests.mailgen import realistic_message\n"
        "pool = ParsePool(1, min_batch=1)\n"
        "assert asyncio.run(pool.parse_many([realistic_message(1)]))[0] is not None\n"
        "print(pool._helpers[0].proc.pid)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, cwd=REPO
    )
    pid = int(out.stdout)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"parse helper {pid} outlived its daemon")


def test_a_pool_outlives_its_event_loop() -> None:
    """Tests and embedders run several event loops in one process: no pipe belongs to a loop."""
    pool = ParsePool(1, min_batch=1)
    msgs = [realistic_message(i) for i in range(3)]
    first = asyncio.run(pool.parse_many(msgs))
    old = pool._helpers[0].proc.pid
    second = asyncio.run(pool.parse_many(msgs))
    assert all(r is not None for r in first + second)
    assert pool._helpers[0].proc.pid == old
    asyncio.run(pool.close())


async def test_read_ahead_parses_ahead_and_writes_attachments_of_tracked_folders(tmp_path: Path) -> None:
    """Parsed ahead, and the files of attachments over INLINE_MAX written ahead (the
    tracker finds them stored) and their bytes dropped from the parse; smaller ones
    are left to their rows."""
    folder = "Tracked/Contoso"
    folder_dir = make_maildir_folder(maildirpp_folder_dir(tmp_path / "mail", folder))
    (folder_dir / "maildirfolder").touch()
    for i in range(30):
        drop_into_maildir(folder_dir, realistic_message(i), fsync=False)
    for i in range(3):
        big = os.urandom(INLINE_MAX + 1000)
        drop_into_maildir(folder_dir, make_message(f"<big{i}@x>", attachments=[("scan.pdf", big)]), fsync=False)
    source = MaildirSource(tmp_path / "mail")
    listing = await source.list_messages(folder)
    todo = sorted(listing.messages)
    blobs = BlobStore(tmp_path / "state")
    large = 0
    pool = ParsePool(1, min_batch=1)
    ahead = ReadAhead(source, folder, todo, dict(listing.messages), 10**8, parser=pool, blobs=blobs)
    try:
        for sid in todo:
            raw = await ahead.get(sid)
            assert isinstance(raw, bytes)
            parsed = ahead.parsed(sid)
            assert parsed is not None
            here = parse_message(raw)
            for part, mine in zip(parsed.attachments, here.attachments, strict=True):
                digest = hashlib.sha256(mine.data).hexdigest()
                if inline(mine.data):
                    assert part == mine
                    assert not blobs.path(digest).exists()
                else:
                    large += 1  # written ahead, and its bytes no longer held by the parsed message
                    assert blobs.path(digest).read_bytes() == mine.data
                    assert (part.data, part.sha256, part.nbytes) == (b"", digest, len(mine.data))
                    part.data, part.sha256, part.stored_size = mine.data, None, 0
            assert dataclasses.asdict(parsed) == dataclasses.asdict(here)
    finally:
        await ahead.aclose()
        await pool.close()
    assert pool.parsed == 33
    assert large == 3
