"""The Exchange (EWS) sync-back targets against the fake Exchange (tests/servers/ews): the
target contract, and what only Exchange does (ChangeKeys, NeverOverwrite, a contact
edited in Outlook, a recurring event, ErrorServerBusy)."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import icalendar
import pytest
from exchangelib import DELEGATE, Account, Build, CalendarItem, Configuration, Contact, Credentials, Version
from exchangelib.properties import ItemId
from exchangelib.protocol import close_connections

from mailfiler.errors import SyncItemExists, SyncPreconditionFailed, SyncTargetUnavailable
from mailfiler.sources.ews.calendar import CalendarTarget
from mailfiler.sources.ews.contacts import ContactsTarget
from mailfiler.sources.ews.settings import EwsSettings
from mailfiler.sources.ews.target import EwsItemTarget
from mailfiler.util.secrets import SecretProvider
from tests.servers.ews import EwsServer
from tests.sync.target_contract import TargetContract, item, kind

__all__ = ["kind"]

ALICE = "alice@example.com"


@pytest.fixture
def server() -> Iterator[EwsServer]:
    with EwsServer([{"smtp": ALICE, "password": "pw"}]) as fake:
        yield fake
    close_connections()


def settings(server: EwsServer, **kw: object) -> EwsSettings:
    secret = SecretProvider("test", password_command=["printf", "pw"])
    base = EwsSettings(url=server.ews_url, username=ALICE, secret=secret, auth="basic", mailbox=ALICE, version="2016")
    return replace(base, **kw)  # type: ignore[arg-type]


def ews_target(server: EwsServer, kind: str, folder: str | None = None, **kw: object) -> EwsItemTarget:
    if kind == "contacts":
        return ContactsTarget(settings(server, **kw), folder)
    return CalendarTarget(settings(server, **kw), folder)


def outlook(server: EwsServer) -> Account:
    """A plain exchangelib client, as Outlook would be."""
    config = Configuration(
        service_endpoint=server.ews_url,
        credentials=Credentials(ALICE, "pw"),
        auth_type="basic",
        version=Version(build=Build(15, 1, 2507, 6)),
    )
    return Account(ALICE, config=config, autodiscover=False, access_type=DELEGATE)


class TestEws(TargetContract):
    @pytest.fixture
    async def target(self, server: EwsServer, kind: str) -> AsyncIterator[EwsItemTarget]:
        t = ews_target(server, kind)
        await t.open()
        yield t
        await t.close()


class TestEwsSubfolder(TargetContract):
    """A named folder below Contacts / Calendar, made at the first call."""

    @pytest.fixture
    async def target(self, server: EwsServer, kind: str) -> AsyncIterator[EwsItemTarget]:
        t = ews_target(server, kind, "CRM")
        await t.open()
        yield t
        await t.close()


async def test_an_outlook_edit_is_read_back_as_a_new_card(server: EwsServer) -> None:
    t = ews_target(server, "contacts")
    card = (
        b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c1\r\nFN:Ada Lovelace\r\nN:Lovelace;Ada;;Dr.;\r\n"
        b"EMAIL:ada@example.com\r\nTEL;TYPE=CELL:+46 70 1\r\nORG:Analytical Engines\r\nBDAY:1815-12-10\r\n"
        b"X-CUSTOM:kept\r\nEND:VCARD\r\n"
    )
    href, etag = await t.upload(card, uid="c1")
    assert (await t.get(href)).data == card  # unchanged in Exchange: our bytes
    acc = outlook(server)
    [contact] = list(acc.contacts.all())
    assert (contact.given_name, contact.surname, contact.company_name) == ("Ada", "Lovelace", "Analytical Engines")
    contact.job_title = "Countess"
    contact.save(update_fields=["job_title"])
    got = await t.get(href)
    assert got.etag != etag
    text = got.data.decode()
    assert "TITLE:Countess" in text and "X-CUSTOM:kept" in text and "BDAY:1815-12-10" in text and "UID:c1" in text
    assert "Dr." in text  # the prefix Exchange cannot hold stays from the kept copy
    with pytest.raises(SyncPreconditionFailed):
        await t.update(href, card, etag)  # the ChangeKey moved: NeverOverwrite refuses
    assert "Countess" in (await t.get(href)).data.decode()


async def test_a_contact_made_in_outlook_gets_a_card(server: EwsServer) -> None:
    acc = outlook(server)
    Contact(account=acc, folder=acc.contacts, display_name="Bo Ek", given_name="Bo", surname="Ek").save()
    t = ews_target(server, "contacts")
    [(href, _)] = (await t.list()).items()
    text = (await t.get(href)).data.decode()
    assert "FN:Bo Ek" in text and "N:Ek;Bo;;;" in text and "UID:ews-" in text


RECURRING = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:r1\r\n"
    b"DTSTAMP:20240101T000000Z\r\nDTSTART;TZID=Europe/Stockholm:20240304T090000\r\n"
    b"DTEND;TZID=Europe/Stockholm:20240304T100000\r\nRRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10\r\n"
    b"EXDATE;TZID=Europe/Stockholm:20240311T090000\r\nSUMMARY:Standup\r\nEND:VEVENT\r\n"
    b"BEGIN:VEVENT\r\nUID:r1\r\nDTSTAMP:20240101T000000Z\r\nRECURRENCE-ID;TZID=Europe/Stockholm:20240318T090000\r\n"
    b"DTSTART;TZID=Europe/Stockholm:20240318T110000\r\nDTEND;TZID=Europe/Stockholm:20240318T120000\r\n"
    b"SUMMARY:Standup (moved)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


async def test_a_recurring_event_is_a_recurring_item_in_exchange(server: EwsServer) -> None:
    t = ews_target(server, "calendar")
    href, _ = await t.upload(RECURRING, uid="r1")
    assert (await t.get(href)).data == RECURRING
    acc = outlook(server)
    [event] = list(acc.calendar.all())
    assert event.uid == "r1" and event.subject == "Standup"
    assert event.recurrence.boundary.number == 10 and [int(d) for d in event.recurrence.pattern.weekdays] == [1]
    # the EXDATE and the RECURRENCE-ID are Exchange's deleted and modified occurrences
    stockholm = zoneinfo.ZoneInfo("Europe/Stockholm")
    [gone] = event.deleted_occurrences
    assert gone.start == dt.datetime(2024, 3, 11, 9, 0, tzinfo=stockholm)
    [moved] = event.modified_occurrences
    assert moved.original_start == dt.datetime(2024, 3, 18, 9, 0, tzinfo=stockholm)
    assert moved.start == dt.datetime(2024, 3, 18, 11, 0, tzinfo=stockholm)
    [occ] = list(acc.fetch([ItemId(moved.id)], only_fields=["subject"]))
    assert occ.subject == "Standup (moved)"
    event.location = "Room 4"
    event.save(update_fields=["location"])
    text = (await t.get(href)).data.decode()
    # rebuilt on the kept copy: the zone as the user named it, the rule, the exceptions
    assert "LOCATION:Room 4" in text and "TZID=Europe/Stockholm:20240304T090000" in text
    assert "RRULE:FREQ=WEEKLY;COUNT=10;BYDAY=MO" in text or "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=10" in text
    assert "RECURRENCE-ID" in text and "EXDATE" in text
    # Outlook cancels the 5th occurrence (after the DST change) and moves the 6th
    [event] = list(acc.calendar.all())
    event.occurrence(5).delete()
    sixth = event.occurrence(6)
    sixth.refresh()
    sixth.start, sixth.end = sixth.start + dt.timedelta(hours=2), sixth.end + dt.timedelta(hours=2)
    sixth.save(update_fields=["start", "end"])
    cal = icalendar.Calendar.from_ical((await t.get(href)).data)
    [master] = [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" not in e]
    props = master["EXDATE"] if isinstance(master["EXDATE"], list) else [master["EXDATE"]]
    exdates = sorted(d.dt for p in props for d in p.dts)
    assert [d.isoformat() for d in exdates] == ["2024-03-11T09:00:00+01:00", "2024-04-01T09:00:00+02:00"]
    overrides = {str(e["RECURRENCE-ID"].dt.isoformat()): e for e in cal.walk("VEVENT") if "RECURRENCE-ID" in e}
    assert sorted(overrides) == ["2024-03-18T09:00:00+01:00", "2024-04-08T09:00:00+02:00"]
    assert overrides["2024-04-08T09:00:00+02:00"]["DTSTART"].dt.isoformat() == "2024-04-08T11:00:00+02:00"
    assert str(overrides["2024-03-18T09:00:00+01:00"]["SUMMARY"]) == "Standup (moved)"


async def test_an_all_day_event_stays_all_day(server: EwsServer) -> None:
    t = ews_target(server, "calendar")
    data = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:d1\r\n"
        b"DTSTAMP:20240101T000000Z\r\nDTSTART;VALUE=DATE:20240501\r\nDTEND;VALUE=DATE:20240502\r\n"
        b"SUMMARY:Holiday\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    href, _ = await t.upload(data, uid="d1")
    assert (await t.get(href)).data == data
    [event] = list(outlook(server).calendar.all())
    assert event.is_all_day


async def test_server_busy_is_waited_out(server: EwsServer) -> None:
    t = ews_target(server, "contacts")
    server.inject_busy("CreateItem", back_off_ms=300, times=1)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await t.upload(item("contacts", "u1"), uid="u1")
    assert loop.time() - start >= 0.3
    assert len(await t.list()) == 1


async def test_a_missing_folder_without_create_is_unavailable(server: EwsServer) -> None:
    t = ews_target(server, "contacts", "Elsewhere")
    await t.open(create=False)
    with pytest.raises(SyncTargetUnavailable):
        await t.list()


async def test_changes_since_reports_outlook_edits(server: EwsServer) -> None:
    t = ews_target(server, "contacts")
    href, _ = await t.upload(item("contacts", "u1"), uid="u1")
    start = await t.changes_since(None)
    assert start is not None
    acc = outlook(server)
    [contact] = list(acc.contacts.all())
    contact.job_title = "Boss"
    contact.save(update_fields=["job_title"])
    delta = await t.changes_since(start.token)
    assert delta is not None and delta.changed == {href: contact.changekey}
    server.invalidate_sync_states(ALICE)
    assert await t.changes_since(delta.token) is None


def test_exchangelib_classes_carry_our_properties() -> None:
    for cls in (Contact, CalendarItem):
        assert cls.get_field_by_fieldname("mf_source") is not None


async def test_a_listing_is_one_sync_folder_items_page_per_request(server: EwsServer) -> None:
    t = ews_target(server, "contacts", page_size=7)
    hrefs = {(await t.upload(item("contacts", f"p{i}"), uid=f"p{i}"))[0] for i in range(20)}
    server.requests.clear()
    assert set(await t.list()) == hrefs
    assert server.operations() == ["SyncFolderItems"] * 3
    with pytest.raises(SyncItemExists):  # the UIDs came with the pages
        await ews_target(server, "contacts", page_size=7).upload(item("contacts", "p13"), uid="p13")
