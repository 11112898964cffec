"""Reading messages over IMAP: never \\Seen, batches of at most 400 UIDs, big
messages, UIDVALIDITY changes, calls without open()."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfiler.errors import MessageVanished
from mailfiler.sources import imapfetch
from mailfiler.sources import imapproto as proto
from mailfiler.sources.imap import ImapSettings, ImapSource
from mailfiler.sources.imapconn import ImapConnection
from tests.mailgen import large_attachment_message, realistic_message
from tests.servers.dovecot import ImapUser


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
async def source(imap_user: ImapUser) -> AsyncIterator[ImapSource]:
    src = ImapSource(ImapSettings(**imap_user.settings_kwargs(), timeout=20))
    await src.open()
    try:
        yield src
    finally:
        await src.close()


def flags_of(user: ImapUser, folder: str) -> list[str]:
    with user.client() as client:
        client.select(folder, readonly=True)
        _, data = client.imap.uid("FETCH", "1:*", "(FLAGS)")
    return sorted(x.decode() for x in data if isinstance(x, bytes))


async def test_reading_keeps_mail_unseen_and_recent(source: ImapSource, imap_user: ImapUser, tmp_path: Path) -> None:
    data = crlf(realistic_message(1, with_attachment_every=1))
    with imap_user.client() as client:
        client.append("INBOX", data)
    before = flags_of(imap_user, "INBOX")
    assert "\\Seen" not in before[0] and "\\Recent" in before[0]
    (sid,) = (await source.list_messages("INBOX")).messages
    assert await source.size("INBOX", sid) == len(data)
    assert await source.fetch("INBOX", sid) == data
    assert await source.copy_raw("INBOX", sid, None, str(tmp_path / "copy"))
    assert [s async for s, _ in source.fetch_many("INBOX", [sid])] == [sid]
    assert await source.sizes("INBOX") == {sid: len(data)}
    assert flags_of(imap_user, "INBOX") == before


async def test_two_thousand_messages_in_batches(
    source: ImapSource, imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """aioimaplib 2.0.3 hits RecursionError and hangs on a 2,000-message FETCH
    (libs.md); every FETCH here names at most 400 UIDs."""
    messages = [crlf(realistic_message(i, with_attachment_every=0, seed=7)) for i in range(2000)]
    imap_user.seed("Archive", messages)
    fetches: list[int] = []
    original = ImapConnection.uid_fetch

    async def counting(self: ImapConnection, uids: str, items: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
        fetches.append(sum(1 for _ in proto.parse_uid_set(uids)))
        return await original(self, uids, items, timeout)

    monkeypatch.setattr(ImapConnection, "uid_fetch", counting)
    caplog.set_level(logging.ERROR)
    started = time.monotonic()
    listing = await source.list_messages("Archive")
    assert len(listing.messages) == 2000
    sids = list(listing.messages)
    sizes = await source.sizes("Archive")
    assert sorted(sizes) == sorted(sids)
    got = {sid: raw async for sid, raw in source.fetch_many("Archive", sids, sizes=sizes)}
    elapsed = time.monotonic() - started
    assert len(got) == 2000
    assert sorted(got.values()) == sorted(messages)
    assert all(sizes[sid] == len(raw) for sid, raw in got.items())
    assert fetches and max(fetches) <= proto.FETCH_BATCH
    assert sum(fetches) == 4000  # sizes, then bodies
    assert not [r for r in caplog.records if "Fatal error" in r.getMessage()]
    assert elapsed < 60, f"2,000 messages took {elapsed:.1f} s"


async def test_fetch_many_also_bounds_bytes(
    source: ImapSource, imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [crlf(realistic_message(i, seed=3)) for i in range(30)]
    imap_user.seed("INBOX", messages)
    sids = sorted((await source.list_messages("INBOX")).messages, key=lambda s: int(s.split(":")[1]))
    fetches: list[str] = []
    original = ImapConnection.uid_fetch

    async def spying(self: ImapConnection, uids: str, items: str, timeout: float | None = None):  # type: ignore[no-untyped-def]
        if "BODY.PEEK" in items:
            fetches.append(uids)
        return await original(self, uids, items, timeout)

    monkeypatch.setattr(ImapConnection, "uid_fetch", spying)
    got = [sid async for sid, _ in source.fetch_many("INBOX", sids, max_batch_bytes=60_000)]
    assert got == sids  # in the order asked for
    assert len(fetches) > 3


async def test_a_big_message_is_fetched_and_streamed(
    source: ImapSource, imap_user: ImapUser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = crlf(large_attachment_message(9_000_000))  # about 12 MB on the wire
    with imap_user.client() as client:
        client.append("INBOX", data)
    (sid,) = (await source.list_messages("INBOX")).messages
    assert await source.fetch("INBOX", sid) == data
    monkeypatch.setattr(imapfetch, "COPY_CHUNK", 1_000_000)
    dest = tmp_path / "big.eml"
    assert await source.copy_raw("INBOX", sid, None, str(dest))
    assert dest.read_bytes() == data


async def test_a_new_uidvalidity_voids_the_old_ids(source: ImapSource, imap_user: ImapUser) -> None:
    data = b"Subject: same\r\nMessage-ID: <same@x>\r\n\r\nbody\r\n"
    imap_user.create_folder("Archive")
    with imap_user.client() as client:
        client.append("Archive", data)
    (old,) = (await source.list_messages("Archive")).messages
    imap_user.server.doveadm("mailbox", "delete", "-u", imap_user.name, "Archive")
    imap_user.create_folder("Archive")
    with imap_user.client() as client:
        client.append("Archive", data)
    (new,) = (await source.list_messages("Archive")).messages
    assert proto.split_source_id(new)[0] != proto.split_source_id(old)[0]  # type: ignore[index]
    assert proto.split_source_id(new)[1] == proto.split_source_id(old)[1]  # type: ignore[index]  # the same UID
    with pytest.raises(MessageVanished, match="UIDVALIDITY"):
        await source.fetch("Archive", old)
    with pytest.raises(MessageVanished):
        await source.size("Archive", old)
    assert await source.fetch("Archive", new) == data


async def test_an_id_of_another_backend_is_vanished(source: ImapSource) -> None:
    with pytest.raises(MessageVanished):
        await source.fetch("INBOX", "1700000000.M1P2Q3.host")


async def test_calls_without_open_use_a_connection_of_their_own(imap_user: ImapUser) -> None:
    with imap_user.client() as client:
        client.append("INBOX", b"Subject: one-off\r\n\r\nx\r\n")
    src = ImapSource(ImapSettings(**imap_user.settings_kwargs(), timeout=10))
    (sid,) = (await src.list_messages("INBOX")).messages
    assert await src.fetch("INBOX", sid) == b"Subject: one-off\r\n\r\nx\r\n"
    who = imap_user.server.doveadm("who", "-1", imap_user.name, check=False).stdout.decode()
    assert imap_user.name not in who  # logged out again
