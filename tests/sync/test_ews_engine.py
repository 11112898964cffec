"""The sync engine with an Exchange mailbox's Contacts and Calendar as its targets, on the
fake Exchange: CRM -> Exchange, an edit in Outlook (a plain exchangelib client) -> CRM,
both sides edited and merged, a recurring event with exceptions, an emptied folder, a
stale ChangeKey, ErrorServerBusy."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from exchangelib import Account
from exchangelib.protocol import close_connections

from mailfiler.store.models import Record
from mailfiler.sync.crm import AppointmentStore, ContactStore
from tests.servers.ews import EwsServer
from tests.store.helpers import Store
from tests.sync.helpers import OWNER, Rig, crm_appointment, crm_appointments, crm_contact, crm_contacts, make_mailbox
from tests.sync.test_ews_targets import ALICE, ews_target, outlook

STO = "Europe/Stockholm"
MOVED = {
    "recurrence_id": f"2024-04-01T09:00:00[{STO}]",
    "subject": "Veckomöte (flyttat)",
    "start": f"2024-04-02T13:00:00[{STO}]",
    "end": f"2024-04-02T14:00:00[{STO}]",
    "location": "",
    "status": "confirmed",
    "body": "",
}


@dataclass
class Ews:
    rig: Rig
    server: EwsServer
    outlook: Account

    def contacts(self) -> dict[str, Any]:
        """What Outlook shows: the contacts by display name."""
        return {c.display_name: c for c in self.outlook.contacts.all()}

    def events(self) -> dict[str, Any]:
        return {e.subject: e for e in self.outlook.calendar.all()}


@pytest.fixture
def server() -> Iterator[EwsServer]:
    with EwsServer([{"smtp": ALICE, "password": "pw"}]) as fake:
        yield fake
    close_connections()


@pytest.fixture
async def ews(sqlite_store: Store, tmp_path: Path, server: EwsServer) -> AsyncIterator[Ews]:
    contacts, calendar = ews_target(server, "contacts"), ews_target(server, "calendar")
    rig = Rig(sqlite_store.db, tmp_path, make_mailbox(owner=OWNER), contacts_target=contacts, calendar_target=calendar)
    yield Ews(rig, server, outlook(server))
    await contacts.close()
    await calendar.close()


async def test_crm_to_exchange_then_quiet(ews: Ews) -> None:
    crm_contact("asa", "Åsa Öberg", emails=["asa@contoso.com"], phones=[["cell", "+46 70 123"]], job_title="Säljchef",
                company="Contoso AB")  # fmt: skip
    crm_appointment("m1", "Möte", f"2024-05-02T10:00:00[{STO}]", f"2024-05-02T11:00:00[{STO}]", location="Malmö")
    contacts, calendar = await ews.rig.sync_ok()
    assert (contacts.uploaded, calendar.uploaded) == (1, 1)
    asa = ews.contacts()["Åsa Öberg"]
    assert (asa.job_title, asa.company_name, asa.email_addresses[0].email) == (
        "Säljchef",
        "Contoso AB",
        "asa@contoso.com",
    )
    assert [(p.label, p.phone_number) for p in asa.phone_numbers] == [("MobilePhone", "+46 70 123")]
    event = ews.events()["Möte"]
    assert (event.location, event.uid) == ("Malmö", "m1")
    assert event.start.astimezone(event._start_timezone).hour == 10
    ews.server.requests.clear()
    results = await ews.rig.sync_ok()
    assert [r.changes for r in results] == [0, 0]
    # the steady state: one SyncFolderItems per folder, nothing read
    assert ews.server.operations() == ["SyncFolderItems", "SyncFolderItems"]


async def test_an_outlook_edit_reaches_the_crm_and_a_crm_edit_reaches_outlook(ews: Ews) -> None:
    crm_contact("bob", "Bob Smith", emails=["bob@contoso.com"], job_title="CEO")
    await ews.rig.sync_ok("contacts")
    bob = ews.contacts()["Bob Smith"]
    bob.job_title = "CTO"
    bob.save(update_fields=["job_title"])
    [r] = await ews.rig.sync_ok("contacts")
    assert (r.updated_crm, r.updated_mailbox) == (1, 0)
    assert crm_contacts()["Bob Smith"]["job_title"] == "CTO"
    ContactStore().write(Record.get(Record.key == "bob").id, {"notes": "Träffades på mässan"})
    [r] = await ews.rig.sync_ok("contacts")
    assert (r.updated_crm, r.updated_mailbox) == (0, 1)
    assert ews.contacts()["Bob Smith"].body == "Träffades på mässan"
    [r] = await ews.rig.sync_ok("contacts")
    assert r.changes == 0


async def test_edits_on_both_sides_are_merged(ews: Ews) -> None:
    crm_contact("bob", "Bob Smith", job_title="CEO", notes="old")
    await ews.rig.sync_ok("contacts")
    bob = ews.contacts()["Bob Smith"]
    bob.job_title, bob.body = "mine", "user note"
    bob.save(update_fields=["job_title", "body"])
    ContactStore().write(Record.get(Record.key == "bob").id, {"job_title": "CRM"})
    [r] = await ews.rig.sync_ok("contacts")
    assert r.conflicts == 1
    assert crm_contacts()["Bob Smith"]["job_title"] == "CRM"  # crm-wins, the default
    assert crm_contacts()["Bob Smith"]["notes"] == "user note"  # no conflict: the user's edit
    bob = ews.contacts()["Bob Smith"]
    assert (bob.job_title, bob.body) == ("CRM", "user note")


async def test_a_recurring_event_with_exceptions_round_trips(ews: Ews) -> None:
    crm_appointment(
        "weekly-1", "Veckomöte", f"2024-03-18T09:00:00[{STO}]", f"2024-03-18T10:00:00[{STO}]",
        attendees=[["bo@contoso.com", "Bo Ek", "required"], ["cy@x.se", "", "optional"]],
        rrule="FREQ=WEEKLY;COUNT=6;BYDAY=MO", exdates=[f"2024-04-08T09:00:00[{STO}]"], overrides=[MOVED],
    )  # fmt: skip
    crm_appointment("ms", "Midsommar", "2024-06-21", "2024-06-22")
    await ews.rig.sync_ok("calendar")
    weekly = ews.events()["Veckomöte"]
    assert weekly.recurrence.boundary.number == 6
    # the exceptions are Exchange's: the cancelled and the moved occurrence
    assert [d.start.isoformat() for d in weekly.deleted_occurrences] == ["2024-04-08T07:00:00+00:00"]
    assert [o.original_start.isoformat() for o in weekly.modified_occurrences] == ["2024-04-01T07:00:00+00:00"]
    assert [a.mailbox.email_address for a in weekly.required_attendees] == ["bo@contoso.com"]
    assert ews.events()["Midsommar"].is_all_day
    weekly.location = "Rum 4"
    weekly.save(update_fields=["location"])
    [r] = await ews.rig.sync_ok("calendar")
    assert r.updated_crm == 1
    crm = crm_appointments()["Veckomöte"]
    assert crm["location"] == "Rum 4" and crm["rrule"] == "FREQ=WEEKLY;COUNT=6;BYDAY=MO"
    assert crm["exdates"] == [f"2024-04-08T09:00:00[{STO}]"] and crm["overrides"] == [MOVED]
    assert crm["start"] == f"2024-03-18T09:00:00[{STO}]"  # the zone as the CRM named it
    # Outlook cancels the last occurrence: one more EXDATE in the CRM
    ews.events()["Veckomöte"].occurrence(6).delete()
    [r] = await ews.rig.sync_ok("calendar")
    assert r.updated_crm == 1
    assert crm_appointments()["Veckomöte"]["exdates"] == [f"2024-04-08T09:00:00[{STO}]", f"2024-04-22T09:00:00[{STO}]"]
    AppointmentStore().write(_id("weekly-1"), {"rrule": "FREQ=WEEKLY;COUNT=8;BYDAY=MO"})
    [r] = await ews.rig.sync_ok("calendar")
    weekly = ews.events()["Veckomöte"]
    assert r.updated_mailbox == 1 and weekly.recurrence.boundary.number == 8
    assert len(weekly.deleted_occurrences) == 2 and len(weekly.modified_occurrences) == 1  # written again
    [r] = await ews.rig.sync_ok("calendar")
    assert r.changes == 0
    assert crm_appointments()["Veckomöte"]["overrides"] == [MOVED]
    # a sync never mails the attendees: every write says SendToNone
    writes = [r.body for r in ews.server.requests if r.operation in ("CreateItem", "UpdateItem", "DeleteItem")]
    assert writes and all(b"SendToAll" not in body and b"SendOnlyTo" not in body for body in writes)


def _id(uid: str) -> Any:
    for key, item in AppointmentStore().load_all().items():
        if item.uid == uid:
            return key
    raise KeyError(uid)


async def test_an_emptied_folder_stops_the_sync(ews: Ews) -> None:
    for i in range(3):
        crm_contact(f"c{i}", f"Kontakt {i}")
    await ews.rig.sync_ok("contacts")
    for item in ews.server.items(ALICE, "Contacts"):
        ews.server.delete_item(item.id)
    [r] = await ews.rig.sync("contacts")
    assert r.state == "stopped" and "is empty, but 3 item(s) were synced there" in r.errors[0]
    assert len(crm_contacts()) == 3


async def test_a_stale_changekey_is_skipped_and_seen_next_time(ews: Ews) -> None:
    crm_contact("bob", "Bob Smith", job_title="CEO")
    await ews.rig.sync_ok("contacts")
    ContactStore().write(Record.get(Record.key == "bob").id, {"notes": "from the CRM"})
    target = ews.rig.contacts_target
    assert target is not None
    original = target.update

    async def racing_update(href: str, data: bytes, etag: str) -> str:
        bob = ews.contacts()["Bob Smith"]  # Outlook saves between the sync's read and its write
        bob.job_title = "Chief"
        bob.save(update_fields=["job_title"])
        return await original(href, data, etag)

    target.update = racing_update  # type: ignore[method-assign]
    [r] = await ews.rig.sync("contacts")
    target.update = original  # type: ignore[method-assign]
    assert r.skipped == 1 and r.updated_mailbox == 0
    assert ews.contacts()["Bob Smith"].job_title == "Chief"
    await ews.rig.sync_ok("contacts")
    bob = ews.contacts()["Bob Smith"]
    assert (bob.job_title, bob.body) == ("Chief", "from the CRM")
    assert crm_contacts()["Bob Smith"]["job_title"] == "Chief"


async def test_server_busy_is_honoured(ews: Ews) -> None:
    for i in range(3):
        crm_contact(f"c{i}", f"Kontakt {i}")
    ews.server.inject_busy("CreateItem", back_off_ms=500, times=2)
    start = time.monotonic()
    [r] = await ews.rig.sync_ok("contacts")
    assert r.uploaded == 3 and time.monotonic() - start >= 1.0
    assert len(ews.contacts()) == 3


async def test_an_appointment_the_user_marks_tracked_in_outlook_becomes_crm_data(ews: Ews) -> None:
    from exchangelib import CalendarItem, EWSDateTime, EWSTimeZone

    start = EWSDateTime(2024, 10, 1, 10, 0, tzinfo=EWSTimeZone(STO))
    acc = ews.outlook
    CalendarItem(account=acc, folder=acc.calendar, subject="Lunch med Åsa", start=start, end=start.replace(hour=11),
                 location="Café Möllan", categories=["Tracked"]).save()  # fmt: skip
    CalendarItem(account=acc, folder=acc.calendar, subject="Tandläkare", start=start.replace(hour=15),
                 end=start.replace(hour=16)).save()  # fmt: skip
    [r] = await ews.rig.sync_ok("calendar")
    assert r.created_crm == 1 and set(crm_appointments()) == {"Lunch med Åsa"}  # the private one stays private
    crm = crm_appointments()["Lunch med Åsa"]
    # Exchange names zones the Windows way: "W. Europe Standard Time" comes back as Europe/Berlin
    assert (crm["start"], crm["location"]) == ("2024-10-01T10:00:00[Europe/Berlin]", "Café Möllan")
    AppointmentStore().write(_id(next(iter(AppointmentStore().load_all().values())).uid), {"location": "Malmö"})
    [r] = await ews.rig.sync_ok("calendar")
    assert r.updated_mailbox == 1
    lunch = ews.events()["Lunch med Åsa"]
    assert (lunch.location, lunch.categories) == ("Malmö", ["Tracked"])
