"""A resync with no change on either side stops before the per-item pass
(:mod:`mailfiler.sync.state`); each test here changes one thing the pass
depends on, the way a real writer might, and checks that it is seen."""

from __future__ import annotations

from pathlib import Path

from mailfiler.config.syncschema import SyncFilter
from mailfiler.sources.target import Changes
from mailfiler.store.detailmodels import ContactDetails
from mailfiler.store.models import Activity, Record
from mailfiler.store.syncmodels import SyncCollection
from mailfiler.sync.memory import MemoryTarget
from mailfiler.sync.state import SyncState
from tests.store.helpers import Store
from tests.sync.flaky import FlakyTarget, nth
from tests.sync.helpers import Rig, crm_appointment, crm_contact, crm_contacts, make_mailbox, policy


async def settled(rig: Rig, kind: str = "contacts") -> None:
    """Sync until quiet (the first sync writes; the next must already be quiet)."""
    await rig.sync_ok(kind)
    [r] = await rig.sync_ok(kind)
    assert r.quiet and r.changes == 0


async def test_a_resync_with_nothing_changed_is_quiet_on_a_vdir(store: Store, tmp_path: Path) -> None:
    rig = Rig(store.db, tmp_path, make_mailbox())
    crm_contact("bob", "Bob Smith", job_title="CEO")
    [r] = await rig.sync_ok("contacts")
    assert r.uploaded == 1 and not r.quiet
    [r] = await rig.sync_ok("contacts")
    assert r.quiet and r.items == 1
    # the user edits the card: seen at once
    rig.edit_contact(rig.file_of("Bob Smith"), job_title="CTO")
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and r.updated_crm == 1 and crm_contacts()["Bob Smith"]["job_title"] == "CTO"
    # a new card of the user's own (not tracked): not quiet once, then remembered as ignored
    rig.write_item("contacts", "mine.vcf", b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:mine\r\nFN:Mine\r\nEND:VCARD\r\n")
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet
    [r] = await rig.sync_ok("contacts")
    assert r.quiet
    # the user deletes it: seen (the listing no longer matches the status)
    (rig.contacts_dir / "mine.vcf").unlink()
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet


async def test_a_crm_change_that_does_not_touch_updated_at_is_seen(store: Store, tmp_path: Path) -> None:
    rig = Rig(store.db, tmp_path, make_mailbox())
    account = Record.create(entity="account", key="contoso", name="Contoso AB")
    rec = crm_contact("bob", "Bob Smith", job_title="CEO", parent=account)
    await settled(rig)
    # a writer that sets a column and nothing else (an import, a rule, an admin's SQL)
    ContactDetails.update(job_title="Chair").where(ContactDetails.record == rec).execute()
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and r.updated_mailbox == 1 and rig.by_name()["Bob Smith"]["job_title"] == "Chair"
    [r] = await rig.sync_ok("contacts")
    assert r.quiet
    # the parent account is renamed: the contact's company (taken from it) changes on the user's side
    Record.update(name="Contoso Group").where(Record.id == account.id).execute()
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and rig.by_name()["Bob Smith"]["company"] == "Contoso Group"


async def test_an_appointment_changed_behind_updated_at_is_seen(store: Store, tmp_path: Path) -> None:
    rig = Rig(store.db, tmp_path, make_mailbox())
    aid = crm_appointment("m1", "Planning", "2024-05-02T10:00:00Z", "2024-05-02T11:00:00Z")
    await settled(rig, "calendar")
    Activity.update(subject="Planning, moved").where(Activity.id == aid).execute()
    [r] = await rig.sync_ok("calendar")
    assert not r.quiet and r.updated_mailbox == 1
    assert [p.fields["subject"] for p in rig.parsed("calendar").values()] == ["Planning, moved"]


async def test_a_changed_filter_is_seen(store: Store, tmp_path: Path) -> None:
    rig = Rig(store.db, tmp_path, make_mailbox())
    crm_contact("ann", "Ann Own")
    crm_contact("bob", "Bob Smith", owner="someone@else.example")
    await settled(rig)
    assert set(rig.by_name()) == {"Ann Own", "Bob Smith"}
    rig.contacts_policy = policy(filters=[SyncFilter(owner="mailbox")])  # a config reload
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and r.deleted_mailbox == 1 and set(rig.by_name()) == {"Ann Own"}


async def test_after_a_failed_item_the_next_sync_does_the_whole_pass(store: Store, tmp_path: Path) -> None:
    target = FlakyTarget(MemoryTarget("contacts", "memory:contacts"), nth("upload", 2))
    rig = Rig(store.db, tmp_path, make_mailbox(), contacts_target=target)
    crm_contact("a", "A")
    crm_contact("b", "B")
    [r] = await rig.sync("contacts")
    assert r.state == "error" and r.uploaded == 1
    # nothing changed on either side since, yet the item that failed is still owed
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and r.uploaded == 1
    [r] = await rig.sync_ok("contacts")
    assert r.quiet


class EditsAfterOurWrites(MemoryTarget):
    """The user edits an item between the sync's writes and its last token request."""

    def __init__(self) -> None:
        super().__init__("contacts", "memory:contacts")
        #: token requests to let through before the edit (None: no edit)
        self.edit_after: int | None = None

    async def changes_since(self, token: str | None) -> Changes | None:
        if self.edit_after is not None and token is not None:
            if self.edit_after == 0:
                href, (etag, data, _) = sorted(self.items.items())[0]
                await self.update(href, data.replace(b"FN:", b"FN:Edited "), etag)
                self.edit_after = None
            else:
                self.edit_after -= 1
        return await super().changes_since(token)


async def test_a_user_edit_right_after_our_writes_is_not_swallowed(store: Store, tmp_path: Path) -> None:
    target = EditsAfterOurWrites()
    rig = Rig(store.db, tmp_path, make_mailbox(), contacts_target=target)
    crm_contact("a", "A")
    crm_contact("b", "B")
    [r] = await rig.sync_ok("contacts")
    assert r.uploaded == 2
    # the newer token: the two changes since the first one were our uploads
    assert SyncState.load(SyncCollection.get().token).token == "2"
    crm_contact("c", "C")
    target.edit_after = 1  # the sync's first token request goes through; the edit comes before the second
    [r] = await rig.sync_ok("contacts")
    assert r.uploaded == 1 and target.edit_after is None
    # the user's edit is among the changes: the older token is kept, and the edit is read next time
    assert SyncState.load(SyncCollection.get().token).token == "2"
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and r.updated_crm == 1 and any(n.startswith("Edited ") for n in crm_contacts())
    # that sync wrote to the CRM (a change the digest cannot tell from another writer's): one whole
    # pass that finds nothing to do, then quiet
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and r.changes == 0
    [r] = await rig.sync_ok("contacts")
    assert r.quiet


async def test_a_stored_bare_token_still_works(store: Store, tmp_path: Path) -> None:
    """A token stored before the digest existed: used, then replaced by the full state."""
    target = MemoryTarget("contacts", "memory:contacts")
    rig = Rig(store.db, tmp_path, make_mailbox(), contacts_target=target)
    crm_contact("a", "A")
    await settled(rig)
    SyncCollection.update(token=SyncState.load(SyncCollection.get().token).token).execute()
    [r] = await rig.sync_ok("contacts")
    assert not r.quiet and r.changes == 0
    [r] = await rig.sync_ok("contacts")
    assert r.quiet


def test_the_state_round_trips() -> None:
    for state in (SyncState(), SyncState("http://x/sync/1", None), SyncState(None, "ab"), SyncState("t", "d")):
        assert SyncState.load(state.dump()) == state
    assert SyncState.load("http://radicale.org/ns/sync/abc") == SyncState("http://radicale.org/ns/sync/abc")
    assert SyncState.load('{"v":99,"token":"t","crm":"d"}') == SyncState("t")
