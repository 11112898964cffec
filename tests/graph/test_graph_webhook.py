"""Change notifications from the Graph fake: the listener answers the validationToken
handshake, a notification makes the watcher read the folder at once (with polling 30 s
apart), one with a wrong clientState does nothing, and subscriptions are deleted at stop."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailfiler.sources.base import Change
from tests.graph.helpers import UPN, source, tenant
from tests.mailgen import realistic_message
from tests.servers.graph import GraphFake
from tests.servers.tls import make_tls

FOLDER = "INBOX/Clients/Acme"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphFake]:
    (tmp_path / "tls").mkdir()
    with GraphFake(make_tls(tmp_path / "tls")) as fake:
        tenant(fake, [FOLDER, "INBOX/Other"])
        fake.subscriptions.allow_http = True  # the fake posts to the plain listener (a proxy's job in production)
        yield fake


async def test_a_notification_makes_the_watcher_look_at_once(graph: GraphFake) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/graph/notifications"
    src = source(graph, poll_min=30.0, poll_max=30.0, webhook_url=url, webhook_listen=("127.0.0.1", port))
    await src.open()
    stop = asyncio.Event()
    seen: list[tuple[float, Change]] = []

    async def watch() -> None:
        async for batch in src.watch([FOLDER, "INBOX/Other"], stop):
            seen.extend((time.monotonic(), c) for c in batch)

    task = asyncio.create_task(watch())
    try:
        deadline = time.monotonic() + 10
        while len(graph.subscriptions.items) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(graph.subscriptions.items) == 2  # one per folder, after the handshake
        lat = []
        for k in range(5):
            t0 = time.monotonic()
            msg = await asyncio.to_thread(graph.deliver, UPN, FOLDER, realistic_message(k))
            while not any(c.source_id == msg.immutable_id for _, c in seen) and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.01)
            got = [t for t, c in seen if c.source_id == msg.immutable_id and c.kind == "added"]
            assert got, f"no change for delivery {k} within 5 s (polling is 30 s apart)"
            lat.append(got[0] - t0)
        assert max(lat) < 2.0, lat

        # a POST that is not from Graph (no clientState) changes nothing
        before = len(seen)
        async with httpx.AsyncClient() as http:
            r = await http.post(url, json={"value": [{"subscriptionId": "x", "clientState": "forged"}]})
        assert r.status_code == 202
        await asyncio.sleep(0.3)
        assert len(seen) == before
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await src.close()
    assert graph.subscriptions.items == {}  # deleted at stop


async def test_the_handshake_echoes_the_token() -> None:
    from mailfiler.sources.graph.webhook import listener

    port = free_port()
    listener("127.0.0.1", port)
    async with httpx.AsyncClient() as http:
        r = await http.post(f"http://127.0.0.1:{port}/n?validationToken=Validation%3A%20Testing%20client")
    assert r.status_code == 200 and r.text == "Validation: Testing client"
    assert r.headers["content-type"].startswith("text/plain")
