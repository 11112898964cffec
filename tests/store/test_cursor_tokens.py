"""Per-folder cursor tokens on SQLite and PostgreSQL: the token is written in the
transaction of the message it covers, never runs ahead of what is committed, and a
restart from it converges without fetching a committed message again.

The source is the package's in-memory backend (IMAP-like tokens: a generation as
UIDVALIDITY and the last id handled); the real IMAP tokens are tested against
Dovecot in tests/sources/test_imap_catchup.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from mailfiler.backends.memory import MemoryMailbox, MemorySource
from mailfiler.errors import MessageVanished
from mailfiler.service import backfill as worker_module
from mailfiler.service.runtime import MailboxRuntime, Services, build_services
from mailfiler.service.worker import MailboxWorker
from mailfiler.sources.base import Delta, Listing, MarkState
from mailfiler.store import models as m
from mailfiler.tracking import pipeline
from mailfiler.tracking.folders import folder_token
from mailfiler.tracking.parse import parse_message
from mailfiler.tracking.writer import Writer
from tests.store.helpers import Store, mailbox_config, make_message

FOLDER = "Kunder/Contoso"


class FakeSource(MemorySource):
    """The in-memory backend (mailfiler.backends.memory), counting what the worker
    asks of it, with the IMAP nuances these tests need: a server that can only say
    what is there now (no QRESYNC), a message that vanishes while it is read, a new
    UIDVALIDITY, and marks that fail."""

    def __init__(self) -> None:
        super().__init__(MemoryMailbox())
        self.box.create_folder(FOLDER)
        #: report gone ids explicitly (QRESYNC-like) instead of the whole id set
        self.explicit_gone = True
        #: UIDs whose fetch says "vanished" (a move in progress)
        self.vanishing: set[int] = set()
        self.fetched: list[int] = []
        self.catch_ups = 0
        self.full_listings = 0
        self.marked: list[tuple[str, tuple[str, ...], MarkState]] = []
        self.mark_enabled = False
        self.mark_error: Exception | None = None

    @property
    def folders(self) -> dict[str, dict[int, bytes]]:
        return {name: f.messages for name, f in self.box.folders.items()}

    @property
    def uidvalidity(self) -> int:
        return self.box.folders[FOLDER].generation

    def new_uidvalidity(self) -> int:
        self.box.renumber(FOLDER)
        return self.uidvalidity

    def add(self, raw: bytes, folder: str = FOLDER) -> int:
        return int(self.box.put(folder, raw).partition(":")[2])

    def expunge(self, uid: int, folder: str = FOLDER) -> None:
        self.box.remove(folder, self.sid(uid))

    def sid(self, uid: int) -> str:
        return f"{self.uidvalidity}:{uid}"

    def _check_vanishing(self, folder: str, source_id: str) -> int:
        uid = int(source_id.partition(":")[2])
        if uid in self.vanishing:
            raise MessageVanished("gone", folder=folder, source_id=source_id)
        return uid

    async def list_messages(self, folder: str) -> Listing:
        listing = await super().list_messages(folder)
        self.full_listings += 1
        return listing

    async def list_changes(self, folder: str, token: str) -> Delta | None:
        self.catch_ups += 1
        delta = await super().list_changes(folder, token)
        if delta is None or self.explicit_gone or not delta.gone:
            return delta
        present = frozenset(self.sid(u) for u in self.box.folders[folder].messages)
        return Delta(folder, delta.added, present=present, token=delta.token)

    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        self._check_vanishing(folder, source_id)
        return await super().size(folder, source_id, hint)

    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        uid = self._check_vanishing(folder, source_id)
        data = await super().fetch(folder, source_id, hint)
        self.fetched.append(uid)
        return data

    @property
    def marks(self) -> bool:
        return self.mark_enabled

    async def mark(self, folder: str, source_ids: Sequence[str], state: MarkState) -> int:
        if self.mark_error is not None:
            raise self.mark_error
        self.marked.append((folder, tuple(source_ids), state))
        return len(source_ids)


class Crash(BaseException):
    """Stands in for SIGKILL at a crash point (a BaseException: nothing catches it)."""


@pytest.fixture
def world(store: Store, tmp_path: Path) -> tuple[MailboxRuntime, Services, FakeSource]:
    config = store.config(
        records=[{"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]}],
        mailboxes=[mailbox_config("alice", "alice@example.com", tmp_path / "unused", {FOLDER: "account:contoso"})],
    )
    services = build_services(store.db, config)
    rt = services.mailboxes["alice"]
    source = FakeSource()
    rt.source = source
    return rt, services, source


def message(i: int) -> bytes:
    return make_message(f"<m{i}@contoso.com>", subject=f"Offert {i}")


def token_uid(rt: MailboxRuntime) -> int | None:
    token = folder_token(rt.ctx.row, FOLDER)  # the memory backend's GENERATION:LAST:EXPUNGES
    return None if token is None else int(token.split(":")[1])


def committed_uids(rt: MailboxRuntime) -> set[int]:
    rows = m.Location.select().where((m.Location.mailbox == rt.ctx.row) & m.Location.gone_at.is_null())
    return {int(r.source_id.partition(":")[2]) for r in rows}


def assert_token_covers_only_committed(rt: MailboxRuntime, source: FakeSource) -> None:
    """The mbsync rule: every UID at or below the token is committed (or gone)."""
    top = token_uid(rt)
    if top is None:
        return
    present = {u for u in source.folders[FOLDER] if u <= top}
    missing = present - committed_uids(rt)
    assert not missing, f"the token says UID {top} is done, but {sorted(missing)} are not committed"


# --------------------------------------------------------------------------- the tracker


def test_the_token_is_written_with_the_message(world, store: Store) -> None:
    rt, services, _ = world
    fctx = rt.folders[FOLDER]
    services.tracker.track(rt.ctx, fctx, "1:1", parse_message(message(1)), token="[1, 1, null]")
    cursor = m.FolderCursor.get((m.FolderCursor.mailbox == rt.ctx.row) & (m.FolderCursor.folder == FOLDER))
    assert (cursor.token, cursor.processed) == ("[1, 1, null]", 1)
    # a message that is known already still moves the token (and counts nothing)
    services.tracker.track(rt.ctx, fctx, "1:1", parse_message(message(1)), token="[1, 2, null]")
    cursor = m.FolderCursor.get_by_id(cursor.id)
    assert (cursor.token, cursor.processed) == ("[1, 2, null]", 1)
    # no token given: the stored one stays
    services.tracker.track(rt.ctx, fctx, "1:3", parse_message(message(3)))
    assert m.FolderCursor.get_by_id(cursor.id).token == "[1, 2, null]"


def test_a_failed_transaction_writes_no_token(world, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    rt, services, _ = world
    fctx = rt.folders[FOLDER]
    services.tracker.track(rt.ctx, fctx, "1:1", parse_message(message(1)), token="[1, 1, null]")
    original = pipeline.Tracker._bump_cursor

    def bump_then_fail(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        original(self, *args, **kwargs)  # the token is written...
        raise RuntimeError("the disk is full")  # ...and the transaction fails after it

    monkeypatch.setattr(pipeline.Tracker, "_bump_cursor", bump_then_fail)
    with pytest.raises(RuntimeError):
        services.tracker.track(rt.ctx, fctx, "1:2", parse_message(message(2)), token="[1, 2, null]")
    assert m.Activity.select().count() == 1
    assert folder_token(rt.ctx.row, FOLDER) == "[1, 1, null]"


def test_a_skipped_message_moves_the_token_too(world, store: Store) -> None:
    rt, services, _ = world
    from mailfiler.tracking.context import watched_folder

    inbox = watched_folder("INBOX")
    services.tracker.track(rt.ctx, inbox, "1:7", parse_message(message(7)), token="[1, 7, null]")
    assert m.SeenMessage.select().count() == 1 and m.Activity.select().count() == 0
    assert folder_token(rt.ctx.row, "INBOX") == "[1, 7, null]"


# --------------------------------------------------------------------------- the worker


async def test_restart_from_the_token_fetches_only_what_is_new(world, store: Store) -> None:
    rt, services, source = world
    for i in range(20):
        source.add(message(i))
    worker = MailboxWorker(rt, services)
    assert (await worker.scan_folder(FOLDER)).new == 20
    assert source.full_listings == 1 and token_uid(rt) == 20

    # a restart with nothing new: one catch-up, no listing, no fetch
    source.fetched.clear()
    worker = MailboxWorker(rt, services)
    result = await worker.scan_folder(FOLDER)
    assert (result.new, result.gone, source.full_listings, source.catch_ups, source.fetched) == (0, 0, 1, 1, [])

    # two new, one gone: the catch-up fetches the two only
    source.add(message(100))
    source.add(message(101))
    source.expunge(3)
    result = await worker.scan_folder(FOLDER)
    assert (result.new, result.gone, source.fetched, source.full_listings) == (2, 1, [21, 22], 1)
    assert committed_uids(rt) == set(source.folders[FOLDER]) and token_uid(rt) == 22
    assert m.Activity.select().count() == 22  # the gone one stays tracked


@pytest.mark.parametrize("explicit_gone", [True, False], ids=["gone-listed", "present-diffed"])
async def test_gone_messages_before_new_ones(world, store: Store, explicit_gone: bool) -> None:
    rt, services, source = world
    source.explicit_gone = explicit_gone
    uids = [source.add(message(i)) for i in range(5)]
    worker = MailboxWorker(rt, services)
    await worker.scan_folder(FOLDER)
    source.expunge(uids[0])
    source.expunge(uids[4])
    source.add(message(5))
    result = await worker.scan_folder(FOLDER)
    assert (result.new, result.gone) == (1, 2)
    assert committed_uids(rt) == set(source.folders[FOLDER])


@pytest.mark.parametrize("point", ["before_commit", "after_commit"])
@pytest.mark.parametrize("nth", [1, 2, 3])
@pytest.mark.parametrize("phase", ["backfill", "catch-up"])
async def test_a_crash_never_leaves_the_token_past_an_uncommitted_message(
    world, store: Store, monkeypatch: pytest.MonkeyPatch, phase: str, point: str, nth: int
) -> None:
    """Killed before or after the nth commit of a first backfill (full listing) or of
    a catch-up (from the token): the token covers exactly what is committed, and the
    restart converges without fetching a committed message again.  A scan commits
    ``COMMIT_BATCH`` messages at a time (2 here, so that a dozen messages make
    several commits): the token is the last of the batch."""
    monkeypatch.setattr(worker_module, "COMMIT_BATCH", 2)
    rt, services, source = world
    done_before = 0
    if phase == "catch-up":
        for i in range(6):
            source.add(message(i))
        await MailboxWorker(rt, services).scan_folder(FOLDER)
        done_before = 6
    for i in range(done_before, 12):
        source.add(message(i))  # mail that came while the daemon was away

    passes = {"n": 0}

    def crash_at(name: str) -> None:
        if name == point:
            passes["n"] += 1
            if passes["n"] == nth:
                raise Crash(name)

    monkeypatch.setattr(pipeline.crashpoints, "point", crash_at)
    with pytest.raises(Crash):
        await MailboxWorker(rt, services).scan_folder(FOLDER)
    ends = list(range(done_before + 2, 13, 2))  # the committed count after each commit
    committed = ends[nth - 1] if point == "after_commit" else ([done_before, *ends])[nth - 1]
    assert len(committed_uids(rt)) == committed
    assert token_uid(rt) == (committed or None), "the token is the last committed UID"
    assert_token_covers_only_committed(rt, source)

    # restart: converges, and fetches only what was not committed
    monkeypatch.setattr(pipeline.crashpoints, "point", lambda name: None)
    source.fetched.clear()
    await MailboxWorker(rt, services).scan_folder(FOLDER)
    assert committed_uids(rt) == set(source.folders[FOLDER])
    assert sorted(source.fetched) == list(range(committed + 1, 13))
    assert m.Activity.select().count() == 12
    assert token_uid(rt) == 12


async def test_a_message_that_vanished_holds_the_token_back(world, store: Store) -> None:
    rt, services, source = world
    uids = [source.add(message(i)) for i in range(5)]
    source.vanishing.add(uids[2])  # a client moves it while we read the folder
    worker = MailboxWorker(rt, services)
    await worker.scan_folder(FOLDER)
    assert committed_uids(rt) == {1, 2, 4, 5}
    assert token_uid(rt) == 2, "the token stays before a message whose fate is unknown"
    # it was still there after all (a transient failure): the next catch-up tracks it
    source.vanishing.clear()
    source.fetched.clear()
    await worker.scan_folder(FOLDER)
    assert committed_uids(rt) == {1, 2, 3, 4, 5} and source.fetched == [3]
    assert token_uid(rt) == 5


async def test_a_new_uidvalidity_lists_in_full_and_reidentifies(world, store: Store) -> None:
    rt, services, source = world
    for i in range(4):
        source.add(message(i))
    worker = MailboxWorker(rt, services)
    await worker.scan_folder(FOLDER)
    uidvalidity = source.new_uidvalidity()  # every UID is void now; the same mail is there
    result = await worker.scan_folder(FOLDER)
    assert source.full_listings == 2
    assert (result.gone, m.Activity.select().count()) == (4, 4)  # re-identified by Message-ID: no duplicates
    live = m.Location.select().where(m.Location.gone_at.is_null())
    assert {loc.source_id.split(":")[0] for loc in live} == {str(uidvalidity)}
    assert m.Location.select().count() == 8  # the old locations are kept, marked gone
    assert folder_token(rt.ctx.row, FOLDER).split(":")[0] == str(uidvalidity)


async def test_a_folder_that_was_watched_is_listed_in_full_once_it_is_tracked(world, store: Store) -> None:
    rt, services, source = world
    for i in range(3):
        source.add(message(i))
    m.FolderCursor.create(mailbox=rt.ctx.row, folder=FOLDER, kind="watched", token=f"{source.uidvalidity}:3:0")
    result = await MailboxWorker(rt, services).scan_folder(FOLDER)
    assert (result.new, source.full_listings, source.catch_ups) == (3, 1, 0)


async def test_marks_follow_the_commits_and_their_failure_is_only_logged(
    world, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    rt, services, source = world
    source.mark_enabled = True
    source.add(message(1))
    source.add(b"")  # an empty file: shunted
    worker = MailboxWorker(rt, services)
    await worker.scan_folder(FOLDER)
    assert sorted(source.marked) == [(FOLDER, (source.sid(1),), "tracked"), (FOLDER, (source.sid(2),), "failed")]
    source.mark_error = RuntimeError("the server said no")
    source.add(message(3))
    result = await worker.scan_folder(FOLDER)
    assert result.new == 1 and m.Activity.select().count() == 2
    assert any(r.__dict__.get("event") == "mark-failed" for r in caplog.records)


# --------------------------------------------------------------------------- commit batches


async def test_a_message_its_batch_cannot_store_is_handled_alone(
    world, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One message of a batch fails in the store: the messages before it commit with
    the batch, it is retried alone and shunted with its reason, and the rest commit
    after it; the token never passes it before it is handled."""
    rt, services, source = world
    for i in range(8):
        source.add(message(i))
    original = pipeline.Tracker.track
    calls: list[str] = []

    def track(self, mailbox, folder, source_id, msg, **kw):  # type: ignore[no-untyped-def]
        calls.append(source_id)
        if source_id == source.sid(3):
            raise RuntimeError("the store refused this row")
        return original(self, mailbox, folder, source_id, msg, **kw)

    monkeypatch.setattr(pipeline.Tracker, "track", track)
    real_bulk = Writer.apply_batch

    def bulk_track(self, plans, blob_ids):  # type: ignore[no-untyped-def]
        # the store refuses that row in a bulk write too (the whole batch then goes one by one)
        if any(plan.source_id == source.sid(3) for plan in plans):
            raise RuntimeError("the store refused this row")
        return real_bulk(self, plans, blob_ids)

    monkeypatch.setattr(Writer, "apply_batch", bulk_track)
    result = await MailboxWorker(rt, services).scan_folder(FOLDER)
    assert (result.new, result.shunted) == (7, 1)
    assert committed_uids(rt) == {1, 2, 4, 5, 6, 7, 8}
    shunt = m.Shunt.get()
    assert shunt.source_id == source.sid(3) and "the store refused this row" in shunt.detail
    assert token_uid(rt) == 8
    # 3 was tried in its batch, then alone with the store retries' budget; the rest of
    # the batch (4-8) was committed after it, in bulk
    assert calls.count(source.sid(3)) >= 2 and not {source.sid(u) for u in range(4, 9)} & set(calls)


async def test_a_stop_commits_the_batch_in_flight(world, store: Store) -> None:
    """Stopping (SIGTERM) mid-batch commits the messages read so far, with their token,
    and the cursor does not pretend the folder is done."""
    rt, services, source = world
    for i in range(10):
        source.add(message(i))
    checks = {"n": 0}

    def should_stop() -> bool:
        checks["n"] += 1
        return checks["n"] > 4

    await MailboxWorker(rt, services, should_stop=should_stop).scan_folder(FOLDER)
    assert committed_uids(rt) == {1, 2, 3, 4}
    assert token_uid(rt) == 4
    assert_token_covers_only_committed(rt, source)
    await MailboxWorker(rt, services).scan_folder(FOLDER)
    assert committed_uids(rt) == set(range(1, 11)) and token_uid(rt) == 10


async def test_a_batch_whose_commit_fails_is_committed_message_by_message(
    world, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store refuses a batch's commit (busy, restarting): its messages are tracked
    one by one, with the store retries, and the cursor still ends at the last."""
    import peewee as pw

    rt, services, source = world
    for i in range(6):
        source.add(message(i))
    real, failures = worker_module.track_batch, {"n": 0}

    def track_batch(tracker, items):  # type: ignore[no-untyped-def]
        if failures["n"] == 0:
            failures["n"] += 1
            raise pw.OperationalError("database is locked")
        return real(tracker, items)

    monkeypatch.setattr(worker_module, "track_batch", track_batch)
    result = await MailboxWorker(rt, services).scan_folder(FOLDER)
    assert (result.new, result.shunted) == (6, 0) and failures["n"] == 1
    assert committed_uids(rt) == set(range(1, 7)) and token_uid(rt) == 6
    assert m.Activity.select().count() == 6
