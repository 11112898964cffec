"""The engine on real vdir folders and real stores: contacts."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailfiler.config.syncschema import SyncFilter
from mailfiler.store.models import Record, RecordAddress
from mailfiler.store.syncmodels import SyncItem
from tests.store.helpers import Store
from tests.sync.helpers import OWNER, Rig, crm_contact, crm_contacts, make_mailbox, policy

ADDRESSES = [
    {"kind": "work", "po_box": "", "extended": "", "street": "Storgatan 1, 3 tr", "locality": "Malmö",
     "region": "Skåne", "postal_code": "211 34", "country": "Sverige"},
    {"kind": "home", "po_box": "", "extended": "", "street": "Hemvägen 2", "locality": "Lund", "region": "",
     "postal_code": "222 22", "country": "Sverige"},
]  # fmt: skip


@pytest.fixture
def rig(store: Store, tmp_path: Path) -> Rig:
    return Rig(store.db, tmp_path, make_mailbox())


async def test_crm_contact_with_several_addresses_reaches_the_address_book(rig: Rig) -> None:
    account = Record.create(entity="account", key="contoso", name="Contoso AB")
    crm_contact("asa", "Åsa Öberg", parent=account, emails=["asa@contoso.com", "asa@hemma.se"],
                phones=[["cell", "+46 70 123"]], job_title="Säljchef", addresses=ADDRESSES, notes="Två\nrader")  # fmt: skip
    [contacts] = await rig.sync_ok("contacts")
    assert contacts.uploaded == 1 and contacts.items == 1
    mine = rig.by_name()["Åsa Öberg"]
    assert mine == crm_contacts()["Åsa Öberg"]
    assert mine["company"] == "Contoso AB" and mine["addresses"] == ADDRESSES


async def test_edits_flow_both_ways_and_a_resync_is_quiet(rig: Rig) -> None:
    crm_contact("bob", "Bob Smith", emails=["bob@contoso.com"], job_title="CEO")
    await rig.sync_ok("contacts")
    filename = rig.file_of("Bob Smith")
    rig.edit_contact(filename, job_title="CTO", phones=[["work", "+1 555"]])
    [r] = await rig.sync_ok("contacts")
    assert (r.updated_crm, r.updated_mailbox) == (1, 0)
    assert crm_contacts()["Bob Smith"]["phones"] == [["work", "+1 555"]]
    cid = Record.get(Record.key == "bob").id
    from mailfiler.sync.crm import ContactStore

    ContactStore().write(cid, {"notes": "Met at the fair"})
    before = (rig.contacts_dir / filename).stat().st_mtime_ns
    [r] = await rig.sync_ok("contacts")
    assert (r.updated_crm, r.updated_mailbox) == (0, 1)
    assert rig.by_name()["Bob Smith"]["notes"] == "Met at the fair"
    assert (rig.contacts_dir / filename).stat().st_mtime_ns != before
    after = (rig.contacts_dir / filename).stat().st_mtime_ns
    [r] = await rig.sync_ok("contacts")
    assert r.changes == 0 and (rig.contacts_dir / filename).stat().st_mtime_ns == after


@pytest.mark.parametrize(
    ("conflicts", "winner"), [("crm-wins", "CRM"), ("mailbox-wins", "mine"), ("newest-wins", "CRM")]
)
async def test_a_conflict_follows_the_policy_and_is_logged_with_both_values(
    rig: Rig, conflicts: str, winner: str, caplog: pytest.LogCaptureFixture
) -> None:
    rig.contacts_policy = policy(conflicts=conflicts)
    crm_contact("bob", "Bob Smith", job_title="CEO", notes="old")
    await rig.sync_ok("contacts")
    rig.edit_contact(rig.file_of("Bob Smith"), job_title="mine", notes="user note")
    from mailfiler.sync.crm import ContactStore

    # the CRM edit is the later one: newest-wins picks it
    ContactStore().write(Record.get(Record.key == "bob").id, {"job_title": "CRM"})
    with caplog.at_level(logging.WARNING, logger="mailfiler.sync"):
        [r] = await rig.sync_ok("contacts")
    assert r.conflicts == 1
    assert crm_contacts()["Bob Smith"]["job_title"] == winner == rig.by_name()["Bob Smith"]["job_title"]
    # the field only the user changed is no conflict: it comes across
    assert crm_contacts()["Bob Smith"]["notes"] == "user note"
    [record] = [rec for rec in caplog.records if getattr(rec, "event", "") == "sync-conflict"]
    assert (record.field, record.crm_value, record.mailbox_value) == ("job_title", "CRM", "mine")
    assert '"CRM"' in record.getMessage() and '"mine"' in record.getMessage()


async def test_field_directions(rig: Rig) -> None:
    rig.contacts_policy = policy(directions={"notes": "to_mailbox", "job_title": "from_mailbox", "company": "none"})
    crm_contact("bob", "Bob Smith", job_title="CEO", notes="crm note", company="Contoso")
    await rig.sync_ok("contacts")
    # created on the user's side with everything but the "none" field
    assert rig.by_name()["Bob Smith"]["company"] == ""
    assert rig.by_name()["Bob Smith"]["job_title"] == "CEO"
    rig.edit_contact(rig.file_of("Bob Smith"), notes="my note", job_title="Boss", company="Mine AB")
    from mailfiler.sync.crm import ContactStore

    ContactStore().write(Record.get(Record.key == "bob").id, {"job_title": "Chief", "company": "Contoso 2"})
    await rig.sync_ok("contacts")
    crm, mine = crm_contacts()["Bob Smith"], rig.by_name()["Bob Smith"]
    assert crm["notes"] == mine["notes"] == "crm note"  # to_mailbox: the user's edit is overwritten
    assert crm["job_title"] == mine["job_title"] == "Boss"  # from_mailbox: the CRM edit is overwritten
    assert (crm["company"], mine["company"]) == ("Contoso 2", "Mine AB")  # none: each keeps its own


async def test_sync_filters_select_and_a_contact_that_stops_matching_leaves(rig: Rig) -> None:
    rig.contacts_policy = policy(filters=[SyncFilter(owner="mailbox")])
    crm_contact("mine", "Mine", owner=OWNER)
    crm_contact("theirs", "Theirs", owner="erik@example.com")
    await rig.sync_ok("contacts")
    assert set(rig.by_name()) == {"Mine"}
    filename = rig.file_of("Mine")
    rig.edit_contact(filename, notes="written just before it left")
    from mailfiler.store.detailmodels import ContactDetails

    ContactDetails.update(owner="erik@example.com").execute()
    [r] = await rig.sync("contacts")
    # the CRM now selects nothing for this mailbox: the guard stops it
    assert r.state == "stopped"
    rig.force_delete = True
    [r] = await rig.sync_ok("contacts")
    assert r.deleted_mailbox == 1 and rig.by_name() == {}
    # the user's last edit was not lost
    assert crm_contacts()["Mine"]["notes"] == "written just before it left"


async def test_regarding_filter_for_contacts_by_parent(rig: Rig) -> None:
    contoso = Record.create(entity="account", key="contoso", name="Contoso")
    fabrikam = Record.create(entity="account", key="fabrikam", name="Fabrikam")
    rig.contacts_policy = policy(filters=[SyncFilter(regarding=["account:contoso"])])
    crm_contact("a", "At Contoso", parent=contoso)
    crm_contact("b", "At Fabrikam", parent=fabrikam)
    await rig.sync_ok("contacts")
    assert set(rig.by_name()) == {"At Contoso"}


async def test_crm_delete_removes_the_copy(rig: Rig) -> None:
    crm_contact("a", "Anna A")
    crm_contact("b", "Bo B")
    await rig.sync_ok("contacts")
    Record.delete().where(Record.key == "a").execute()
    [r] = await rig.sync_ok("contacts")
    assert r.deleted_mailbox == 1 and set(rig.by_name()) == {"Bo B"}


@pytest.mark.parametrize("rule", ["unlink", "restore", "delete-in-crm"])
async def test_user_deletes_a_synced_contact(rig: Rig, rule: str) -> None:
    rig.contacts_policy = policy(on_mailbox_delete=rule)
    crm_contact("a", "Anna A")
    crm_contact("b", "Bo B")
    await rig.sync_ok("contacts")
    (rig.contacts_dir / rig.file_of("Anna A")).unlink()
    await rig.sync_ok("contacts")
    await rig.sync_ok("contacts")  # and it stays that way
    in_crm = set(crm_contacts())
    mine = set(rig.by_name())
    if rule == "unlink":
        assert (in_crm, mine) == ({"Anna A", "Bo B"}, {"Bo B"})
        assert SyncItem.select().where(SyncItem.state == "unlinked").count() == 1
    elif rule == "restore":
        assert in_crm == mine == {"Anna A", "Bo B"}
    else:
        assert in_crm == mine == {"Bo B"}


async def test_a_tracked_card_becomes_a_contact_or_links_by_e_mail(rig: Rig) -> None:
    crm_contact("bob", "Bob Smith", emails=["bob@contoso.com"], owner="someone@example.com")
    rig.contacts_policy = policy(filters=[SyncFilter(owner="mailbox")])
    card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{fn}\r\nN:;;;;\r\nEMAIL:{email}\r\n{cat}END:VCARD\r\n"
    rig.write_item(
        "contacts",
        "new.vcf",
        card.format(uid="n1", fn="Nya Nisse", email="nisse@x.se", cat="CATEGORIES:Tracked\r\n").encode(),
    )
    rig.write_item(
        "contacts",
        "bob.vcf",
        card.format(uid="b1", fn="Bobby", email="BOB@contoso.com", cat="CATEGORIES:work,tracked\r\n").encode(),
    )
    rig.write_item("contacts", "private.vcf", card.format(uid="p1", fn="Mamma", email="mamma@hem.se", cat="").encode())
    [r] = await rig.sync_ok("contacts")
    assert (r.created_crm, r.linked) == (1, 2)
    crm = crm_contacts()
    assert set(crm) == {"Nya Nisse", "Bob Smith"}  # the private card stays private
    # first link: a name both sides have is a conflict (crm-wins); the e-mail lists are merged
    assert rig.by_name()["Bob Smith"]["emails"] == ["bob@contoso.com"]
    nisse = Record.get(Record.name == "Nya Nisse")
    assert (nisse.key, nisse.contact_details.get().owner) == ("nisse@x.se", OWNER)
    assert [a.value for a in RecordAddress.select().where(RecordAddress.record == nisse)] == ["nisse@x.se"]
    [r] = await rig.sync_ok("contacts")
    assert r.changes == 0
