"""What must never go wrong: a broken item, an empty side, a failure mid-sync, a crash
between writing the user's side and committing the status."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailfiler.errors import SyncTargetUnavailable
from mailfiler.store.detailmodels import ContactDetails
from mailfiler.store.models import Record
from mailfiler.store.syncmodels import SyncCollection, SyncItem, SyncShunt
from mailfiler.sync import vcard
from mailfiler.sync.state import SyncState
from mailfiler.sync.vdir import VdirTarget
from tests.store.helpers import Store
from tests.sync.flaky import FlakyTarget, nth
from tests.sync.helpers import Rig, crm_contact, crm_contacts, make_mailbox

CARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{fn}\r\nN:;;;;\r\nCATEGORIES:Tracked\r\nEND:VCARD\r\n"


@pytest.fixture
def rig(store: Store, tmp_path: Path) -> Rig:
    return Rig(store.db, tmp_path, make_mailbox())


async def test_a_malformed_item_is_shunted_and_the_rest_goes_on(rig: Rig) -> None:
    crm_contact("a", "Anna A")
    rig.write_item("contacts", "broken.vcf", b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:half a card")
    rig.write_item("contacts", "good.vcf", CARD.format(uid="g1", fn="Good Guy").encode())
    [r] = await rig.sync("contacts")
    assert (r.state, r.shunted, r.uploaded, r.created_crm) == ("ok", 1, 1, 1)
    [shunt] = SyncShunt.select()
    assert (shunt.href, shunt.reason, shunt.resolved_at) == ("broken.vcf", "bad-vcard", None)
    assert "broken vCard" in shunt.detail
    assert (rig.root / "state" / shunt.raw_path).read_bytes().startswith(b"BEGIN:VCARD")
    # not read again while it does not change; never deleted on either side
    [r] = await rig.sync("contacts")
    assert (r.shunted, r.changes) == (0, 0)
    assert (rig.contacts_dir / "broken.vcf").exists()
    # fixed by the user: read, tracked, and the shunt is resolved
    rig.write_item("contacts", "broken.vcf", CARD.format(uid="b1", fn="Fixed Card").encode())
    [r] = await rig.sync_ok("contacts")
    assert r.created_crm == 1 and "Fixed Card" in crm_contacts()
    assert SyncShunt.get().resolved_at is not None


async def test_a_linked_item_that_breaks_is_left_alone_on_both_sides(rig: Rig) -> None:
    crm_contact("a", "Anna A", job_title="CEO")
    await rig.sync_ok("contacts")
    filename = rig.file_of("Anna A")
    rig.write_item("contacts", filename, b"BEGIN:VCARD\r\nthis is not a card")
    [r] = await rig.sync("contacts")
    assert r.shunted == 1 and r.deleted_crm == 0 and r.uploaded == 0
    assert crm_contacts()["Anna A"]["job_title"] == "CEO"
    assert (rig.contacts_dir / filename).read_bytes() == b"BEGIN:VCARD\r\nthis is not a card"


async def test_the_empty_side_guard_stops_before_deleting_anything(rig: Rig) -> None:
    for i in range(3):
        crm_contact(f"c{i}", f"Contact {i}")
    await rig.sync_ok("contacts")
    for path in rig.contacts_dir.iterdir():
        path.unlink()
    rig.contacts_policy.on_mailbox_delete = "delete-in-crm"  # the worst case
    [r] = await rig.sync("contacts")
    assert r.state == "stopped" and "is empty, but 3 item(s) were synced there" in r.errors[0]
    assert "--force-delete" in r.errors[0]
    assert len(crm_contacts()) == 3
    row = SyncCollection.get()
    assert row.state == "stopped" and "is empty" in row.last_error
    rig.force_delete = True
    [r] = await rig.sync_ok("contacts")
    assert r.deleted_crm == 3 and crm_contacts() == {}


async def test_the_crm_side_guard(rig: Rig) -> None:
    from mailfiler.config.syncschema import SyncFilter

    crm_contact("c1", "C1")
    await rig.sync_ok("contacts")
    rig.contacts_policy.filters = [SyncFilter(owner=["nobody@example.com"])]
    [r] = await rig.sync("contacts")
    assert r.state == "stopped" and "selects no contacts" in r.errors[0]
    assert set(rig.by_name()) == {"C1"}


async def test_an_unreachable_collection_is_reported_and_nothing_changes(store: Store, tmp_path: Path) -> None:
    rig = Rig(store.db, tmp_path, make_mailbox())
    crm_contact("c1", "C1")
    rig.contacts_target = FlakyTarget(VdirTarget("contacts", tmp_path / "contacts"),
                                      nth("list", 1, exc=SyncTargetUnavailable("server down (HTTP 502)")))  # fmt: skip
    [r] = await rig.sync("contacts")
    assert r.state == "unavailable" and "server down" in r.errors[0]
    assert SyncItem.select().count() == 0
    [r] = await rig.sync_ok("contacts")
    assert r.uploaded == 1


@pytest.mark.parametrize("op", ["upload", "update", "delete"])
async def test_a_failure_mid_sync_leaves_a_state_the_next_sync_completes(store: Store, tmp_path: Path, op: str) -> None:
    """A server error on the 3rd write: that item fails, the others go on, the
    store stays consistent, and the next sync finishes the job with no duplicates."""
    rig = Rig(store.db, tmp_path, make_mailbox())
    ids = [crm_contact(f"c{i}", f"Contact {i}", job_title="v1") for i in range(6)]
    crm_contact("keep", "Kept", job_title="v1")  # deleting every one would (rightly) trip the guard
    if op != "upload":
        await rig.sync_ok("contacts")
    from mailfiler.sync.crm import ContactStore

    if op == "update":
        for cid in ids:
            ContactStore().write(cid, {"job_title": "v2"})
    if op == "delete":
        Record.delete().where(Record.id.in_(ids)).execute()
    rig.contacts_target = FlakyTarget(VdirTarget("contacts", tmp_path / "contacts"), nth(op, 3))
    [r] = await rig.sync("contacts")
    assert r.state == "error" and len(r.errors) == 1 and "injected failure" in r.errors[0]
    assert "injected failure" in SyncCollection.get().last_error
    [r] = await rig.sync_ok("contacts")
    assert r.changes == 1
    if op == "delete":
        assert set(rig.by_name()) == {"Kept"} and SyncItem.select().count() == 1
    else:
        assert len(rig.files()) == 7 == SyncItem.select().count()
        want = "v2" if op == "update" else "v1"
        assert {f["job_title"] for n, f in rig.by_name().items() if n != "Kept"} == {want}
    [r] = await rig.sync_ok("contacts")
    assert r.changes == 0


async def test_a_crash_between_the_write_and_the_commit(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's side is written first; if the status commit is lost, the next
    sync recognises the item by its UID instead of uploading it twice."""
    crm_contact("c1", "C1")
    crm_contact("c2", "C2")
    real = SyncItem.create
    calls = {"n": 0}

    def crash_once(**kw):  # the second status row never commits
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("power cut")
        return real(**kw)

    monkeypatch.setattr(SyncItem, "create", crash_once)
    [r] = await rig.sync("contacts")
    assert r.state == "error" and r.uploaded == 1
    assert len(rig.files()) == 2 and SyncItem.select().count() == 1
    monkeypatch.setattr(SyncItem, "create", real)
    [r] = await rig.sync_ok("contacts")
    assert (r.linked, r.uploaded) == (1, 0)
    assert len(rig.files()) == 2 and SyncItem.select().count() == 2
    [r] = await rig.sync_ok("contacts")
    assert r.changes == 0


async def test_a_store_failure_while_tracking_leaves_no_half_contact(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.write_item("contacts", "n.vcf", CARD.format(uid="n1", fn="Nils").encode())
    from mailfiler.sync import crm

    def broken_write(self, record_id, changed):
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(crm.ContactStore, "write", broken_write)
    [r] = await rig.sync("contacts")
    assert r.state == "error"
    assert Record.select().where(Record.entity == "contact").count() == 0
    assert ContactDetails.select().count() == 0
    monkeypatch.undo()
    [r] = await rig.sync_ok("contacts")
    assert r.created_crm == 1 and set(crm_contacts()) == {"Nils"}


async def test_an_item_edited_while_the_sync_runs_is_not_overwritten(rig: Rig) -> None:
    crm_contact("c1", "C1", job_title="v1")
    await rig.sync_ok("contacts")
    filename = rig.file_of("C1")
    cid = Record.get(Record.key == "c1").id
    from mailfiler.sync.crm import ContactStore

    ContactStore().write(cid, {"job_title": "crm v2"})
    inner = rig.contacts_target
    assert inner is not None

    def user_edits_first(op: str, n: int):
        if op == "update":
            rig.edit_contact(filename, notes="typed while syncing")
        return None

    rig.contacts_target = FlakyTarget(inner, user_edits_first)
    [r] = await rig.sync("contacts")
    assert r.skipped == 1
    rig.contacts_target = inner
    await rig.sync_ok("contacts")
    mine = rig.by_name()["C1"]
    assert (mine["job_title"], mine["notes"]) == ("crm v2", "typed while syncing")
    assert crm_contacts()["C1"]["notes"] == "typed while syncing"


def test_vcard_helper_round_trip() -> None:
    assert vcard.parse(CARD.format(uid="x", fn="Å").encode()).fields["name"] == "Å"


def stored_token() -> str | None:
    return SyncState.load(SyncCollection.get().token).token


async def test_sync_tokens_read_only_what_changed(store: Store, tmp_path: Path) -> None:
    from mailfiler.sync.memory import MemoryTarget

    target = MemoryTarget("contacts", "memory:contacts")
    reads: list[list[str]] = []
    listings = []
    real_get_multi, real_list = target.get_multi, target.list

    async def counting_get_multi(hrefs):
        reads.append(list(hrefs))
        return await real_get_multi(hrefs)

    async def counting_list():
        listings.append(1)
        return await real_list()

    target.get_multi = counting_get_multi  # type: ignore[method-assign]
    target.list = counting_list  # type: ignore[method-assign]
    rig = Rig(store.db, tmp_path, make_mailbox(), contacts_target=target)
    for i in range(5):
        crm_contact(f"c{i}", f"C{i}")
    await rig.sync_ok("contacts")
    # the token is taken before reading (lieer's rule); after writing, the changes since then are
    # asked for once more: all five are our own uploads at the etags we recorded, so the newer
    # token is kept and the next sync does not see them again
    assert listings == [1] and stored_token() == "5"
    # the user edits one card and deletes another: only that one is read, no listing
    href, (etag, data, _) = sorted(target.items.items())[0]
    await target.update(href, data.replace(b"FN:C", b"FN:Edited C"), etag)
    gone, (gone_etag, _, _) = sorted(target.items.items())[1]
    await target.delete(gone, gone_etag)
    reads.clear()
    [r] = await rig.sync_ok("contacts")
    assert listings == [1] and reads == [[href]]
    assert (r.updated_crm, r.unlinked) == (1, 1)
    assert stored_token() == "7"
    # a token the target no longer knows: one full listing, and nothing is lost
    SyncCollection.update(token="999").execute()
    [r] = await rig.sync_ok("contacts")
    assert listings == [1, 1] and r.changes == 0
    # a target without tokens
    target.supports_tokens = False
    [r] = await rig.sync_ok("contacts")
    assert r.changes == 0 and stored_token() is None


async def test_a_failed_item_keeps_the_sync_token(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailfiler.sync import crm
    from mailfiler.sync.memory import MemoryTarget

    target = MemoryTarget("contacts", "memory:contacts")
    rig = Rig(store.db, tmp_path, make_mailbox(), contacts_target=target)
    crm_contact("c1", "C1")
    crm_contact("c2", "C2")
    await rig.sync_ok("contacts")
    await rig.sync_ok("contacts")
    token = stored_token()
    href, (etag, data, _) = sorted(target.items.items())[0]
    await target.update(href, data.replace(b"FN:C", b"FN:Edited C"), etag)

    def broken_write(self, record_id, changed):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(crm.ContactStore, "write", broken_write)
    [r] = await rig.sync("contacts")
    assert r.state == "error" and stored_token() == token
    monkeypatch.undo()
    [r] = await rig.sync_ok("contacts")
    assert r.updated_crm == 1 and "Edited C1" in crm_contacts()
