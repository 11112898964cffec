"""Push over IMAP beyond the contract: connection budget, bursts, UIDVALIDITY,
folders that come and go, LMTP delivery, latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from mailfiler.sources import imapwatch
from mailfiler.sources.base import Change
from mailfiler.sources.imap import ImapSettings, ImapSource
from tests.contract.source_contract import WatchRecorder
from tests.mailgen import realistic_message
from tests.servers.dovecot import ImapUser

#: Dovecot delays pushes by 0.5 s; this leaves room for a loaded CI machine
LATENCY = 2.5


def msg(i: int) -> bytes:
    return realistic_message(i, with_attachment_every=0, seed=11).replace(b"\n", b"\r\n")


@asynccontextmanager
async def watching(user: ImapUser, folders: list[str], **kw: object) -> AsyncIterator[tuple[ImapSource, WatchRecorder]]:
    """A source watching ``folders``, past its initial rescan."""
    source = ImapSource(ImapSettings(**{**user.settings_kwargs(), "timeout": 10.0, **kw}))  # type: ignore[arg-type]
    await source.open()
    rec = WatchRecorder(source, folders)
    rec.start()
    try:
        got = await rec.wait_for(lambda cs: any(c.kind == "rescan" for c in cs), 15, what="the initial rescan")
        assert sorted(c.folder for c in got if c.kind == "rescan") == sorted(folders)
        rec.changes.clear()
        yield source, rec
    finally:
        await rec.close()
        await source.close()


def connections(user: ImapUser) -> int:
    out = user.server.doveadm("who", "-1", user.name, check=False).stdout.decode()
    return sum(1 for line in out.splitlines() if line.split()[:1] == [user.name])


def added_in(changes: list[Change], folder: str) -> set[str]:
    return {c.source_id for c in changes if c.kind == "added" and c.folder == folder and c.source_id}


@pytest.mark.parametrize(
    ("strategy", "kw", "max_connections"),
    [
        ("notify", {}, 2),
        ("idle+poll", {"use_notify": False, "max_idle": 3, "poll_interval": 0.5}, 4),
        ("idle+poll, max_idle too high", {"use_notify": False, "max_idle": 20, "poll_interval": 0.5}, 5),
    ],
)
async def test_fifty_folders_within_the_connection_budget(
    imap_user: ImapUser, strategy: str, kw: dict, max_connections: int
) -> None:
    """Dovecot allows 10 connections per user and IP: 50 tracked folders must
    leave room for the user's own mail clients."""
    folders = [f"Kunder/Kund {i:02d} Åb" for i in range(50)]
    for folder in folders:
        imap_user.create_folder(folder)
    async with watching(imap_user, folders, **kw) as (_, rec):
        assert connections(imap_user) <= max_connections
        with imap_user.client() as client:
            client.append(folders[0], msg(1))  # IDLEd on in both strategies
            client.append(folders[37], msg(2))  # polled without NOTIFY
        got = await rec.wait_for(
            lambda cs: added_in(cs, folders[0]) and added_in(cs, folders[37]), LATENCY, what="both arrivals"
        )
        assert {(c.kind, c.folder) for c in got} == {("added", folders[0]), ("added", folders[37])}
        assert connections(imap_user) <= max_connections


@pytest.mark.parametrize("use_notify", [True, False], ids=["notify", "idle"])
async def test_a_mass_expunge_burst_is_reported(imap_user: ImapUser, use_notify: bool) -> None:
    """2,000 EXPUNGE lines arrive at once on the listening connection (aioimaplib
    2.0.3 recurses once per line there)."""
    imap_user.seed("INBOX", [msg(i) for i in range(2000)])
    async with watching(imap_user, ["INBOX"], use_notify=use_notify) as (source, rec):
        before = set((await source.list_messages("INBOX")).messages)
        assert len(before) == 2000
        with imap_user.client() as client:
            client.select("INBOX")
            client.imap.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
            client.imap.expunge()
        got = await rec.wait_for(lambda cs: sum(c.kind == "gone" for c in cs) >= 2000, LATENCY + 5, what="2,000 gone")
        assert {c.source_id for c in got if c.kind == "gone"} == before
        assert all(c.kind == "gone" for c in got)


async def test_a_new_uidvalidity_is_a_rescan(imap_user: ImapUser) -> None:
    imap_user.create_folder("Archive")
    async with watching(imap_user, ["Archive"], sweep_interval=0.5) as (source, rec):
        imap_user.server.doveadm("mailbox", "delete", "-u", imap_user.name, "Archive")
        imap_user.create_folder("Archive")
        with imap_user.client() as client:
            client.append("Archive", msg(3))
        await rec.wait_for(lambda cs: ("rescan", "Archive") in {(c.kind, c.folder) for c in cs}, LATENCY)
        (sid,) = (await source.list_messages("Archive")).messages
        assert await source.fetch("Archive", sid) == msg(3)


async def test_a_tracked_folder_that_appears_or_goes_is_a_rescan(imap_user: ImapUser) -> None:
    async with watching(imap_user, ["Later"], sweep_interval=0.5) as (_, rec):
        imap_user.create_folder("Later")
        await rec.wait_for(lambda cs: [(c.kind, c.folder) for c in cs] == [("rescan", "Later")], LATENCY)
        rec.changes.clear()
        with imap_user.client() as client:
            client.append("Later", msg(4))
        await rec.wait_for(lambda cs: bool(added_in(cs, "Later")), LATENCY)
        rec.changes.clear()
        imap_user.server.doveadm("mailbox", "delete", "-u", imap_user.name, "Later")
        await rec.wait_for(lambda cs: [(c.kind, c.folder) for c in cs] == [("rescan", "Later")], LATENCY)


async def test_a_deleted_folder_is_noticed_by_push(imap_user: ImapUser) -> None:
    """NOTIFY's MailboxName event (``LIST (\\NonExistent)``): no wait for a sweep."""
    imap_user.create_folder("Doomed")
    async with watching(imap_user, ["Doomed"], sweep_interval=600, quick_sweep=0) as (_, rec):
        with imap_user.client() as client:
            client._ok(client.imap.delete(client.box("Doomed")), "DELETE")
        await rec.wait_for(lambda cs: [(c.kind, c.folder) for c in cs] == [("rescan", "Doomed")], LATENCY)


async def test_list_status_in_one_round_trip(imap_user: ImapUser) -> None:
    folders = ["Kunder/Åkesson AB", "Archive", "INBOX", "Nowhere", "odd * name"]
    for folder in ("Kunder/Åkesson AB", "Archive", "odd * name", "odd x name"):
        imap_user.create_folder(folder)
    with imap_user.client() as client:
        uid = client.append(folders[0], msg(1))
        client.append("odd x name", msg(2))
    source = ImapSource(ImapSettings(**{**imap_user.settings_kwargs(), "timeout": 10.0}))  # type: ignore[arg-type]
    await source.open()
    try:
        assert source.has("LIST-STATUS")
        async with source.session() as conn:
            await conn.examine("Archive")  # the selected one is looked at afresh
            got = await conn.list_status(folders)
            single = {f: await conn.status(f) for f in folders}
        assert got == single
        assert got["Kunder/Åkesson AB"] == {
            "MESSAGES": 1,
            "UIDNEXT": uid + 1,
            "UIDVALIDITY": got[folders[0]]["UIDVALIDITY"],
        }  # type: ignore[index]
        assert got["Nowhere"] is None and got["odd * name"]["MESSAGES"] == 0  # type: ignore[index]
    finally:
        await source.close()


async def test_a_push_that_never_comes_is_made_up_by_the_quick_sweep(
    imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dovecot's NOTIFY at times goes quiet (bench/README.md); here it is made deaf:
    the one-command LIST-STATUS sweep still reports the arrival within seconds."""
    imap_user.create_folder("Quiet")
    async with watching(imap_user, ["Quiet"], sweep_interval=600, quick_sweep=0.5) as (_, rec):
        monkeypatch.setattr(imapwatch.Listener, "_report", lambda self, lines: None)
        with imap_user.client() as client:
            client.append("Quiet", msg(3))
        await rec.wait_for(lambda cs: bool(added_in(cs, "Quiet")), LATENCY)


async def test_server_side_delivery_is_reported(imap_user: ImapUser) -> None:
    async with watching(imap_user, ["INBOX"]) as (source, rec):
        imap_user.deliver(msg(5))  # LMTP, as the MTA does
        got = await rec.wait_for(lambda cs: bool(added_in(cs, "INBOX")), LATENCY)
        (sid,) = added_in(got, "INBOX")
        raw = await source.fetch("INBOX", sid)
        assert b"Message-ID:" in raw


async def test_push_latency(imap_user: ImapUser) -> None:
    """Drop-to-reported latency for 8 APPENDs into watched folders (Dovecot itself
    holds pushes back 0.5 s); the bench measures this properly."""
    folders = ["INBOX", "Kunder/Åkesson AB"]
    imap_user.create_folder(folders[1])
    delays = []
    async with watching(imap_user, folders) as (_, rec):
        with imap_user.client() as client:
            for i in range(8):
                folder = folders[i % 2]
                rec.changes.clear()
                started = time.monotonic()
                client.append(folder, msg(100 + i))
                await rec.wait_for(lambda cs, f=folder: bool(added_in(cs, f)), LATENCY)
                delays.append(time.monotonic() - started)
    median = statistics.median(delays)
    print(f"IMAP push latency: median {median:.3f} s, max {max(delays):.3f} s")
    assert median < 1.5


async def test_a_message_that_comes_and_goes_between_two_looks_is_reported_gone(imap_user: ImapUser) -> None:
    """A client files mail quickly: APPEND then UID MOVE out before the watcher
    diffs the folder.  The consumer may have listed it meanwhile, so the watcher
    must report it gone (a stale location otherwise stays forever)."""
    from mailfiler.sources.imapwatch import FolderDiffer

    with imap_user.client() as admin:
        admin.create("A")
        admin.create("B")
    source = ImapSource(ImapSettings(**{**imap_user.settings_kwargs(), "timeout": 10.0}))  # type: ignore[arg-type]
    await source.open()
    try:
        differ = FolderDiffer(source)
        await differ.baseline("A")
        with imap_user.client() as admin:
            uid = admin.append("A", msg(1))
            admin.move("A", uid, "B")
        changes = await differ.check("A")
        assert [c.kind for c in changes] == ["gone"] and changes[0].source_id.endswith(f":{uid}")
        assert len((await source.list_messages("B")).messages) == 1
    finally:
        await source.close()
