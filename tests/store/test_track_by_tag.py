"""Track by tag (issue 20), backend-neutral, on SQLite and PostgreSQL: the
in-memory backend's tags (CONDSTORE's model) drive the worker's tag pass.
The IMAP keywords are tested against Dovecot in tests/e2e/test_imap_tags.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailfiler.backends.memory import MemoryMailbox, MemorySource
from mailfiler.errors import MailboxUnavailable
from mailfiler.service.runtime import MailboxRuntime, Services, build_services
from mailfiler.service.worker import MailboxWorker
from mailfiler.store import models as m
from mailfiler.store import reports
from tests.store.helpers import Store, mailbox_config, make_message

TRACKED = "Kunder/Contoso"
RECORDS = [
    {"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam", "domains": ["fabrikam.com"]},
]


class CountingSource(MemorySource):
    def __init__(self, box: MemoryMailbox) -> None:
        super().__init__(box)
        self.fetched: list[tuple[str, str]] = []
        self.fail_fetch: set[str] = set()

    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        if source_id in self.fail_fetch:
            raise MailboxUnavailable("memory: connection lost")
        self.fetched.append((folder, source_id))
        return await super().fetch(folder, source_id, hint)


def make_world(
    store: Store, tmp_path: Path, box: MemoryMailbox, *, tracked: dict | None = None
) -> tuple[MailboxRuntime, Services]:
    mbc: dict = mailbox_config("alice", "alice@example.com", tmp_path / "unused", tracked or {TRACKED: None})
    mbc["track_tags"] = {"untrack_folder": "Untrack"}
    bob: dict = mailbox_config("bob", "bob@example.com", tmp_path / "unused-bob", {"Bob": None})
    bob["track_tags"] = True
    config = store.config(records=RECORDS, mailboxes=[mbc, bob])
    services = build_services(store.db, config)
    for name, rt in services.mailboxes.items():
        rt.source = CountingSource(box if name == "alice" else MemoryMailbox())
    return services.mailboxes["alice"], services


@pytest.fixture
def box() -> MemoryMailbox:
    box = MemoryMailbox()
    for folder in ("Archive", TRACKED, "Untrack"):
        box.create_folder(folder)
    return box


@pytest.fixture
def world(store: Store, tmp_path: Path, box: MemoryMailbox) -> tuple[MailboxRuntime, Services, MailboxWorker]:
    rt, services = make_world(store, tmp_path, box)
    return rt, services, MailboxWorker(rt, services)


def mail(i: int, sender: str = "Anna <anna@contoso.com>") -> bytes:
    return make_message(f"<tag{i}@contoso.com>", sender=sender, subject=f"Fråga {i}")


def activity(i: int) -> m.Activity:
    return m.Activity.get(m.Activity.message_id == f"<tag{i}@contoso.com>")


def places(i: int) -> set[tuple[str, str]]:
    rows = m.Location.select().where(m.Location.activity == activity(i))
    return {(r.mailbox.name, r.folder) for r in rows}


def cursor(rt: MailboxRuntime, folder: str) -> str | None:
    row = m.TagCursor.get_or_none((m.TagCursor.mailbox == rt.ctx.row) & (m.TagCursor.folder == folder))
    return None if row is None else row.token


async def test_a_tagged_message_anywhere_is_tracked_once(world, box: MemoryMailbox) -> None:
    rt, _, worker = world
    source: CountingSource = rt.source  # type: ignore[assignment]
    sid = box.put("Archive", mail(1))
    box.put("Archive", mail(2))  # not tagged: never read
    box.tag("Archive", sid, "CRM")
    assert (await worker.tag_pass()) == {"tracked": 1}
    a = activity(1)
    assert a.untracked_at is None and places(1) == {("alice", "Archive")}
    assert source.fetched == [("Archive", sid)]
    assert cursor(rt, "Archive") == f"{box.folders['Archive'].generation}:{box.folders['Archive'].modseq}"
    # an idle pass reads nothing and changes nothing
    assert await worker.tag_pass() == {}
    assert source.fetched == [("Archive", sid)]
    # moved, tag and all, into a tracked folder: the same activity, now located there (not tracked twice)
    moved = box.move("Archive", sid, TRACKED)
    await worker.scan_folder(TRACKED)
    await worker.tag_pass()
    assert m.Activity.select().count() == 1
    assert ("alice", TRACKED) in places(1)
    assert m.Location.get(m.Location.folder == TRACKED).source_id == moved


async def test_a_record_tag_sets_the_regarding(world, box: MemoryMailbox) -> None:
    _rt, _, worker = world
    one = box.put("Archive", mail(1))
    box.tag("Archive", one, "CRM:account:fabrikam")
    await worker.tag_pass()
    a = activity(1)
    assert (a.regarding.ref, a.correlation) == ("account:fabrikam", "tag")
    # Set Regarding on a message tracked already, in a tracked folder without a record of its own
    two = box.put(TRACKED, mail(2))
    await worker.scan_folder(TRACKED)
    assert activity(2).regarding is None or activity(2).regarding.ref != "account:fabrikam"
    box.tag(TRACKED, two, "CRM:account:fabrikam")
    assert await worker.tag_pass() == {"regarding-set": 1}
    assert (activity(2).regarding.ref, activity(2).correlation) == ("account:fabrikam", "tag")
    # a record the store does not know: tracked as for the plain tag
    three = box.put("Archive", mail(3))
    box.tag("Archive", three, "CRM:account:nobody")
    await worker.tag_pass()
    assert activity(3).correlation != "tag"


async def test_a_tracked_folders_own_regarding_wins(store: Store, tmp_path: Path, box: MemoryMailbox) -> None:
    rt, services = make_world(store, tmp_path, box, tracked={TRACKED: "account:contoso"})
    worker = MailboxWorker(rt, services)
    sid = box.put(TRACKED, mail(1, sender="x@elsewhere.example"))
    await worker.scan_folder(TRACKED)
    box.tag(TRACKED, sid, "CRM:account:fabrikam")
    assert await worker.tag_pass() == {"regarding-kept": 1}
    assert activity(1).regarding.ref == "account:contoso"


async def test_untrack_by_tag_and_by_folder(world, box: MemoryMailbox) -> None:
    _rt, _, worker = world
    one = box.put("Archive", mail(1))
    two = box.put("Archive", mail(2))
    box.tag("Archive", one, "CRM")
    box.tag("Archive", two, "CRM")
    await worker.tag_pass()
    # removing the tag does not untrack
    box.tag("Archive", one, "CRM", remove=True)
    await worker.tag_pass()
    assert activity(1).untracked_at is None
    # the untrack tag does: marked, located nowhere, the mail untouched
    raw = box.folders["Archive"].messages[int(one.split(":")[1])]
    box.tag("Archive", one, "CRM-untrack")
    assert await worker.tag_pass() == {"untracked": 1}
    a = activity(1)
    assert a.untracked_at is not None and a.untracked_reason == "untrack tag CRM-untrack in Archive"
    assert places(1) == set()
    assert box.folders["Archive"].messages[int(one.split(":")[1])] == raw
    shown = {r["message_id"]: r for r in reports.activities()}
    assert shown["<tag1@contoso.com>"]["untracked"]["reason"] == "untrack tag CRM-untrack in Archive"
    # the untrack folder: found there by its Message-ID (a new id)
    box.move("Archive", two, "Untrack")
    assert await worker.tag_pass() == {"untracked": 1}
    assert activity(2).untracked_reason == "moved to the untrack folder Untrack"
    # tagged again in a folder that is not the untrack folder: tracked again
    box.tag("Archive", one, "CRM-untrack", remove=True)
    box.tag("Archive", one, "CRM")
    await worker.tag_pass()
    assert activity(1).untracked_at is None and places(1) == {("alice", "Archive")}


async def test_untrack_in_a_tracked_folder_is_refused(world, box: MemoryMailbox) -> None:
    _rt, _, worker = world
    sid = box.put(TRACKED, mail(1))
    await worker.scan_folder(TRACKED)
    box.tag(TRACKED, sid, "CRM-untrack")
    assert await worker.tag_pass() == {"untrack-refused": 1}
    assert activity(1).untracked_at is None and places(1) == {("alice", TRACKED)}


async def test_an_untracked_message_stays_untracked_when_seen_again(world, box: MemoryMailbox) -> None:
    rt, _, worker = world
    sid = box.put("Archive", mail(1))
    box.tag("Archive", sid, "CRM")
    await worker.tag_pass()
    box.tag("Archive", sid, "CRM-untrack")
    await worker.tag_pass()
    # a copy shows up in a watched folder: auto-tracking does not bring it back
    from mailfiler.tracking.context import watched_folder

    rt.watched["INBOX"] = watched_folder("INBOX")
    box.put("INBOX", mail(1))
    await worker.scan_folder("INBOX")
    assert activity(1).untracked_at is not None and places(1) == set()
    # filed into a tracked folder: tracked again (as the Track button would)
    box.put(TRACKED, mail(1))
    await worker.scan_folder(TRACKED)
    assert activity(1).untracked_at is None and places(1) == {("alice", TRACKED)}


async def test_only_the_owner_mailbox_untracks(world, box: MemoryMailbox, store: Store) -> None:
    _rt, services, worker = world
    bob_rt = services.mailboxes["bob"]
    bob_box: MemoryMailbox = bob_rt.source.box  # type: ignore[attr-defined]
    bob_box.create_folder("Bob")
    bob_box.put("Bob", mail(1))
    await MailboxWorker(bob_rt, services).scan_folder("Bob")
    assert activity(1).owner_mailbox.name == "bob"
    sid = box.put("Archive", mail(1))
    box.tag("Archive", sid, "CRM")
    await worker.tag_pass()  # alice tags it too: one more location, still bob's
    box.tag("Archive", sid, "CRM-untrack")
    assert await worker.tag_pass() == {"untrack-refused": 1}
    assert activity(1).untracked_at is None and ("bob", "Bob") in places(1)


async def test_the_tag_cursor_commits_with_what_it_covers(world, box: MemoryMailbox) -> None:
    rt, _, worker = world
    source: CountingSource = rt.source  # type: ignore[assignment]
    sids = [box.put("Archive", mail(i)) for i in range(1, 4)]
    gen = box.folders["Archive"].generation
    for sid in sids:
        box.tag("Archive", sid, "CRM")
    await worker.tag_pass()  # the first pass: every tagged message, cursor with the last
    top = box.folders["Archive"].modseq
    assert cursor(rt, "Archive") == f"{gen}:{top}"
    four, five = box.put("Archive", mail(4)), box.put("Archive", mail(5))
    box.tag("Archive", four, "CRM")
    box.tag("Archive", five, "CRM")
    source.fail_fetch = {five}
    with pytest.raises(MailboxUnavailable):
        await worker.tag_pass()
    # four is committed with a cursor that covers it and not five
    assert m.Activity.select().count() == 4
    covered = int(cursor(rt, "Archive").split(":")[1])  # type: ignore[union-attr]
    assert box.folders["Archive"].modseqs[int(four.split(":")[1])] <= covered
    assert covered < box.folders["Archive"].modseqs[int(five.split(":")[1])]
    source.fail_fetch = set()
    source.fetched.clear()
    await worker.tag_pass()  # a restart reads only what the cursor does not cover
    assert source.fetched == [("Archive", five)]
    assert m.Activity.select().count() == 5


async def test_a_new_generation_is_looked_at_afresh(world, box: MemoryMailbox) -> None:
    rt, _, worker = world
    sid = box.put("Archive", mail(1))
    box.tag("Archive", sid, "CRM")
    await worker.tag_pass()
    box.renumber("Archive")
    assert await worker.tag_pass() == {"located": 1}  # re-identified by its Message-ID
    assert m.Activity.select().count() == 1
    assert cursor(rt, "Archive").startswith(f"{box.folders['Archive'].generation}:")  # type: ignore[union-attr]


async def test_a_shunted_tagged_message_is_retried_as_tagged(world, box: MemoryMailbox) -> None:
    _rt, services, worker = world
    sid = box.put("Archive", mail(1))
    box.tag("Archive", sid, "CRM")
    services.max_message_bytes = 100
    assert await worker.tag_pass() == {"shunted": 1}
    row = m.Shunt.get()
    assert (row.folder, row.reason) == ("Archive", "too-large") and row.detail.startswith("tagged: ")
    services.max_message_bytes = 1_000_000
    from mailfiler.service.retry import retry

    def retry_all() -> list[dict]:
        try:
            return retry(services, None)  # as `mailfiler shunt retry`, off the event loop
        finally:
            services.db.close()  # this thread's connection

    assert [r["result"] for r in await asyncio.to_thread(retry_all)] == ["tracked"]
    assert places(1) == {("alice", "Archive")}
