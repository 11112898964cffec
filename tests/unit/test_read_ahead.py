"""The worker's read-ahead on a real Maildir: closing it never swallows the
cancellation of the scan that closes it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailfiler.service import readahead
from mailfiler.service.readahead import ReadAhead
from mailfiler.sources.maildir import MaildirSource
from tests.mailgen import drop_into_maildir, maildirpp_folder_dir, make_maildir_folder, realistic_message

FOLDER = "Tracked/Contoso"


async def test_a_scan_cancelled_while_its_read_ahead_closes_stays_cancelled(tmp_path: Path) -> None:
    folder_dir = make_maildir_folder(maildirpp_folder_dir(tmp_path, FOLDER))
    (folder_dir / "maildirfolder").touch()
    # more than the first batches: the producer is still reading ahead when the scan stops
    for i in range(readahead.FIRST_COUNT * (readahead.DEPTH + 3)):
        drop_into_maildir(folder_dir, realistic_message(i), fsync=False)
    source = MaildirSource(tmp_path)
    listing = await source.list_messages(FOLDER)
    todo = sorted(listing.messages)
    reached_the_end = False

    async def scan() -> None:
        nonlocal reached_the_end
        ahead = ReadAhead(source, FOLDER, todo, dict(listing.messages), 10**6)
        assert isinstance(await ahead.get(todo[0]), bytes)  # the next batches are now being read
        assert ahead._producer is not None and not ahead._producer.done()
        asyncio.current_task().cancel()  # the daemon stops this scan
        await ahead.aclose()
        reached_the_end = True

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(scan())
    assert not reached_the_end
