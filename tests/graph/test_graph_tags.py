"""Track by tag on Graph (the Graph fake): a tag pass skips the folders the watcher polls
and saw nothing change in since the last pass, walks those it saw change and those it
does not poll; a category PATCHed in a polled folder is a ``tags`` change and the next
pass walks that folder; an expired tag delta link looks afresh."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import unquote

import pytest

from mailfiler.sources.base import Change, TagQuery
from mailfiler.sources.graph.source import GraphSource
from tests.graph.helpers import UPN, source, tenant
from tests.servers.graph import GraphFake
from tests.servers.tls import Tls

QUERY = TagQuery(frozenset({"CRM"}), ("CRM:",))


@pytest.fixture
def graph(graph_tls: Tls) -> Iterator[GraphFake]:
    with GraphFake(graph_tls) as fake:
        tenant(fake, ["Projekt", "Archive/2023"])
        yield fake


def deltas(graph: GraphFake, before: int, fids: dict[str, str]) -> list[str]:
    """The folders whose message delta was asked for since ``before`` requests."""
    names = {v: k for k, v in fids.items()}
    out = []
    for r in list(graph.server.requests)[before:]:
        path = unquote(r.path)
        if "/messages/delta" in path:
            out += [n for fid, n in names.items() if fid in path]
    return sorted(out)


async def one_pass(src: GraphSource, cursors: dict[str, str | None]) -> dict[str, dict[str, set[str]]]:
    got: dict[str, dict[str, set[str]]] = {}
    async for delta in src.tag_changes(cursors, QUERY):
        if delta.changes:
            got[delta.folder] = {c.source_id: set(c.tags) for c in delta.changes}
        if delta.token is not None:
            cursors[delta.folder] = delta.token
    return got


async def test_the_tag_pass_skips_polled_folders_that_did_not_change(graph: GraphFake) -> None:
    src = source(graph, tag_events=True)
    await src.open()
    msg = graph.deliver(UPN, "Projekt", b"Subject: x\r\nMessage-ID: <x@example.org>\r\n\r\nhi\r\n")
    fids = {p: await src.tree.resolve(p) for p in await src.list_folders()}
    stop = asyncio.Event()
    heard: list[Change] = []

    async def watch() -> None:
        async for batch in src.watch(["INBOX", "Projekt"], stop):
            heard.extend(batch)

    task = asyncio.create_task(watch())
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if {"inbox", "projekt"} <= src.tag_watched.live:
                break
        cursors: dict[str, str | None] = {}
        n = len(graph.server.requests)
        assert await one_pass(src, cursors) == {}
        walked = deltas(graph, n, fids)
        assert "Projekt" in walked and "Archive/2023" in walked  # the first pass: every folder
        n = len(graph.server.requests)
        assert await one_pass(src, cursors) == {}
        idle = deltas(graph, n, fids)
        assert "Projekt" not in idle and "INBOX" not in idle and "Archive/2023" in idle  # not polled

        await asyncio.to_thread(graph.set_categories, UPN, msg, ["CRM"])
        for _ in range(100):
            await asyncio.sleep(0.05)
            if Change("tags", "*") in heard:
                break
        assert Change("tags", "*") in heard
        n = len(graph.server.requests)
        assert await one_pass(src, cursors) == {"Projekt": {msg.immutable_id: {"CRM"}}}
        assert "Projekt" in deltas(graph, n, fids)

        graph.expire_delta_tokens(UPN)  # the tag links too: looked at afresh, the tagged message again
        await asyncio.sleep(0.5)
        got = await one_pass(src, cursors)
        assert got.get("Projekt") == {msg.immutable_id: {"CRM"}}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await src.close()
