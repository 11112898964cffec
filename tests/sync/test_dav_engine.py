"""The sync engine against a real Radicale: first sync, the no-change resync
(one REPORT), edits both ways, conflicts, deletes, a server failing in the
middle of a sync, a malformed item on the server, recurrence, all-day, DST,
non-ASCII, and tokens the server no longer knows."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailfiler.store.models import Activity, Record
from mailfiler.store.syncmodels import SyncCollection, SyncItem, SyncShunt
from mailfiler.sync import ical, vcard
from mailfiler.sync.crm import AppointmentStore, ContactStore
from mailfiler.sync.dav import CalDavTarget, CardDavTarget, DavTarget
from mailfiler.sync.items import APPOINTMENT_FIELDS, empty_fields
from mailfiler.sync.state import SyncState
from tests.servers.radicale import DavUser, FaultTransport, dav_user, http_error, radicale
from tests.store.helpers import Store
from tests.sync.helpers import OWNER, Rig, crm_appointment, crm_appointments, crm_contact, crm_contacts, make_mailbox

__all__ = ["dav_user", "radicale"]

STO = "Europe/Stockholm"
ADDRESSES = [
    {"kind": "work", "po_box": "", "extended": "", "street": "Storgatan 1, 3 tr", "locality": "Malmö",
     "region": "Skåne", "postal_code": "211 34", "country": "Sverige"},
    {"kind": "home", "po_box": "", "extended": "", "street": "Hemvägen 2", "locality": "Lund", "region": "",
     "postal_code": "222 22", "country": "Sverige"},
]  # fmt: skip


@dataclass
class Dav:
    """The rig on DAV targets, the requests they send, and a second client: the user's own."""

    rig: Rig
    user: DavUser
    wire: FaultTransport
    contacts: DavTarget
    calendar: DavTarget

    def target(self, kind: str) -> DavTarget:
        return self.contacts if kind == "contacts" else self.calendar

    async def mine(self, kind: str) -> dict[str, tuple[str, Any]]:
        """The user's items as a client sees them: href -> (etag, parsed)."""
        other = _target(self.user, kind)
        await other.open(create=False)
        try:
            listing = await other.list()
            got = await other.get_multi(sorted(listing))
        finally:
            await other.close()
        codec = vcard if kind == "contacts" else ical
        return {f.href: (f.etag, codec.parse(f.data)) for f in got}

    async def by(self, kind: str, key: str) -> dict[str, tuple[str, str, Any]]:
        """The user's items by name (contacts) or subject: value -> (href, etag, parsed)."""
        field = "name" if kind == "contacts" else "subject"
        return {p.fields[field]: (href, etag, p) for href, (etag, p) in (await self.mine(kind)).items()}

    async def user_edit(self, kind: str, key: str, **changes: Any) -> None:
        """The user changes an item in their client (a PUT with the etag it read)."""
        href, etag, parsed = (await self.by(kind, key))[key]
        other = _target(self.user, kind)
        await other.open(create=False)
        [fetched] = await other.get_multi([href])
        codec = vcard if kind == "contacts" else ical
        data = codec.render({**parsed.fields, **changes}, set(changes), uid=parsed.uid, existing=fetched.data)
        await other.update(href, data, etag)
        await other.close()

    async def raw_put(self, kind: str, name: str, data: bytes) -> int:
        async with httpx.AsyncClient(auth=(self.user.name, self.user.password)) as client:
            return (await client.put(self.user.url(f"crm-{kind}") + name, content=data)).status_code

    async def raw_delete(self, url: str) -> int:
        async with httpx.AsyncClient(auth=(self.user.name, self.user.password)) as client:
            return (await client.delete(url)).status_code


def _target(user: DavUser, kind: str, **kw: Any) -> DavTarget:
    cls = CardDavTarget if kind == "contacts" else CalDavTarget
    return cls(user.url(f"crm-{kind}"), **{**user.target_kwargs(), **kw})


@pytest.fixture
async def dav(sqlite_store: Store, tmp_path: Path, dav_user: DavUser) -> AsyncIterator[Dav]:
    wire = FaultTransport()
    contacts = _target(dav_user, "contacts", wrap_transport=wire.wrap)
    calendar = _target(dav_user, "calendar", wrap_transport=wire.wrap)
    rig = Rig(sqlite_store.db, tmp_path, make_mailbox(), contacts_target=contacts, calendar_target=calendar)
    yield Dav(rig, dav_user, wire, contacts, calendar)
    await contacts.close()
    await calendar.close()


def requests_to(wire: FaultTransport, target: DavTarget) -> list[str]:
    path = httpx.URL(target.url).path
    return [f"{s.method}:{s.report}" if s.report else s.method for s in wire.seen if s.path.startswith(path)]


# --- the happy path -------------------------------------------------------------------------


async def test_first_sync_then_a_no_change_resync_is_one_report(dav: Dav) -> None:
    account = Record.create(entity="account", key="contoso", name="Contoso AB")
    crm_contact("asa", "Åsa Öberg", parent=account, emails=["asa@contoso.com", "asa@hemma.se"],
                phones=[["cell", "+46 70 123"]], job_title="Säljchef", addresses=ADDRESSES, notes="Två\nrader")  # fmt: skip
    crm_contact("bob", "Bob Smith", emails=["bob@contoso.com"])
    crm_appointment("m1", "Möte på kontoret", "2024-05-02T10:00:00Z", "2024-05-02T11:00:00Z", location="Malmö")
    contacts, calendar = await dav.rig.sync_ok()
    assert (contacts.uploaded, calendar.uploaded) == (2, 1)
    mine = {name: p.fields for name, (_, _, p) in (await dav.by("contacts", "name")).items()}
    assert mine == crm_contacts() and mine["Åsa Öberg"]["addresses"] == ADDRESSES
    assert {s: p.fields for s, (_, _, p) in (await dav.by("calendar", "subject")).items()} == crm_appointments()
    tokens = [SyncState.load(c.token).token for c in SyncCollection.select()]
    assert all(t and t.startswith("http://radicale.org/ns/sync/") for t in tokens)

    for _ in range(2):  # the sync after the uploads, then the steady state: nothing, and nothing looked at
        dav.wire.clear()
        results = await dav.rig.sync_ok()
        assert [(r.changes, r.quiet) for r in results] == [(0, True), (0, True)]
        assert requests_to(dav.wire, dav.contacts) == ["REPORT:sync-collection"]
        assert requests_to(dav.wire, dav.calendar) == ["REPORT:sync-collection"]


async def test_edits_flow_both_ways(dav: Dav) -> None:
    crm_contact("bob", "Bob Smith", emails=["bob@contoso.com"], job_title="CEO")
    await dav.rig.sync_ok("contacts")
    await dav.user_edit("contacts", "Bob Smith", job_title="CTO", phones=[["work", "+1 555"]])
    dav.wire.clear()
    [r] = await dav.rig.sync_ok("contacts")
    assert (r.updated_crm, r.updated_mailbox) == (1, 0)
    assert crm_contacts()["Bob Smith"]["job_title"] == "CTO"
    # the changed item is read with one multiget, found by the token's delta
    assert requests_to(dav.wire, dav.contacts) == ["REPORT:sync-collection", "REPORT:addressbook-multiget"]
    ContactStore().write(Record.get(Record.key == "bob").id, {"notes": "Träffades på mässan"})
    dav.wire.clear()
    [r] = await dav.rig.sync_ok("contacts")
    assert (r.updated_crm, r.updated_mailbox) == (0, 1)
    assert (await dav.by("contacts", "name"))["Bob Smith"][2].fields["notes"] == "Träffades på mässan"
    # the user's copy is read (to keep what mailfiler does not manage), then written with its etag;
    # then the changes since the token are asked for again: only our PUT, so the newer token is kept
    assert requests_to(dav.wire, dav.contacts) == [
        "REPORT:sync-collection", "REPORT:addressbook-multiget", "PUT", "REPORT:sync-collection"
    ]  # fmt: skip
    dav.wire.clear()
    [r] = await dav.rig.sync_ok("contacts")
    assert r.quiet and requests_to(dav.wire, dav.contacts) == ["REPORT:sync-collection"]


async def test_a_conflict_follows_the_policy_and_is_logged(dav: Dav, caplog: pytest.LogCaptureFixture) -> None:
    crm_contact("bob", "Bob Smith", job_title="CEO", notes="old")
    await dav.rig.sync_ok("contacts")
    await dav.user_edit("contacts", "Bob Smith", job_title="mine", notes="user note")
    ContactStore().write(Record.get(Record.key == "bob").id, {"job_title": "CRM"})
    with caplog.at_level(logging.WARNING, logger="mailfiler.sync"):
        [r] = await dav.rig.sync_ok("contacts")
    assert r.conflicts == 1
    assert crm_contacts()["Bob Smith"]["job_title"] == "CRM"  # crm-wins, the default
    assert (await dav.by("contacts", "name"))["Bob Smith"][2].fields["job_title"] == "CRM"
    assert crm_contacts()["Bob Smith"]["notes"] == "user note"
    [conflict] = [rec for rec in caplog.records if getattr(rec, "event", "") == "sync-conflict"]
    assert (conflict.crm_value, conflict.mailbox_value) == ("CRM", "mine")


async def test_a_user_edit_during_the_sync_is_not_overwritten(dav: Dav) -> None:
    """The PUT names the etag the sync read: a change made in between wins a 412, merged next time."""
    crm_contact("bob", "Bob Smith", job_title="CEO")
    await dav.rig.sync_ok("contacts")
    ContactStore().write(Record.get(Record.key == "bob").id, {"notes": "from the CRM"})
    # the user saves a change between the sync's read and its write
    original = dav.contacts.update

    async def racing_update(h: str, data: bytes, e: str) -> str:
        await dav.user_edit("contacts", "Bob Smith", job_title="Chief")
        return await original(h, data, e)

    dav.contacts.update = racing_update  # type: ignore[method-assign]
    [r] = await dav.rig.sync("contacts")
    dav.contacts.update = original  # type: ignore[method-assign]
    assert r.skipped == 1 and r.updated_mailbox == 0
    assert (await dav.by("contacts", "name"))["Bob Smith"][2].fields["job_title"] == "Chief"
    [r] = await dav.rig.sync_ok("contacts")
    fields = (await dav.by("contacts", "name"))["Bob Smith"][2].fields
    assert (fields["job_title"], fields["notes"]) == ("Chief", "from the CRM")
    assert crm_contacts()["Bob Smith"]["job_title"] == "Chief"


async def test_deletes_on_either_side(dav: Dav) -> None:
    crm_contact("bob", "Bob Smith")
    crm_contact("cy", "Cy Young")
    await dav.rig.sync_ok("contacts")
    mine = await dav.by("contacts", "name")
    assert await dav.raw_delete(dav.user.url("crm-contacts") + mine["Bob Smith"][0]) == 200
    Record.get(Record.key == "cy").delete_instance(recursive=True)
    [r] = await dav.rig.sync_ok("contacts")
    assert (r.unlinked, r.deleted_mailbox) == (1, 1)
    assert await dav.mine("contacts") == {}
    assert set(crm_contacts()) == {"Bob Smith"}  # on_mailbox_delete: unlink keeps it in the CRM
    [r] = await dav.rig.sync_ok("contacts")
    assert r.changes == 0 and await dav.mine("contacts") == {}  # ...and it does not come back


async def test_a_wiped_collection_stops_the_sync(dav: Dav) -> None:
    for i in range(3):
        crm_contact(f"c{i}", f"Kontakt {i}")
    await dav.rig.sync_ok("contacts")
    assert await dav.raw_delete(dav.user.url("crm-contacts")) == 200
    [r] = await dav.rig.sync("contacts")
    assert r.state == "stopped" and "is empty, but 3 item(s) were synced there" in r.errors[0]
    assert len(crm_contacts()) == 3


# --- faults ----------------------------------------------------------------------------------


async def test_a_server_error_in_the_middle_of_a_sync(dav: Dav) -> None:
    for i in range(5):
        crm_contact(f"c{i}", f"Kontakt {i}")
    dav.wire.fail = lambda seen, n: http_error(500) if seen.method == "PUT" and n == 3 else None
    [r] = await dav.rig.sync("contacts")
    assert r.state == "error" and r.uploaded == 4
    assert "HTTP 500" in r.errors[0] and "refused the upload of" in r.errors[0]
    assert len(await dav.mine("contacts")) == 4
    assert SyncItem.select().where(SyncItem.state == "linked").count() == 4  # the items done are committed
    dav.wire.fail = None
    [r] = await dav.rig.sync_ok("contacts")
    assert (r.uploaded, r.items) == (1, 5)
    assert len(await dav.mine("contacts")) == 5
    [r] = await dav.rig.sync_ok("contacts")
    assert r.changes == 0


async def test_a_reply_lost_after_the_server_stored_the_item(dav: Dav) -> None:
    """The PUT lands, the connection drops before the reply: the collection stops; the next
    sync finds the item by its UID and links it, with no duplicate."""
    for i in range(4):
        crm_contact(f"c{i}", f"Kontakt {i}")
    dav.wire.fail = lambda seen, n: "lose-reply" if seen.method == "PUT" and n == 2 else None
    [r] = await dav.rig.sync("contacts")
    assert r.state == "unavailable" and r.uploaded == 1 and "the connection failed" in r.errors[0]
    dav.wire.fail = None
    [r] = await dav.rig.sync_ok("contacts")
    assert (r.uploaded, r.linked, r.items) == (2, 1, 4)
    assert len(await dav.mine("contacts")) == 4 and len(crm_contacts()) == 4


async def test_a_server_error_on_the_token_report_stops_cleanly(dav: Dav) -> None:
    crm_contact("bob", "Bob Smith")
    await dav.rig.sync_ok("contacts")
    dav.wire.fail = lambda seen, n: http_error(503) if seen.report == "sync-collection" else None
    [r] = await dav.rig.sync("contacts")
    assert r.state == "unavailable" and "HTTP 503" in r.errors[0]
    dav.wire.fail = None
    [r] = await dav.rig.sync_ok("contacts")
    assert r.changes == 0 and r.items == 1


async def test_an_unknown_token_lists_everything_once(dav: Dav) -> None:
    crm_contact("bob", "Bob Smith")
    await dav.rig.sync_ok("contacts")
    SyncCollection.update(token="http://radicale.org/ns/sync/" + "0" * 64).execute()
    dav.wire.clear()
    [r] = await dav.rig.sync_ok("contacts")
    assert r.changes == 0
    assert requests_to(dav.wire, dav.contacts) == ["REPORT:sync-collection", "PROPFIND:propfind", "PROPFIND:propfind"]
    dav.wire.clear()
    await dav.rig.sync_ok("contacts")
    assert requests_to(dav.wire, dav.contacts) == ["REPORT:sync-collection"]


async def test_a_malformed_item_on_the_server_is_shunted_and_the_rest_goes_on(dav: Dav) -> None:
    crm_appointment("m1", "Möte", "2024-05-02T10:00:00Z")
    todo = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VTODO\r\nUID:t1\r\nDTSTAMP:20240101T000000Z\r\n"
        "SUMMARY:Köp mjölk\r\nEND:VTODO\r\nEND:VCALENDAR\r\n"
    ).encode()
    await dav.calendar.list()  # makes the calendar
    assert await dav.raw_put("calendar", "todo.ics", todo) == 201
    [r] = await dav.rig.sync("calendar")
    assert (r.state, r.shunted, r.uploaded) == ("ok", 1, 1)
    [shunt] = SyncShunt.select()
    assert (shunt.href, shunt.reason) == ("todo.ics", "bad-icalendar") and "no VEVENT" in shunt.detail
    [r] = await dav.rig.sync_ok("calendar")
    assert (r.shunted, r.changes) == (0, 0)  # left alone until it changes
    assert set(await dav.calendar.list()) == {"m1.ics", "todo.ics"}


# --- appointments ----------------------------------------------------------------------------


MOVED = {
    "recurrence_id": f"2024-04-01T09:00:00[{STO}]",
    "subject": "Veckomöte (flyttat)",
    "start": f"2024-04-02T13:00:00[{STO}]",
    "end": f"2024-04-02T14:00:00[{STO}]",
    "location": "",
    "status": "confirmed",
    "body": "",
}


async def test_recurring_all_day_and_dst_appointments_round_trip(dav: Dav) -> None:
    contoso = Record.create(entity="account", key="contoso", name="Contoso")
    crm_appointment(
        "weekly-1", "Veckomöte", f"2024-03-18T09:00:00[{STO}]", f"2024-03-18T10:00:00[{STO}]", regarding=contoso,
        organizer=[OWNER, "Anna"], attendees=[["bo@contoso.com", "Bo Ek", "required"], ["cy@x.se", "", "optional"]],
        rrule="FREQ=WEEKLY;COUNT=6;BYDAY=MO", exdates=[f"2024-04-08T09:00:00[{STO}]"], overrides=[MOVED],
    )  # fmt: skip
    crm_appointment("ms", "Midsommar", "2024-06-21", "2024-06-22")
    crm_appointment("dst", "Natten till sommartid", f"2024-03-31T01:30:00[{STO}]", f"2024-03-31T03:30:00[{STO}]")
    [r] = await dav.rig.sync_ok("calendar")
    assert r.uploaded == 3
    mine = {s: p.fields for s, (_, _, p) in (await dav.by("calendar", "subject")).items()}
    assert mine == crm_appointments()
    # the user cancels one more occurrence and moves the moved one back, in their client
    await dav.user_edit(
        "calendar", "Veckomöte", exdates=[*mine["Veckomöte"]["exdates"], f"2024-04-15T09:00:00[{STO}]"], overrides=[]
    )
    [r] = await dav.rig.sync_ok("calendar")
    assert r.updated_crm == 1
    crm = crm_appointments()["Veckomöte"]
    assert crm["exdates"] == [f"2024-04-08T09:00:00[{STO}]", f"2024-04-15T09:00:00[{STO}]"] and crm["overrides"] == []
    assert Activity.get(Activity.subject == "Veckomöte").regarding_id == contoso.id


async def test_an_event_the_user_tracks_in_their_client(dav: Dav) -> None:
    f = {
        **empty_fields("calendar"),
        "subject": "Lunch med Åsa",
        "start": f"2024-10-27T02:30:00[{STO}]",  # the hour that happens twice
        "end": f"2024-10-27T03:30:00[{STO}]",
        "location": "Café Möllan",
    }
    data = ical.render(f, set(APPOINTMENT_FIELDS), uid="lunch-åsa@example.com")
    data = data.replace(b"END:VEVENT", b"CATEGORIES:Tracked\r\nEND:VEVENT")
    await dav.calendar.list()
    assert await dav.raw_put("calendar", "lunch.ics", data) == 201
    [r] = await dav.rig.sync_ok("calendar")
    assert r.created_crm == 1
    crm = crm_appointments()["Lunch med Åsa"]
    assert (crm["start"], crm["location"]) == (f"2024-10-27T02:30:00[{STO}]", "Café Möllan")
    a = Activity.get(Activity.subject == "Lunch med Åsa")
    AppointmentStore().write(a.id, {"location": "Malmö"})
    [r] = await dav.rig.sync_ok("calendar")
    assert r.updated_mailbox == 1
    assert (await dav.by("calendar", "subject"))["Lunch med Åsa"][2].fields["location"] == "Malmö"
