"""The existing mailbox worker on an ImapSource: backfill, a pushed move, and a
UIDVALIDITY change, against Dovecot and SQLite.  (The config does not know
IMAP yet: the runtime's Maildir source is swapped for an ImapSource.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfiler.config.schema import Config
from mailfiler.service.runtime import MailboxRuntime, Services, build_services
from mailfiler.service.worker import MailboxWorker
from mailfiler.sources.base import Change
from mailfiler.sources.imap import ImapSettings, ImapSource
from mailfiler.store import db as storedb
from mailfiler.store import models as m
from mailfiler.store.migrations import migrate
from tests.servers.dovecot import ImapUser
from tests.store.helpers import mailbox_config, make_message

CONTOSO, UNFILED = "Tracked/Contoso Åb", "Tracked/Unfiled"


@pytest.fixture
async def tracked(imap_user: ImapUser, tmp_path: Path) -> AsyncIterator[tuple[MailboxRuntime, Services]]:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    db = storedb.connect(url)
    migrate(db)
    config = Config(
        database=url,
        state_dir=tmp_path / "state",
        mailboxes=[
            mailbox_config(
                "alice", "alice@example.com", tmp_path / "unused", {CONTOSO: "account:contoso", UNFILED: None}
            )
        ],  # type: ignore[list-item]
        records=[{"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]}],  # type: ignore[list-item]
    )
    services = build_services(db, config)
    rt = services.mailboxes["alice"]
    rt.source = ImapSource(ImapSettings(**imap_user.settings_kwargs(), timeout=10))
    await rt.source.open()
    try:
        yield rt, services
    finally:
        await rt.source.close()
        db.close()


def regarding_of(message_id: str) -> str | None:
    activity = m.Activity.get(m.Activity.message_id == message_id)
    return activity.regarding.ref if activity.regarding else None


def live_folders(message_id: str) -> set[str]:
    activity = m.Activity.get(m.Activity.message_id == message_id)
    return {
        loc.folder
        for loc in m.Location.select().where((m.Location.activity == activity) & m.Location.gone_at.is_null())
    }


async def test_backfill_then_a_pushed_move_then_a_new_uidvalidity(
    tracked: tuple[MailboxRuntime, Services], imap_user: ImapUser
) -> None:
    rt, services = tracked
    for folder in (CONTOSO, UNFILED):
        imap_user.create_folder(folder)
    ids = [f"<m{i}@contoso.com>" for i in range(3)]
    raws = [make_message(mid, sender="Anna <anna@contoso.com>", subject=f"Offert {i}") for i, mid in enumerate(ids)]
    with imap_user.client() as client:
        uids = [client.append(CONTOSO, raw.replace(b"\n", b"\r\n")) for raw in raws]

    worker = MailboxWorker(rt, services)
    result = await worker.scan_folder(CONTOSO)
    assert result.new == 3 and not result.shunted
    assert m.Activity.select().count() == 3
    assert {regarding_of(mid) for mid in ids} == {"account:contoso"}

    # a client moves one message; the pushed gone + added re-locate it
    stop = asyncio.Event()
    batches: asyncio.Queue[list[Change]] = asyncio.Queue()

    async def pump() -> None:
        async for batch in rt.source.watch([CONTOSO, UNFILED], stop):
            batches.put_nowait(batch)

    task = asyncio.create_task(pump())
    try:
        await worker.handle(await asyncio.wait_for(batches.get(), 15))  # the initial rescan
        with imap_user.client() as client:
            client.move(CONTOSO, uids[0], UNFILED)
        deadline = asyncio.get_running_loop().time() + 5
        while live_folders(ids[0]) != {UNFILED}:
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, f"the move was not followed: {live_folders(ids[0])}"
            await worker.handle(await asyncio.wait_for(batches.get(), left))
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert m.Activity.select().count() == 3
    assert regarding_of(ids[0]) == "account:contoso"  # Unfiled has no regarding: kept

    # the folder is deleted and made again with the same mail: all UIDs are void
    imap_user.server.doveadm("mailbox", "delete", "-s", "-u", imap_user.name, CONTOSO)
    imap_user.create_folder(CONTOSO)
    with imap_user.client() as client:
        for raw in raws[1:]:
            client.append(CONTOSO, raw.replace(b"\n", b"\r\n"))
    await worker.scan_folder(CONTOSO)
    assert m.Activity.select().count() == 3  # re-identified by Message-ID: no duplicates
    assert live_folders(ids[1]) == {CONTOSO}
    live = m.Location.select().where(m.Location.gone_at.is_null() & (m.Location.folder == CONTOSO))
    assert {loc.source_id for loc in live} == set((await rt.source.list_messages(CONTOSO)).messages)
