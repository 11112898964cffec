"""The contract every mailbox backend (:class:`mailfiler.sources.base.Source`) meets.

vdirsyncer's StorageTests pattern: :class:`SourceContract` holds the tests;
a backend's test class subclasses it and supplies the ``backend`` fixture,
which returns a :class:`Backend`: the ``Source`` under test plus a
:class:`MailboxAdmin` that changes the same mailbox out-of-band, the way a
mail client or an MDA would (for Maildir: file operations; for IMAP: APPEND,
MOVE, STORE +FLAGS; for Exchange: EWS calls).  The mailbox starts with an
empty INBOX and nothing else.

The tests never assume what a source id looks like: they learn the id of a
message they put by diffing ``list_messages`` before and after.

Class attributes tune a backend's timing: ``watch_latency`` (an ``added`` or
``gone`` must arrive within it), ``quiet_period`` (how long "no change" is
watched for) and ``watch_ready_timeout`` (how long the watcher may take to
start delivering events).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import pytest

from mailfiler.errors import FolderMissing, MessageVanished
from mailfiler.sources.base import Change, Listing, Source, TagDelta, TagQuery
from tests.mailgen import realistic_message

__all__ = [
    "FOLDER_NAMES",
    "NON_ASCII",
    "AdminMessage",
    "Backend",
    "MailboxAdmin",
    "SourceContract",
    "WatchRecorder",
    "message_bytes",
]

NON_ASCII = "Kunder/Åkesson AB"
#: folder names every backend must handle: plain, nested non-ASCII, "&" (escaped in modified UTF-7)
FOLDER_NAMES = ("Archive", NON_ASCII, "Projekt & Co/2024")


@dataclass(frozen=True)
class AdminMessage:
    """A message as the admin knows it: its folder and a backend handle
    (a path for Maildir, a UID for IMAP, an item id for Exchange)."""

    folder: str
    ref: object


class MailboxAdmin(abc.ABC):
    """Out-of-band access to the mailbox behind the Source under test."""

    @abc.abstractmethod
    async def create_folder(self, folder: str) -> None: ...

    @abc.abstractmethod
    async def put(self, folder: str, data: bytes, *, seen: bool = False) -> AdminMessage:
        """Deliver a message (unread, or already read when ``seen``)."""

    @abc.abstractmethod
    async def remove(self, msg: AdminMessage) -> None:
        """Delete (expunge) a message."""

    @abc.abstractmethod
    async def move(self, msg: AdminMessage, folder: str) -> AdminMessage:
        """Move a message to another folder, as a client does."""

    @abc.abstractmethod
    async def flag(self, msg: AdminMessage, flags: str = "S") -> AdminMessage:
        """Add flags (Maildir letters: S seen, F flagged, R replied) to a message."""

    async def tag(self, msg: AdminMessage, *tags: str, remove: bool = False) -> None:
        """Add (or ``remove``) tags on a message, as a mail client does (IMAP
        keywords, Outlook categories).  Only for a backend with tags."""
        raise NotImplementedError("this backend's admin has no tags")

    @abc.abstractmethod
    async def snapshot(self) -> object:
        """The complete observable state of the mailbox, comparable with ``==``
        (for Maildir: every path with its size, hash and mtime)."""


@dataclass
class Backend:
    source: Source
    admin: MailboxAdmin
    #: a second source on the same mailbox with marks on (None: the backend has no marks)
    marking: Callable[[], Source] | None = None


def message_bytes(n: int, *, attachment: bool = False) -> bytes:
    """A realistic message with CRLF line endings (what IMAP stores and returns)."""
    raw = realistic_message(n, with_attachment_every=1 if attachment else 0, seed=4711)
    return raw.replace(b"\n", b"\r\n")


async def put_and_identify(
    source: Source, admin: MailboxAdmin, folder: str, data: bytes, **kw
) -> tuple[AdminMessage, str]:
    """Put a message and learn its source id from the listing diff."""
    before = set((await source.list_messages(folder)).messages)
    msg = await admin.put(folder, data, **kw)
    new = set((await source.list_messages(folder)).messages) - before
    assert len(new) == 1, f"putting one message into {folder!r} made {sorted(new)} appear"
    return msg, new.pop()


@dataclass
class WatchRecorder:
    """Runs ``source.watch(folders)`` in a task and records every change."""

    source: Source
    folders: Sequence[str]
    changes: list[Change] = field(default_factory=list)
    #: (folder, source_id) of the warm-up probes, left out of :meth:`relevant`
    ignored: set[tuple[str, str | None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.stop = asyncio.Event()
        self._arrived = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for batch in self.source.watch(list(self.folders), self.stop):
            assert isinstance(batch, list)
            for change in batch:
                assert isinstance(change, Change)
            self.changes.extend(batch)
            self._arrived.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="contract-watch")

    def relevant(self) -> list[Change]:
        return [c for c in self.changes if (c.folder, c.source_id) not in self.ignored]

    async def wait_for(
        self, predicate: Callable[[list[Change]], bool], timeout: float, *, what: str = "changes"
    ) -> list[Change]:
        deadline = time.monotonic() + timeout
        while True:
            if self.task is not None and self.task.done():
                self.task.result()  # the watcher raised: show why
                pytest.fail(f"watch() ended while waiting for {what}")
            got = self.relevant()
            if predicate(got):
                return got
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no {what} within {timeout:.1f} s; got {got}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    async def quiet(self, period: float) -> list[Change]:
        """The relevant changes that arrive within ``period``."""
        await asyncio.sleep(period)
        if self.task is not None and self.task.done():
            self.task.result()
        return self.relevant()

    async def warm_up(self, admin: MailboxAdmin, timeout: float) -> None:
        """Wait until the watcher delivers events for every watched folder:
        put a probe into each and wait for its ``added`` (putting another
        probe now and then, in case the first came before the watcher was
        listening).  Probes stay in their folders and are ignored."""
        await asyncio.sleep(0.02)  # let the watch task start before the first probe
        for n, folder in enumerate(self.folders):
            deadline = time.monotonic() + timeout
            while True:
                _, sid = await put_and_identify(self.source, admin, folder, message_bytes(900 + n))
                self.ignored.add((folder, sid))
                probes = {s for f, s in self.ignored if f == folder}
                try:
                    await asyncio.wait_for(self._probe_seen(folder, probes), 0.25)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"watch() reported nothing for folder {folder!r} within {timeout:.1f} s")
        self.changes.clear()

    async def _probe_seen(self, folder: str, probes: set[str]) -> None:
        while not any(c.kind == "added" and c.folder == folder and c.source_id in probes for c in self.changes):
            if self.task is not None and self.task.done():
                self.task.result()
                pytest.fail("watch() ended during warm-up")
            self._arrived.clear()
            await self._arrived.wait()

    async def close(self, timeout: float = 5.0) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, timeout)


def _only(changes: Iterable[Change], folder: str | None = None) -> list[tuple[str, str, str | None]]:
    return sorted((c.kind, c.folder, c.source_id) for c in changes if folder is None or c.folder == folder)


class SourceContract:
    """Tests every Source must pass.  Subclasses provide ``backend``."""

    #: an ``added``/``gone`` change must arrive within this many seconds
    watch_latency: float = 1.0
    #: how long to watch for the absence of changes
    quiet_period: float = 0.5
    #: how long the watcher may take to start delivering events
    watch_ready_timeout: float = 5.0

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("a backend's test class must provide the `backend` fixture")

    @pytest.fixture
    async def source(self, backend: Backend) -> AsyncIterator[Source]:
        await backend.source.open()
        try:
            yield backend.source
        finally:
            await backend.source.close()

    @pytest.fixture
    def admin(self, backend: Backend) -> MailboxAdmin:
        return backend.admin

    @contextlib.asynccontextmanager
    async def watching(
        self, source: Source, admin: MailboxAdmin, folders: Sequence[str]
    ) -> AsyncIterator[WatchRecorder]:
        recorder = WatchRecorder(source, folders)
        recorder.start()
        try:
            await recorder.warm_up(admin, self.watch_ready_timeout)
            yield recorder
        finally:
            await recorder.close()

    # ------------------------------------------------------------------ folders

    async def test_list_folders(self, source: Source, admin: MailboxAdmin) -> None:
        assert "INBOX" in await source.list_folders()
        for folder in FOLDER_NAMES:
            await admin.create_folder(folder)
        folders = await source.list_folders()
        assert all(isinstance(f, str) for f in folders)
        assert len(folders) == len(set(folders))
        assert {"INBOX", *FOLDER_NAMES} <= set(folders)

    @pytest.mark.parametrize("folder", FOLDER_NAMES)
    async def test_folder_exists_and_create_folder(self, source: Source, admin: MailboxAdmin, folder: str) -> None:
        assert await source.folder_exists("INBOX")
        assert not await source.folder_exists(folder)
        assert folder not in await source.list_folders()
        await source.create_folder(folder)
        assert await source.folder_exists(folder)
        assert folder in await source.list_folders()
        await source.create_folder(folder)  # creating an existing folder is not an error
        # it is a real folder: what a client puts there is listed and fetched
        _, sid = await put_and_identify(source, admin, folder, message_bytes(1))
        assert await source.fetch(folder, sid) == message_bytes(1)

    async def test_folder_made_by_a_client_exists(self, source: Source, admin: MailboxAdmin) -> None:
        await admin.create_folder(NON_ASCII)
        assert await source.folder_exists(NON_ASCII)
        assert (await source.list_messages(NON_ASCII)).messages == {}

    async def test_list_messages_of_a_missing_folder_raises_folder_missing(self, source: Source) -> None:
        with pytest.raises(FolderMissing):
            await source.list_messages("No/Such Folder")
        with pytest.raises(FolderMissing):
            await source.list_messages(NON_ASCII)

    # ------------------------------------------------------------------ listing and fetching

    @pytest.mark.parametrize("folder", ["INBOX", NON_ASCII])
    async def test_list_messages_returns_stable_source_ids(
        self, source: Source, admin: MailboxAdmin, folder: str
    ) -> None:
        if folder != "INBOX":
            await admin.create_folder(folder)
        put = [await put_and_identify(source, admin, folder, message_bytes(i), seen=i == 1) for i in range(3)]
        ids = {sid for _, sid in put}
        assert len(ids) == 3
        listing = await source.list_messages(folder)
        assert isinstance(listing, Listing)
        assert listing.folder == folder
        assert set(listing.messages) == ids
        assert all(isinstance(sid, str) and sid for sid in listing.messages)
        assert set((await source.list_messages(folder)).messages) == ids

        # reading/flagging a message does not change its id
        (msg0, sid0), (msg1, _), (msg2, sid2) = put
        await admin.flag(msg0, "S")
        await admin.flag(msg1, "F")
        assert set((await source.list_messages(folder)).messages) == ids
        # nor do arrivals and removals of other messages
        _, sid3 = await put_and_identify(source, admin, folder, message_bytes(3))
        await admin.remove(msg2)
        assert set((await source.list_messages(folder)).messages) == (ids | {sid3}) - {sid2}
        assert await source.fetch(folder, sid0) == message_bytes(0)

    @pytest.mark.parametrize("folder", ["INBOX", NON_ASCII])
    async def test_fetch_returns_the_exact_bytes(self, source: Source, admin: MailboxAdmin, folder: str) -> None:
        if folder != "INBOX":
            await admin.create_folder(folder)
        datas = [
            message_bytes(10),
            message_bytes(11, attachment=True),
            "Subject: Åkesson\r\nMessage-ID: <x@y>\r\n\r\nHälsningar \u20ac\r\n".encode(),
        ]
        sids = [(await put_and_identify(source, admin, folder, d, seen=i == 2))[1] for i, d in enumerate(datas)]
        listing = await source.list_messages(folder)
        for sid, data in zip(sids, datas, strict=True):
            assert await source.fetch(folder, sid, listing.messages[sid]) == data
            assert await source.fetch(folder, sid) == data
            assert await source.size(folder, sid, listing.messages[sid]) == len(data)
            assert await source.size(folder, sid) == len(data)

    async def test_fetch_never_alters_the_mailbox(self, source: Source, admin: MailboxAdmin) -> None:
        await admin.create_folder(NON_ASCII)
        for i in range(3):
            await admin.put("INBOX", message_bytes(i), seen=i == 0)
            await admin.put(NON_ASCII, message_bytes(10 + i), seen=i == 2)
        before = await admin.snapshot()
        for folder in await source.list_folders():
            assert await source.folder_exists(folder)
            listing = await source.list_messages(folder)
            for sid, hint in listing.messages.items():
                await source.size(folder, sid, hint)
                await source.fetch(folder, sid, hint)
                await source.fetch(folder, sid)
        assert await admin.snapshot() == before

    async def test_fetch_with_a_stale_hint_after_a_flag_change(self, source: Source, admin: MailboxAdmin) -> None:
        msg, sid = await put_and_identify(source, admin, "INBOX", message_bytes(5))
        hint = (await source.list_messages("INBOX")).messages[sid]
        await admin.flag(msg, "S")
        assert await source.fetch("INBOX", sid, hint) == message_bytes(5)
        assert await source.size("INBOX", sid, hint) == len(message_bytes(5))

    async def test_vanished_message_raises_message_vanished(self, source: Source, admin: MailboxAdmin) -> None:
        msg, sid = await put_and_identify(source, admin, "INBOX", message_bytes(6))
        hint = (await source.list_messages("INBOX")).messages[sid]
        await admin.remove(msg)
        assert sid not in (await source.list_messages("INBOX")).messages
        for h in (hint, None):
            with pytest.raises(MessageVanished):
                await source.fetch("INBOX", sid, h)
            with pytest.raises(MessageVanished):
                await source.size("INBOX", sid, h)

    async def test_moved_message_is_gone_from_its_old_folder(self, source: Source, admin: MailboxAdmin) -> None:
        await admin.create_folder("Archive")
        msg, sid = await put_and_identify(source, admin, "INBOX", message_bytes(7))
        hint = (await source.list_messages("INBOX")).messages[sid]
        before = set((await source.list_messages("Archive")).messages)
        await admin.move(msg, "Archive")
        assert sid not in (await source.list_messages("INBOX")).messages
        with pytest.raises(MessageVanished):
            await source.fetch("INBOX", sid, hint)
        (new_sid,) = set((await source.list_messages("Archive")).messages) - before
        assert await source.fetch("Archive", new_sid) == message_bytes(7)

    # ------------------------------------------------------------------ batch reads

    async def test_batch_reads_match_single_reads(self, source: Source, admin: MailboxAdmin) -> None:
        datas = [message_bytes(20), message_bytes(21, attachment=True), message_bytes(22)]
        put = [await put_and_identify(source, admin, "INBOX", d) for d in datas]
        listing = await source.list_messages("INBOX")
        items = {sid: listing.messages[sid] for _, sid in put}
        sizes = await source.sizes_of("INBOX", items)
        assert sizes == {sid: len(d) for (_, sid), d in zip(put, datas, strict=True)}
        got = await source.fetch_batch("INBOX", items)
        assert got == {sid: d for (_, sid), d in zip(put, datas, strict=True)}

        # a message gone since the listing is left out, the others still come (once the
        # source has looked again: an IMAP session sees another client's expunge then)
        await admin.remove(put[1][0])
        assert put[1][1] not in (await source.list_messages("INBOX")).messages
        assert set(await source.sizes_of("INBOX", items)) == {put[0][1], put[2][1]}
        assert await source.fetch_batch("INBOX", items) == {put[0][1]: datas[0], put[2][1]: datas[2]}
        assert await source.fetch_batch("INBOX", {}) == {}

    # ------------------------------------------------------------------ cursor tokens

    async def test_a_token_says_what_changed_since(self, source: Source, admin: MailboxAdmin) -> None:
        """The worker's catch-up: list once, then only ask what changed since the token."""
        put = [await put_and_identify(source, admin, "INBOX", message_bytes(30 + i)) for i in range(3)]
        listing = await source.list_messages("INBOX")
        if listing.token is None:  # a backend without tokens (Maildir) never uses them
            assert await source.list_changes("INBOX", "anything") is None
            assert source.message_token("anything", put[0][1]) is None
            return
        assert list(listing.messages) == [sid for _, sid in put]  # in the order to process them
        nothing = await source.list_changes("INBOX", listing.token)
        assert nothing is not None and nothing.empty

        # new mail and a removal since the token
        _, sid_new = await put_and_identify(source, admin, "INBOX", message_bytes(33))
        await admin.remove(put[0][0])
        delta = await source.list_changes("INBOX", listing.token)
        assert delta is not None and list(delta.added) == [sid_new]
        if delta.present is None:
            assert delta.gone == {put[0][1]}
        else:  # a backend that can only say what is there now
            assert delta.present == {put[1][1], put[2][1], sid_new}
        assert delta.token is not None
        after = await source.list_changes("INBOX", delta.token)
        assert after is not None and after.empty

    async def test_a_message_token_covers_it_and_those_before(self, source: Source, admin: MailboxAdmin) -> None:
        """What a crash after the first message's commit leaves: the rest comes again, the first does not."""
        put = [await put_and_identify(source, admin, "INBOX", message_bytes(40 + i)) for i in range(3)]
        listing = await source.list_messages("INBOX")
        if listing.token is None:
            return
        first = source.message_token(listing.token, put[0][1])
        assert first is not None
        delta = await source.list_changes("INBOX", first)
        assert delta is not None and list(delta.added) == [put[1][1], put[2][1]]
        last = source.message_token(listing.token, put[2][1])
        assert last is not None
        done = await source.list_changes("INBOX", last)
        assert done is not None and not done.added and not done.gone
        # a backend that cannot tell what left may say what is there: all of it
        assert done.present is None or done.present == {sid for _, sid in put}

    async def test_a_token_of_a_missing_folder(self, source: Source, admin: MailboxAdmin) -> None:
        await admin.create_folder("Archive")
        listing = await source.list_messages("Archive")
        if listing.token is None:
            return
        with pytest.raises(FolderMissing):
            await source.list_changes("No such folder", listing.token)

    async def test_ids_of_a_folder_share_a_generation(self, source: Source, admin: MailboxAdmin) -> None:
        sids = [(await put_and_identify(source, admin, "INBOX", message_bytes(50 + i)))[1] for i in range(2)]
        generations = {source.id_generation(sid) for sid in sids}
        assert len(generations) == 1

    # ------------------------------------------------------------------ marks

    async def test_marks(self, backend: Backend, source: Source, admin: MailboxAdmin) -> None:
        _, sid = await put_and_identify(source, admin, "INBOX", message_bytes(60))
        if backend.marking is None:  # marks are optional: then they do nothing
            assert not source.marks
            assert await source.mark("INBOX", [sid], "tracked") == 0
            assert await source.unmarked("INBOX", "tracked") is None
            return
        marker = backend.marking()
        await marker.open()
        try:
            assert marker.marks
            _, other = await put_and_identify(source, admin, "INBOX", message_bytes(61))
            assert await marker.unmarked("INBOX", "tracked") == {sid, other}
            assert await marker.mark("INBOX", [sid], "tracked") == 1
            assert await marker.unmarked("INBOX", "tracked") == {other}
            assert await marker.mark("INBOX", [other], "failed") == 1
            assert await marker.unmarked("INBOX", "failed") == {sid}
            # a mark is not a change of the message: same id, same bytes
            assert set((await source.list_messages("INBOX")).messages) == {sid, other}
            assert await source.fetch("INBOX", sid) == message_bytes(60)
        finally:
            await marker.close()

    # ------------------------------------------------------------------ tags (track by tag)

    async def _tag_pass(self, source: Source, cursors: dict[str, str | None], query: TagQuery) -> dict[str, dict]:
        """One pass: folder -> {source_id: its tags, lower-cased}; ``cursors`` advanced."""
        out: dict[str, dict] = {}
        async for delta in source.tag_changes(cursors, query):
            assert isinstance(delta, TagDelta)
            if delta.changes:
                # the last change's cursor is the folder's: committed with it, nothing is left over
                assert delta.changes[-1].token == delta.token
                out[delta.folder] = {c.source_id: {t.lower() for t in c.tags} for c in delta.changes}
            if delta.token is not None:
                cursors[delta.folder] = delta.token
        return out

    async def test_tag_changes(self, source: Source, admin: MailboxAdmin) -> None:
        """Tags (keywords, categories) are matched without regard to case, as IMAP
        does (a server may keep the case a keyword was first given in).  A
        message whose flags changed otherwise may be reported again with the
        tags it has (CONDSTORE cannot tell): the consumer finds it done."""
        if not source.tags:  # tags are optional
            return
        query = TagQuery(frozenset({"CRM", "CRM-untrack"}), ("CRM:",), frozenset({"Untrack"}))
        await admin.create_folder("Archive")
        await admin.create_folder("Untrack")
        one, sid_one = await put_and_identify(source, admin, "Archive", message_bytes(70))
        two, sid_two = await put_and_identify(source, admin, "INBOX", message_bytes(71))
        three, sid_three = await put_and_identify(source, admin, "INBOX", message_bytes(72))
        await admin.tag(one, "CRM")
        await admin.tag(two, "CRM:account:contoso", "Privat")
        cursors: dict[str, str | None] = {}
        # no cursor yet: every message carrying a wanted tag, with those tags only
        first = await self._tag_pass(source, cursors, query)
        assert first == {"Archive": {sid_one: {"crm"}}, "INBOX": {sid_two: {"crm:account:contoso"}}}
        # nothing changed: nothing to do
        assert await self._tag_pass(source, cursors, query) == {}
        # a tag set, and a flag that is no tag: the tagged message (the other at most again, as it is)
        await admin.tag(three, "crm")
        await admin.flag(one, "S")
        got = await self._tag_pass(source, cursors, query)
        assert got["INBOX"] == {sid_three: {"crm"}}
        assert got.get("Archive", {sid_one: {"crm"}}) == {sid_one: {"crm"}}
        # a tag removed is no change worth reporting; the untrack tag is
        await admin.tag(three, "crm", remove=True)
        await admin.tag(two, "CRM-untrack")
        got = await self._tag_pass(source, cursors, query)
        assert got == {"INBOX": {sid_two: {"crm:account:contoso", "crm-untrack"}}}
        # in the untrack folder every message that comes counts, tagged or not
        before = set((await source.list_messages("Untrack")).messages)
        await admin.move(three, "Untrack")
        moved = set((await source.list_messages("Untrack")).messages) - before
        got = await self._tag_pass(source, cursors, query)
        assert got == {"Untrack": {moved.pop(): set()}}

    # ------------------------------------------------------------------ watch

    @pytest.mark.parametrize("folder", ["INBOX", NON_ASCII])
    async def test_watch_reports_a_new_message(self, source: Source, admin: MailboxAdmin, folder: str) -> None:
        if folder != "INBOX":
            await admin.create_folder(folder)
        async with self.watching(source, admin, [folder]) as rec:
            started = time.monotonic()
            await admin.put(folder, message_bytes(20))
            got = await rec.wait_for(lambda cs: any(c.kind == "added" for c in cs), self.watch_latency, what="added")
            elapsed = time.monotonic() - started
            (new_sid,) = set((await source.list_messages(folder)).messages) - {s for _, s in rec.ignored}
            assert _only(got) == [("added", folder, new_sid)]
            assert elapsed <= self.watch_latency
            (change,) = got
            assert await source.fetch(folder, new_sid, change.hint) == message_bytes(20)

    async def test_watch_reports_a_message_read_at_once(self, source: Source, admin: MailboxAdmin) -> None:
        """Delivery and a flag change in quick succession are still a new message."""
        async with self.watching(source, admin, ["INBOX"]) as rec:
            await admin.flag(await admin.put("INBOX", message_bytes(26)), "S")
            got = await rec.wait_for(lambda cs: any(c.kind == "added" for c in cs), self.watch_latency, what="added")
            (new_sid,) = set((await source.list_messages("INBOX")).messages) - {s for _, s in rec.ignored}
            assert _only(got) == [("added", "INBOX", new_sid)]
            assert await rec.quiet(0.1) == got

    async def test_watch_reports_a_removed_message(self, source: Source, admin: MailboxAdmin) -> None:
        msg, sid = await put_and_identify(source, admin, "INBOX", message_bytes(21))
        async with self.watching(source, admin, ["INBOX"]) as rec:
            await admin.remove(msg)
            got = await rec.wait_for(lambda cs: any(c.kind == "gone" for c in cs), self.watch_latency, what="gone")
            assert _only(got) == [("gone", "INBOX", sid)]

    async def test_watch_flag_only_change_is_no_change(self, source: Source, admin: MailboxAdmin) -> None:
        unread, _ = await put_and_identify(source, admin, "INBOX", message_bytes(22))
        read, _ = await put_and_identify(source, admin, "INBOX", message_bytes(23), seen=True)
        async with self.watching(source, admin, ["INBOX"]) as rec:
            await admin.flag(unread, "S")  # Maildir: new/x -> cur/x:2,S
            await admin.flag(read, "F")  # Maildir: cur/y:2,S -> cur/y:2,FS
            assert await rec.quiet(self.quiet_period) == []

    async def test_watch_move_between_watched_folders(self, source: Source, admin: MailboxAdmin) -> None:
        await admin.create_folder(NON_ASCII)
        msg, sid = await put_and_identify(source, admin, "INBOX", message_bytes(24), seen=True)
        async with self.watching(source, admin, ["INBOX", NON_ASCII]) as rec:
            await admin.move(msg, NON_ASCII)
            got = await rec.wait_for(
                lambda cs: {c.kind for c in cs} >= {"gone", "added"}, self.watch_latency, what="gone + added"
            )
            probes = {s for _, s in rec.ignored}
            (new_sid,) = set((await source.list_messages(NON_ASCII)).messages) - probes
            assert _only(got) == [("added", NON_ASCII, new_sid), ("gone", "INBOX", sid)]
            (added,) = (c for c in got if c.kind == "added")
            assert await source.fetch(NON_ASCII, new_sid, added.hint) == message_bytes(24)

    async def test_watch_ignores_folders_it_does_not_watch(self, source: Source, admin: MailboxAdmin) -> None:
        await admin.create_folder("Archive")
        async with self.watching(source, admin, ["INBOX"]) as rec:
            await admin.put("Archive", message_bytes(25))
            assert await rec.quiet(self.quiet_period) == []

    async def test_watch_ends_when_stop_is_set(self, source: Source, admin: MailboxAdmin) -> None:
        rec = WatchRecorder(source, ["INBOX"])
        rec.start()
        await rec.warm_up(admin, self.watch_ready_timeout)
        started = time.monotonic()
        await rec.close(timeout=5.0)
        assert time.monotonic() - started < 1.0
