"""Track by tag on EWS (the fake Exchange): with the all-folders stream live, a tag pass
walks only the folders the stream named since the last pass (an idle pass is the one
FindFolder); a category set in a folder not watched wakes a pass (a ``tags`` change) that
walks that folder alone and reports the message; a lost stream walks every folder again."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest
from exchangelib.protocol import close_connections

from mailfiler.sources.base import Change, TagQuery
from mailfiler.sources.ews import EwsSettings, EwsSource
from mailfiler.util.secrets import SecretProvider
from tests.servers.ews import EwsServer

ALICE = "alice@example.com"
QUERY = TagQuery(frozenset({"CRM"}), ("CRM:",))


@pytest.fixture
def server() -> Iterator[EwsServer]:
    folders = ["Inbox/Tracked", "Projekt", *(f"Archive/{y}" for y in range(2018, 2024))]
    with EwsServer([{"smtp": ALICE, "password": "pw", "folders": folders}]) as fake:
        fake.hub.heartbeat = 0.5
        yield fake
    close_connections()


def source(server: EwsServer) -> EwsSource:
    secret = SecretProvider("test", password_command=["printf", "pw"])
    settings = EwsSettings(url=server.ews_url, username=ALICE, secret=secret, auth="basic", mailbox=ALICE,
                           version="2016")  # fmt: skip
    return EwsSource(dataclasses.replace(settings, tag_events=True))


async def one_pass(src: EwsSource, server: EwsServer, cursors: dict[str, str | None]) -> tuple[dict, list[str]]:
    before = len(server.requests)
    got: dict[str, dict[str, set[str]]] = {}
    async for delta in src.tag_changes(cursors, QUERY):
        if delta.changes:
            got[delta.folder] = {c.source_id: set(c.tags) for c in delta.changes}
        if delta.token is not None:
            cursors[delta.folder] = delta.token
    ops = [r.operation for r in list(server.requests)[before:]]
    return got, ops


async def test_a_live_stream_narrows_the_tag_pass_to_the_folders_it_named(server: EwsServer) -> None:
    src = source(server)
    await src.open()
    item = server.deliver(ALICE, b"Subject: x\r\nMessage-ID: <x@example.org>\r\n\r\nhi\r\n", "Projekt")
    stop = asyncio.Event()
    heard: list[Change] = []

    async def watch() -> None:
        async for batch in src.watch(["INBOX/Tracked"], stop):
            heard.extend(batch)

    task = asyncio.create_task(watch())
    try:
        for _ in range(100):
            await asyncio.sleep(0.1)
            if src.tag_dirty.live:
                break
        assert src.tag_dirty.live
        cursors: dict[str, str | None] = {}
        got, ops = await one_pass(src, server, cursors)  # after a subscription: every folder
        assert got == {} and ops.count("SyncFolderItems") == len(cursors) >= 9
        got, ops = await one_pass(src, server, cursors)  # idle: the folder tree alone
        assert got == {} and ops == ["FindFolder"]

        await asyncio.to_thread(server.set_categories, item, ["CRM"])
        for _ in range(50):
            await asyncio.sleep(0.1)
            if any(c.kind == "tags" for c in heard):
                break
        assert Change("tags", "*") in heard  # Projekt is not watched: the all-folders stream told
        got, ops = await one_pass(src, server, cursors)
        assert got == {"Projekt": {item: {"CRM"}}}
        assert ops == ["FindFolder", "SyncFolderItems"]

        server.drop_streams()  # events may be lost meanwhile: every folder once more
        for _ in range(100):
            await asyncio.sleep(0.1)
            if src.tag_dirty.folders is None:
                break
        got, ops = await one_pass(src, server, cursors)
        assert got == {} and ops.count("SyncFolderItems") == len(cursors)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await src.close()
