"""Cheap catch-up over IMAP from the folder's cursor token, against Dovecot with
QRESYNC, with CONDSTORE alone, and with neither: a restart on an unchanged
2,000-message folder is one EXAMINE; changes cost a UID SEARCH more; a new
UIDVALIDITY lists the folder in full and re-identifies by Message-ID; and the
opt-in keywords $Tracked/$TrackFailed."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailfiler.config.schema import Config
from mailfiler.errors import MailboxUnavailable
from mailfiler.service import readahead
from mailfiler.service.retry import retry
from mailfiler.service.runtime import MailboxRuntime, Services, build_services
from mailfiler.service.worker import MailboxWorker
from mailfiler.sources import imapconn
from mailfiler.sources import imapproto as proto
from mailfiler.sources.base import Change
from mailfiler.sources.imap import Cursor, ImapSettings, ImapSource
from mailfiler.store import db as storedb
from mailfiler.store import models as m
from mailfiler.store.migrations import migrate
from mailfiler.tracking.folders import folder_token
from mailfiler.tracking.pipeline import Tracker
from tests.mailgen import realistic_message
from tests.servers.dovecot import DovecotServer, ImapUser
from tests.store.helpers import mailbox_config, make_message

TRACKED = "Kunder/Åkesson AB"
KEYWORDS = ("$Tracked", "$TrackFailed")
#: what each server mode leaves out of CAPABILITY
MODES = {"qresync": set(), "condstore": {"QRESYNC"}, "plain": {"QRESYNC", "CONDSTORE", "ESEARCH"}}


@pytest.fixture(params=list(MODES))
def mode(request: pytest.FixtureRequest, dovecot: DovecotServer, imap_user: ImapUser) -> Iterator[str]:
    """The session's Dovecot with some capabilities hidden for this test (restored after)."""
    drop = MODES[request.param]
    if drop:
        if not dovecot.full_capabilities:
            dovecot.full_capabilities = tuple(dovecot.capabilities_after_login(imap_user))
        dovecot.set_capabilities(drop)
    try:
        yield request.param
    finally:
        if drop:
            dovecot.set_capabilities(set())


class Commands:
    """Every IMAP command the code under test sends (``UID FETCH 1:3 (...)``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[str] = []
        original = imapconn.ImapConnection.execute
        log = self.sent

        async def execute(self, command, what=None, timeout=None):  # type: ignore[no-untyped-def]
            log.append(f"{command.prefix or ''}{command.name} {' '.join(str(a) for a in command.args)}".strip())
            return await original(self, command, what, timeout)

        monkeypatch.setattr(imapconn.ImapConnection, "execute", execute)

    def clear(self) -> None:
        self.sent.clear()

    def named(self, *prefixes: str) -> list[str]:
        return [c for c in self.sent if c.startswith(prefixes)]


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Commands:
    return Commands(monkeypatch)


class World:
    def __init__(self, user: ImapUser, tmp_path: Path, **settings: object) -> None:
        self.user = user
        self.url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
        self.db = storedb.connect(self.url)
        migrate(self.db)
        self.config = Config(
            database=self.url,
            state_dir=tmp_path / "state",
            mailboxes=[mailbox_config("alice", "alice@example.com", tmp_path / "unused", {TRACKED: "account:akesson"})],  # type: ignore[list-item]
            records=[{"entity": "account", "key": "akesson", "name": "Åkesson AB", "domains": ["akesson.se"]}],  # type: ignore[list-item]
        )
        self.settings = settings
        self.services: Services = build_services(self.db, self.config)
        self.rt: MailboxRuntime = self.services.mailboxes["alice"]
        self.source: ImapSource | None = None

    async def start(self) -> MailboxWorker:
        """A daemon start: a new connection, a new worker, discovery."""
        if self.source is not None:
            await self.source.close()
        kw = {**self.user.settings_kwargs(), "timeout": 10.0, **self.settings}
        self.source = ImapSource(ImapSettings(**kw))  # type: ignore[arg-type]
        self.rt.source = self.source
        await self.source.open()
        worker = MailboxWorker(self.rt, self.services)
        await worker.discover(at_start=True)
        return worker

    async def close(self) -> None:
        if self.source is not None:
            await self.source.close()
        self.db.close()

    def live(self, folder: str) -> set[str]:
        rows = m.Location.select().where(m.Location.gone_at.is_null() & (m.Location.folder == folder))
        return {r.source_id for r in rows}

    def cursor(self, folder: str) -> Cursor | None:
        return Cursor.decode(folder_token(self.rt.ctx.row, folder))


@pytest.fixture
async def world(imap_user: ImapUser, tmp_path: Path) -> AsyncIterator[World]:
    w = World(imap_user, tmp_path)
    try:
        yield w
    finally:
        await w.close()


def offer(i: int) -> bytes:
    return make_message(f"<offer{i}@akesson.se>", sender="Sven <sven@akesson.se>", subject=f"Offert {i}").replace(
        b"\n", b"\r\n"
    )


def timed(t0: float) -> str:
    return f"{(time.perf_counter() - t0) * 1000:.1f} ms"


# --------------------------------------------------------------------------- the source


async def test_tokens_and_list_changes_on_the_source(imap_user: ImapUser, commands: Commands) -> None:
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        uids = [admin.append(TRACKED, offer(i)) for i in range(3)]
    source = ImapSource(ImapSettings(**imap_user.settings_kwargs(), timeout=10))
    await source.open()
    try:
        listing = await source.list_messages(TRACKED)
        cursor = Cursor.decode(listing.token)
        assert cursor is not None and (cursor.uid, cursor.exists) == (uids[-1], 3) and cursor.modseq
        assert list(listing.messages) == [f"{cursor.uidvalidity}:{u}" for u in uids]  # in UID order
        first = Cursor.decode(source.message_token(listing.token or "", next(iter(listing.messages))))
        assert first == Cursor(cursor.uidvalidity, uids[0], cursor.modseq, None)

        commands.clear()
        delta = await source.list_changes(TRACKED, listing.token or "")
        assert delta is not None and delta.empty and Cursor.decode(delta.token) == cursor
        assert commands.sent == [f'EXAMINE "Kunder/&AMU-kesson AB" (QRESYNC ({cursor.uidvalidity} {cursor.modseq}))']

        with imap_user.client() as admin:
            admin.expunge(TRACKED, uids[0])
            new = admin.append(TRACKED, offer(9))
        commands.clear()
        delta = await source.list_changes(TRACKED, listing.token or "")
        assert delta is not None
        assert (list(delta.added), set(delta.gone), delta.present) == (
            [f"{cursor.uidvalidity}:{new}"],
            {f"{cursor.uidvalidity}:{uids[0]}"},
            None,
        )
        assert [c.split()[0:2] for c in commands.sent] == [["EXAMINE", '"Kunder/&AMU-kesson'], ["UID", "SEARCH"]]
        assert f"UID {uids[-1] + 1}:*" in commands.sent[1]

        # tokens it cannot use: another backend's, damaged, another UIDVALIDITY
        assert await source.list_changes(TRACKED, "not json") is None
        other = Cursor(cursor.uidvalidity + 1, 5, None, None).encode()
        assert await source.list_changes(TRACKED, other) is None
    finally:
        await source.close()


# --------------------------------------------------------------------------- the worker


async def test_a_restart_on_an_unchanged_2000_message_folder_is_one_examine(
    mode: str, world: World, imap_user: ImapUser, commands: Commands, record_property
) -> None:
    """The Inbox (auto-tracking watches it) holds 2,000 messages and a tracked folder
    20; after a restart with nothing changed, each folder costs one EXAMINE: no
    UID SEARCH, no FETCH.  Without a token the same scan is a full UID listing
    diffed against the store."""
    imap_user.seed("INBOX", [realistic_message(i, with_attachment_every=0) for i in range(2000)])
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        for i in range(20):
            admin.append(TRACKED, offer(i))
    worker = await world.start()
    assert "INBOX" in world.rt.watched
    assert (await worker.scan_folder("INBOX")).new == 0  # first look: a baseline, nothing read
    assert (await worker.scan_folder(TRACKED)).new == 20
    assert world.cursor("INBOX") is not None and world.cursor(TRACKED) is not None

    worker = await world.start()
    commands.clear()
    t0 = time.perf_counter()
    for folder in ("INBOX", TRACKED):
        result = await worker.scan_folder(folder)
        assert (result.new, result.gone, result.shunted) == (0, 0, 0)
    catch_up = timed(t0)
    assert [c.split(" ", 1)[0] for c in commands.sent] == ["EXAMINE", "EXAMINE"], commands.sent
    assert ("QRESYNC" in commands.sent[0]) == (mode == "qresync")

    # the same with the tokens forgotten: the full diff (still no FETCH)
    m.FolderCursor.update(token=None).execute()
    commands.clear()
    t0 = time.perf_counter()
    for folder in ("INBOX", TRACKED):
        assert (await worker.scan_folder(folder)).new == 0
    full = timed(t0)
    assert not commands.named("UID FETCH") and len(commands.named("UID SEARCH")) == 2
    record_property("catch_up", f"{mode}: token {catch_up}, full diff {full}")

    # a whole start as the daemon does it: the push watcher and the backfill together,
    # until the watcher's first rescan is handled; the only UID SEARCHes are the
    # watcher's in-memory baselines, and nothing is fetched
    worker = await world.start()
    assert world.source is not None
    commands.clear()
    stop = asyncio.Event()
    batches: asyncio.Queue[list[Change]] = asyncio.Queue()

    async def pump() -> None:
        assert world.source is not None
        async for batch in world.source.watch([TRACKED, "INBOX"], stop):
            batches.put_nowait(batch)

    task = asyncio.create_task(pump())
    try:
        for folder in (TRACKED, "INBOX"):
            await worker.scan_folder(folder)
        rescan = await asyncio.wait_for(batches.get(), 15)
        assert {c.kind for c in rescan} == {"rescan"}
        await worker.handle(rescan)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not commands.named("UID FETCH"), commands.sent
    assert len(commands.named("UID SEARCH")) == 2  # the watcher's baseline of each folder
    assert m.Activity.select().count() == 20


async def test_a_backfill_reads_ahead_in_batches(world: World, imap_user: ImapUser, commands: Commands) -> None:
    """451 messages: their sizes in one UID FETCH per read-ahead batch (50, 100, 200,
    then 101: readahead.chunk_sizes) and their bodies in one more each, instead of two
    per message.  One is over the size limit: never
    read, streamed into the shunt.  One is expunged after its batch's sizes
    came and before its body: vanished, and the cursor stops before it until
    the next look."""
    imap_user.seed(TRACKED, [realistic_message(i, with_attachment_every=0) for i in range(450)])
    with imap_user.client() as admin:
        big = admin.append(TRACKED, offer(1000) + b"x" * 300_000 + b"\r\n")
        uids = admin.uids(TRACKED)
    worker = await world.start()
    world.services.max_message_bytes = 200_000
    source = world.source
    assert source is not None
    real_fetch_batch, doomed = source.fetch_batch, uids[7]

    async def fetch_batch(folder, items):  # type: ignore[no-untyped-def]
        if any(sid.endswith(f":{doomed}") for sid in items):
            with imap_user.client() as admin:
                admin.expunge(TRACKED, doomed)
        return await real_fetch_batch(folder, items)

    source.fetch_batch = fetch_batch  # type: ignore[method-assign]
    commands.clear()
    result = await worker.scan_folder(TRACKED)
    assert (result.new, result.shunted) == (449, 1)
    fetches = commands.named("UID FETCH")
    batches = len(readahead.chunk_sizes(451))
    assert batches == 4
    assert len([c for c in fetches if c.endswith("(UID RFC822.SIZE)")]) == batches + 1  # + the big one's, to stream it
    assert len([c for c in fetches if c.endswith("(UID BODY.PEEK[])")]) == batches, fetches
    assert [c for c in fetches if "BODY.PEEK[]<" in c] == [f"UID FETCH {big} (UID BODY.PEEK[]<0.4194304>)"]
    shunt = m.Shunt.get()
    assert (shunt.reason, shunt.source_id.split(":")[1]) == ("too-large", str(big))
    cursor = world.cursor(TRACKED)
    assert cursor is not None and cursor.uid == uids[6]  # held before the vanished one

    # the next look settles it: the expunge is seen, the cursor moves to the end
    source.fetch_batch = real_fetch_batch  # type: ignore[method-assign]
    result = await worker.scan_folder(TRACKED)
    assert (result.new, result.shunted) == (0, 0)
    cursor = world.cursor(TRACKED)
    assert cursor is not None and cursor.uid == max(uids)
    assert m.Activity.select().count() == 449


async def test_pushed_arrivals_in_a_row_are_read_together(
    world: World, imap_user: ImapUser, commands: Commands
) -> None:
    """A mass move reaches the worker as many ``added`` changes in one batch: one
    size fetch and one body fetch for all of them, not two per message."""
    imap_user.create_folder(TRACKED)
    worker = await world.start()
    await worker.scan_folder(TRACKED)
    with imap_user.client() as admin:
        uids = [admin.append(TRACKED, offer(i)) for i in range(30)]
    listing = await world.rt.source.list_messages(TRACKED)
    commands.clear()
    await worker.handle([Change("added", TRACKED, sid) for sid in listing.messages])
    assert m.Activity.select().count() == 30
    fetches = commands.named("UID FETCH")
    assert fetches == [
        f"UID FETCH {proto.uid_set(uids)} (UID RFC822.SIZE)",
        f"UID FETCH {proto.uid_set(uids)} (UID BODY.PEEK[])",
    ]


async def test_changes_since_the_token(mode: str, world: World, imap_user: ImapUser, commands: Commands) -> None:
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        uids = [admin.append(TRACKED, offer(i)) for i in range(6)]
    worker = await world.start()
    await worker.scan_folder(TRACKED)
    worker = await world.start()  # a restart with the token

    # only gone: without QRESYNC the message count tells, and the UID list settles which
    with imap_user.client() as admin:
        admin.expunge(TRACKED, uids[1])
    commands.clear()
    result = await worker.scan_folder(TRACKED)
    assert (result.new, result.gone) == (0, 1)
    searches = commands.named("UID SEARCH")
    if mode == "qresync":
        assert searches == []  # VANISHED (EARLIER) came with the EXAMINE
    else:
        assert len(searches) == 1 and searches[0].endswith("ALL")
    assert not commands.named("UID FETCH")

    # new and gone together; a message moved in from another folder too
    imap_user.create_folder("Archive")
    with imap_user.client() as admin:
        admin.expunge(TRACKED, uids[4])
        admin.append(TRACKED, offer(10))
        admin.append("Archive", offer(11))
        moved = admin.move("Archive", admin.uids("Archive")[0], TRACKED)
    commands.clear()
    result = await worker.scan_folder(TRACKED)
    assert (result.new, result.gone) == (2, 1)
    with imap_user.client() as admin:
        now = admin.uids(TRACKED)
    # read ahead in one batch: the sizes, then the bodies, of the two new ones (the moved
    # one among them), nothing else
    fetches = commands.named("UID FETCH")
    new_uids = sorted(set(now) - set(uids))
    assert moved in new_uids and len(new_uids) == 2
    assert fetches == [
        f"UID FETCH {proto.uid_set(new_uids)} (UID RFC822.SIZE)",
        f"UID FETCH {proto.uid_set(new_uids)} (UID BODY.PEEK[])",
    ]
    cursor = world.cursor(TRACKED)
    assert cursor is not None and cursor.uid == max(now)
    assert world.live(TRACKED) == {f"{cursor.uidvalidity}:{u}" for u in now}
    assert m.Activity.select().count() == 8  # the gone ones stay tracked


async def test_a_new_uidvalidity_with_a_stored_token(
    mode: str, world: World, imap_user: ImapUser, commands: Commands
) -> None:
    """The folder is deleted and made again with the same mail: every stored UID is
    void.  The catch-up sees the new UIDVALIDITY, the folder is listed in full, and
    the messages are re-identified by Message-ID: no duplicates, nothing deleted."""
    imap_user.create_folder(TRACKED)
    raws = [offer(i) for i in range(4)]
    with imap_user.client() as admin:
        for raw in raws:
            admin.append(TRACKED, raw)
    worker = await world.start()
    await worker.scan_folder(TRACKED)
    old = world.cursor(TRACKED)
    assert old is not None

    imap_user.server.doveadm("mailbox", "delete", "-s", "-u", imap_user.name, TRACKED)
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is a clock: never the same within a second
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        for raw in raws[1:]:
            admin.append(TRACKED, raw)
    worker = await world.start()
    commands.clear()
    result = await worker.scan_folder(TRACKED)
    assert (result.gone, result.new) == (4, 3)
    assert m.Activity.select().count() == 4  # no duplicates
    assert m.Location.select().count() == 7  # the old locations are kept, marked gone
    new = world.cursor(TRACKED)
    assert new is not None and new.uidvalidity != old.uidvalidity
    assert {s.split(":")[0] for s in world.live(TRACKED)} == {str(new.uidvalidity)}
    assert len(commands.named("UID SEARCH")) == 1  # the full listing, once
    # and the next restart is a catch-up again
    worker = await world.start()
    commands.clear()
    await worker.scan_folder(TRACKED)
    assert [c.split(" ", 1)[0] for c in commands.sent] == ["EXAMINE"]


async def test_a_new_uidvalidity_reads_known_mail_by_its_headers_only(
    mode: str, world: World, imap_user: ImapUser, commands: Commands
) -> None:
    """After a new UIDVALIDITY the mail the store knows is re-identified from its header
    sections (``BODY.PEEK[HEADER]``), never read whole; only the message the store does
    not know (new mail) is.  The result is what reading everything whole gave: every
    known message located again, the new one tracked, nothing twice."""
    imap_user.create_folder(TRACKED)
    raws = [offer(i) for i in range(4)]
    with imap_user.client() as admin:
        for raw in raws:
            admin.append(TRACKED, raw)
    worker = await world.start()
    await worker.scan_folder(TRACKED)
    imap_user.server.doveadm("mailbox", "delete", "-s", "-u", imap_user.name, TRACKED)
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is a clock: never the same within a second
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        for raw in [*raws, offer(9)]:
            admin.append(TRACKED, raw)
    worker = await world.start()
    commands.clear()
    result = await worker.scan_folder(TRACKED)
    assert (result.gone, result.new) == (4, 5)
    assert m.Activity.select().count() == 5 and m.Location.select().count() == 9
    fetches = commands.named("UID FETCH")
    assert [c for c in fetches if "BODY.PEEK[HEADER]" in c] == ["UID FETCH 1:5 (UID BODY.PEEK[HEADER])"]
    # read whole: only UID 5, the new message
    assert [c.split(" ")[2] for c in fetches if "BODY.PEEK[]" in c] == ["5"]
    new = world.cursor(TRACKED)
    assert new is not None and {s.split(":")[0] for s in world.live(TRACKED)} == {str(new.uidvalidity)}
    assert len(world.live(TRACKED)) == 5


# --------------------------------------------------------------------------- keywords


def unkeyword(user: ImapUser, folder: str, uid: int, keyword: str) -> None:
    with user.client() as admin:
        admin.select(folder)
        admin.imap.uid("STORE", str(uid), "-FLAGS.SILENT", f"({keyword})")


def flags_by_uid(user: ImapUser, folder: str) -> dict[int, str]:
    with user.client() as admin:
        admin.select(folder, readonly=True)
        _, data = admin.imap.uid("FETCH", "1:*", "(UID FLAGS)")
    out = {}
    for item in data:
        if isinstance(item, bytes):
            text = item.decode()
            uid = int(text.split("UID ", 1)[1].split()[0].rstrip(")"))
            flags = text.split("FLAGS (", 1)[1].split(")", 1)[0].split()
            out[uid] = " ".join(f for f in flags if f != "\\Recent")  # session state, not a stored flag
    return out


async def test_keywords_mark_tracked_and_shunted_mail(imap_user: ImapUser, tmp_path: Path) -> None:
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        ok = [admin.append(TRACKED, offer(i)) for i in range(3)]
        big = admin.append(TRACKED, offer(99) + b"x" * 20_000)
    world = World(imap_user, tmp_path, keywords=KEYWORDS)
    try:
        world.services.max_message_bytes = 10_000  # the big one is shunted
        worker = await world.start()
        result = await worker.scan_folder(TRACKED)
        assert (result.new, result.shunted) == (3, 1)
        flags = flags_by_uid(imap_user, TRACKED)
        assert {u: flags[u] for u in ok} == dict.fromkeys(ok, "$Tracked")
        assert flags[big] == "$TrackFailed"
        assert "\\Seen" not in " ".join(flags.values())
        # a catch-up still works on the folder it selected read-write to store them
        with imap_user.client() as admin:
            new = admin.append(TRACKED, offer(7))
        assert (await worker.scan_folder(TRACKED)).new == 1
        assert flags_by_uid(imap_user, TRACKED)[new] == "$Tracked"

        # `mailfiler shunt retry` with a higher limit: $TrackFailed becomes $Tracked
        assert world.source is not None
        await world.source.close()  # the CLI has no open connection: it makes its own
        world.services.max_message_bytes = 100_000
        results = await asyncio.to_thread(retry, world.services, None)
        assert [r["result"] for r in results] == ["tracked"]
        assert flags_by_uid(imap_user, TRACKED)[big] == "$Tracked"
    finally:
        await world.close()


async def test_a_restart_marks_what_a_crash_left_unmarked(imap_user: ImapUser, tmp_path: Path) -> None:
    """The keyword is stored after the commit: a crash in between leaves a tracked
    message without it.  At the next start the worker finds it (one UID SEARCH
    UNKEYWORD per state) and marks it; what it does not hold stays unmarked."""
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        ok = [admin.append(TRACKED, offer(i)) for i in range(3)]
        big = admin.append(TRACKED, offer(99) + b"x" * 20_000)
    world = World(imap_user, tmp_path, keywords=KEYWORDS)
    try:
        world.services.max_message_bytes = 10_000  # the big one is shunted
        worker = await world.start()
        assert (await worker.scan_folder(TRACKED)).shunted == 1
        # the crash: commits done, keywords never stored; and mail we never saw
        unkeyword(imap_user, TRACKED, ok[1], "$Tracked")
        unkeyword(imap_user, TRACKED, big, "$TrackFailed")
        with imap_user.client() as admin:
            stranger = admin.append(TRACKED, offer(50))
        world.services.max_message_bytes = 1  # nothing new may be tracked: only marks
        worker = await world.start()
        result = await worker.scan_folder(TRACKED)
        assert (result.new, result.shunted) == (0, 1)  # the stranger, shunted now
        flags = flags_by_uid(imap_user, TRACKED)
        assert {u: flags[u] for u in ok} == dict.fromkeys(ok, "$Tracked")
        assert (flags[big], flags[stranger]) == ("$TrackFailed", "$TrackFailed")
        # once per folder and start: a later scan does not search again
        unkeyword(imap_user, TRACKED, ok[0], "$Tracked")
        await worker.scan_folder(TRACKED)
        assert flags_by_uid(imap_user, TRACKED)[ok[0]] == ""
    finally:
        await world.close()


async def test_keywords_are_off_by_default(world: World, imap_user: ImapUser, commands: Commands) -> None:
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        admin.append(TRACKED, offer(1))
    worker = await world.start()
    assert (await worker.scan_folder(TRACKED)).new == 1
    assert set(flags_by_uid(imap_user, TRACKED).values()) == {""}
    assert not commands.named("UID STORE", "SELECT", "STORE")


async def test_a_failed_keyword_store_never_blocks_tracking(
    imap_user: ImapUser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refuse(self, uids: str, action: str, flags: str) -> bool:  # type: ignore[no-untyped-def]
        self.broken = True
        raise MailboxUnavailable("the connection dropped during UID STORE")

    monkeypatch.setattr(imapconn.ImapConnection, "uid_store", refuse)
    imap_user.create_folder(TRACKED)
    with imap_user.client() as admin:
        for i in range(3):
            admin.append(TRACKED, offer(i))
    world = World(imap_user, tmp_path, keywords=KEYWORDS)
    try:
        worker = await world.start()
        assert (await worker.scan_folder(TRACKED)).new == 3
        assert any(getattr(r, "event", "") == "mark-failed" for r in caplog.records)
        with imap_user.client() as admin:
            admin.append(TRACKED, offer(5))
        assert (await worker.scan_folder(TRACKED)).new == 1  # the next command reconnected
        assert m.Activity.select().count() == 4
    finally:
        await world.close()


def test_cursor_tokens_round_trip() -> None:
    cursor = Cursor(1700000000, 42, 7, 40)
    assert Cursor.decode(cursor.encode()) == cursor
    assert json.loads(cursor.encode()) == {"uidvalidity": 1700000000, "uid": 42, "modseq": 7, "exists": 40}
    for bad in (None, "", "[]", "{}", '{"uidvalidity": 0, "uid": 1}', '{"uidvalidity": "x", "uid": 1}', "[1, 2]"):
        assert Cursor.decode(bad) is None


class _Killed(BaseException):
    """Stands in for SIGKILL (nothing catches a BaseException)."""


@pytest.mark.parametrize("killed_midway", [False, True])
async def test_a_watched_folder_renumbered_is_identified_again_not_judged(
    world: World, imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch, killed_midway: bool
) -> None:
    """A watched folder gets a new UIDVALIDITY (deleted and made again with the same
    mail): its mail is not judged a second time.  A reply that was there from the start
    (never judged) stays untracked, though it would be tracked if it were new; one that
    auto-tracking tracked is found again by Message-ID; the void notes go.  Killed after
    the first message of that pass, the restart finishes it the same way (the void
    notes and the old token stay until the pass is complete)."""
    watched = "Projekt"

    def reply(mid: str) -> bytes:
        raw = make_message(mid, sender="Sven <sven@akesson.se>", subject="Re: Offert 0")
        return raw.replace(b"Subject:", b"In-Reply-To: <offer0@akesson.se>\nSubject:", 1).replace(b"\n", b"\r\n")

    plain = make_message("<plain@akesson.se>", sender="Sven <sven@akesson.se>", subject="Lunch").replace(b"\n", b"\r\n")
    imap_user.create_folder(TRACKED)
    imap_user.create_folder(watched)
    with imap_user.client() as admin:
        admin.append(TRACKED, offer(0))
        admin.append(watched, reply("<old-reply@akesson.se>"))
        admin.append(watched, plain)
    worker = await world.start()
    assert watched in world.rt.watched
    await worker.scan_folder(TRACKED)
    await worker.scan_folder(watched)  # first sight: left as it is
    assert m.Activity.select().count() == 1
    with imap_user.client() as admin:
        admin.append(watched, reply("<new-reply@akesson.se>"))
    await worker.scan_folder(watched)  # new mail: judged, a reply to tracked mail
    assert {a.message_id for a in m.Activity.select()} == {"<offer0@akesson.se>", "<new-reply@akesson.se>"}
    old = world.cursor(watched)
    assert old is not None

    imap_user.server.doveadm("mailbox", "delete", "-s", "-u", imap_user.name, watched)
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is a clock
    imap_user.create_folder(watched)
    with imap_user.client() as admin:
        for raw in (reply("<old-reply@akesson.se>"), plain, reply("<new-reply@akesson.se>")):
            admin.append(watched, raw)
    worker = await world.start()
    if killed_midway:
        real = Tracker.note_seen

        def note_seen(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if m.SeenMessage.select().where(m.SeenMessage.reason.contains("renumbered")).count():
                raise _Killed
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Tracker, "note_seen", note_seen)
        with pytest.raises(_Killed):
            await worker.scan_folder(watched)
        monkeypatch.setattr(Tracker, "note_seen", real)
        worker = await world.start()
    result = await worker.scan_folder(watched)
    new = world.cursor(watched)
    assert new is not None and new.uidvalidity != old.uidvalidity
    # not judged again: the old reply is still not tracked
    assert {a.message_id for a in m.Activity.select()} == {"<offer0@akesson.se>", "<new-reply@akesson.se>"}
    assert world.live(watched) and {s.split(":")[0] for s in world.live(watched)} == {str(new.uidvalidity)}
    seen = list(m.SeenMessage.select().where(m.SeenMessage.folder == watched))
    assert sorted(s.message_id for s in seen) == ["<old-reply@akesson.se>", "<plain@akesson.se>"]
    assert all(s.source_id.startswith(f"{new.uidvalidity}:") and "renumbered" in s.reason for s in seen)
    assert (result.new, result.skipped) == ((1, 1) if killed_midway else (1, 2))  # killed: one was noted before
    # and the next look is a plain catch-up that finds nothing to do
    worker = await world.start()
    again = await worker.scan_folder(watched)
    assert (again.new, again.skipped, again.gone) == (0, 0, 0)
    assert m.Activity.select().count() == 2
