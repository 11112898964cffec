"""Streaming notifications shared by the mailboxes of one service account (the fake Exchange):
subscriptions grouped on few connections, kept on one mailbox server by the affinity cookie,
and each mailbox told only of its own changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import pytest
from exchangelib.protocol import close_connections

from mailfiler.sources.base import Change
from mailfiler.sources.ews import EwsSettings, EwsSource, streams
from mailfiler.util.secrets import SecretProvider
from tests.servers.ews import EwsServer

N = 12
MAILBOXES = [f"user{n:02d}@example.com" for n in range(N)]


@pytest.fixture
def server() -> Iterator[EwsServer]:
    users = [{"smtp": m, "password": "pw", "folders": ["Inbox/Tracked"]} for m in MAILBOXES]
    users.append({"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": ["*"]})
    with EwsServer(users, backends=4) as fake:  # the mailboxes live on four mailbox servers
        fake.hub.heartbeat = 0.5
        yield fake
    close_connections()


def source(server: EwsServer, mailbox: str) -> EwsSource:
    secret = SecretProvider("test", password_command=["printf", "pw-svc"])
    return EwsSource(EwsSettings(url=server.ews_url, username="svc", secret=secret, auth="ntlm",
                                 mailbox=mailbox, impersonate=True, version="2016"))  # fmt: skip


async def test_many_mailboxes_share_one_stream_and_hear_only_their_own_mail(
    server: EwsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len({server.backend_of(m) for m in MAILBOXES}) > 1  # grouping needs the affinity cookie
    sources = [source(server, m) for m in MAILBOXES]
    for s in sources:
        await s.open()
    stop = asyncio.Event()
    heard: dict[str, list[Change]] = {m: [] for m in MAILBOXES}

    async def watch(s: EwsSource) -> None:
        async for batch in s.watch(["INBOX/Tracked"], stop):
            heard[s.settings.mailbox].extend(c for c in batch if c.kind == "added")

    tasks = [asyncio.create_task(watch(s)) for s in sources]
    try:
        for _ in range(100):  # every mailbox subscribed and in the group's stream
            await asyncio.sleep(0.1)
            if len(server.subscriptions()) == N and server.hub.open_streams["svc@example.com"] >= 1:
                break
        await asyncio.sleep(0.5)
        ids = {m: await asyncio.to_thread(server.deliver, m, f"Subject: {m}\r\n\r\nhi\r\n".encode(), "Inbox/Tracked")
               for m in MAILBOXES}  # fmt: skip
        for _ in range(100):
            if all(any(c.source_id == ids[m] for c in heard[m]) for m in MAILBOXES):
                break
            await asyncio.sleep(0.1)
        for m in MAILBOXES:
            assert [c.source_id for c in heard[m]] == [ids[m]], m  # its own mail, once
        hub = streams.hub_for(sources[0].client)
        assert len(hub.groups) == 1 and len(hub.groups[0].members) == N
        # one stream for twelve mailboxes (Exchange allows the account three)
        streaming = [o for o in server.operations() if o == "GetStreamingEvents"]
        assert server.hub.open_streams["svc@example.com"] <= 2  # the live one (+ one just cut)
        assert streaming
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
    assert server.subscriptions() == []  # every mailbox unsubscribed on its way out


async def test_groups_are_capped_at_the_connection_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams, "GROUP_SIZE", 2)
    hub = streams.StreamHub()
    picked = []
    for _ in range(8):
        group = hub._pick()
        group.members[str(len(picked))] = None  # type: ignore[assignment]
        picked.append(group)
    assert len(hub.groups) == streams.MAX_GROUPS == 3
    assert sorted(len(g.members) for g in hub.groups) == [2, 3, 3]  # full groups shared, never a fourth
