"""The engine on real vdir folders and real stores: appointments."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import icalendar
import pytest

from mailfiler.config.syncschema import SyncFilter
from mailfiler.store.detailmodels import AppointmentDetails
from mailfiler.store.models import Activity, ActivityParty, Record
from mailfiler.sync import ical
from mailfiler.sync.crm import AppointmentStore
from mailfiler.sync.engine import Collection
from mailfiler.sync.items import APPOINTMENT_FIELDS, empty_fields
from mailfiler.sync.vdir import VdirTarget
from tests.store.helpers import Store
from tests.sync.helpers import OWNER, Rig, crm_appointment, crm_appointments, make_mailbox, policy

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


@pytest.fixture
def rig(store: Store, tmp_path: Path) -> Rig:
    return Rig(store.db, tmp_path, make_mailbox())


async def test_recurring_appointment_with_moved_and_cancelled_occurrences(rig: Rig) -> None:
    contoso = Record.create(entity="account", key="contoso", name="Contoso")
    crm_appointment(
        "weekly-1",
        "Veckomöte",
        f"2024-03-18T09:00:00[{STO}]",
        f"2024-03-18T10:00:00[{STO}]",
        regarding=contoso,
        organizer=[OWNER, "Anna"],
        attendees=[["bo@contoso.com", "Bo Ek", "required"], ["cy@x.se", "", "optional"]],
        rrule="FREQ=WEEKLY;COUNT=6;BYDAY=MO",
        exdates=[f"2024-04-08T09:00:00[{STO}]"],
        overrides=[MOVED],
    )
    [r] = await rig.sync_ok("calendar")
    assert r.uploaded == 1
    [(filename, mine)] = rig.parsed("calendar").items()
    assert filename == "weekly-1.ics"
    assert mine.fields == crm_appointments()["Veckomöte"]
    # the user cancels one more occurrence and moves another one back
    fields = {**mine.fields, "exdates": [*mine.fields["exdates"], f"2024-04-15T09:00:00[{STO}]"], "overrides": []}
    data = (rig.calendar_dir / filename).read_bytes()
    rig.write_item("calendar", filename, ical.render(fields, {"exdates", "overrides"}, uid="weekly-1", existing=data))
    [r] = await rig.sync_ok("calendar")
    assert r.updated_crm == 1
    crm = crm_appointments()["Veckomöte"]
    assert crm["exdates"] == [f"2024-04-08T09:00:00[{STO}]", f"2024-04-15T09:00:00[{STO}]"]
    assert crm["overrides"] == []
    a = Activity.get(Activity.subject == "Veckomöte")
    assert a.kind == "appointment" and a.regarding_id == contoso.id
    roles = sorted((p.role, p.address) for p in ActivityParty.select().where(ActivityParty.activity == a))
    assert roles == [("cc", "cy@x.se"), ("from", OWNER), ("to", "bo@contoso.com")]


async def test_all_day_and_dst_times_keep_their_form(rig: Rig) -> None:
    crm_appointment("ms", "Midsommar", "2024-06-21", "2024-06-22")
    crm_appointment("dst", "Natten till sommartid", f"2024-03-31T01:30:00[{STO}]", f"2024-03-31T03:30:00[{STO}]")
    await rig.sync_ok("calendar")
    mine = {p.fields["subject"]: p.fields for p in rig.parsed("calendar").values()}
    assert mine == crm_appointments()
    details = {d.uid: d for d in AppointmentDetails.select()}
    assert details["ms"].all_day and not details["dst"].all_day
    # 01:30 CET is 00:30 UTC; 03:30 CEST is 01:30 UTC: the night is one hour shorter
    assert (details["dst"].starts_at.hour, details["dst"].ends_at.hour) == (0, 1)


async def test_an_event_the_user_moves_moves_in_the_crm(rig: Rig) -> None:
    crm_appointment("m1", "Möte", "2024-05-02T10:00:00Z", "2024-05-02T11:00:00Z")
    await rig.sync_ok("calendar")
    path = rig.calendar_dir / "m1.ics"
    cal = icalendar.Calendar.from_ical(path.read_bytes())
    ev = next(iter(cal.walk("VEVENT")))
    ev["DTSTART"] = icalendar.vDDDTypes(dt.datetime(2024, 5, 3, 10, 0, tzinfo=dt.UTC))
    ev["DTEND"] = icalendar.vDDDTypes(dt.datetime(2024, 5, 3, 11, 0, tzinfo=dt.UTC))
    rig.write_item("calendar", "m1.ics", cal.to_ical())
    await rig.sync_ok("calendar")
    assert crm_appointments()["Möte"]["start"] == "2024-05-03T10:00:00Z"
    assert AppointmentDetails.get(AppointmentDetails.uid == "m1").starts_at.day == 3


async def test_appointment_filters_owner_party_and_regarding(rig: Rig) -> None:
    contoso = Record.create(entity="account", key="contoso", name="Contoso")
    rig.calendar_policy = policy(
        filters=[SyncFilter(owner="mailbox"), SyncFilter(party="mailbox"), SyncFilter(regarding=["account:contoso"])]
    )
    crm_appointment("own", "Mine", "2024-05-02", owner=OWNER)
    crm_appointment("inv", "Invited", "2024-05-02", owner="erik@example.com", attendees=[[OWNER, "", "required"]])
    crm_appointment("reg", "Contoso", "2024-05-02", owner="erik@example.com", regarding=contoso)
    crm_appointment("no", "Not mine", "2024-05-02", owner="erik@example.com")
    await rig.sync_ok("calendar")
    assert {p.fields["subject"] for p in rig.parsed("calendar").values()} == {"Mine", "Invited", "Contoso"}


async def test_tracked_calendar_brings_events_in_regarding_its_record(store: Store, tmp_path: Path) -> None:
    contoso = Record.create(entity="account", key="contoso", name="Contoso")
    tracked = VdirTarget("calendar", tmp_path / "contoso-cal")
    rig = Rig(
        store.db, tmp_path, make_mailbox(), extra=[Collection(tracked, role="tracked", regarding="account:contoso")]
    )
    f = {**empty_fields("calendar"), "subject": "Kickoff", "start": "2024-05-02T09:00:00Z"}
    (tmp_path / "contoso-cal").mkdir()
    (tmp_path / "contoso-cal" / "k1.ics").write_bytes(ical.render(f, set(APPOINTMENT_FIELDS), uid="k1"))
    await rig.sync_ok("calendar")
    a = Activity.get(Activity.subject == "Kickoff")
    assert (a.kind, a.regarding_id, a.owner) == ("appointment", contoso.id, OWNER)
    # it is the user's own, kept where it is: not copied into the main calendar
    assert rig.files("calendar") == {}
    AppointmentStore().write(a.id, {"location": "Malmö"})
    await rig.sync_ok("calendar")
    assert ical.parse((tmp_path / "contoso-cal" / "k1.ics").read_bytes()).fields["location"] == "Malmö"


async def test_a_copy_of_a_synced_event_in_a_tracked_calendar_is_not_tracked_twice(
    store: Store, tmp_path: Path
) -> None:
    tracked = VdirTarget("calendar", tmp_path / "contoso-cal")
    rig = Rig(store.db, tmp_path, make_mailbox(), extra=[Collection(tracked, role="tracked")])
    crm_appointment("m1", "Möte", "2024-05-02T10:00:00Z")
    await rig.sync_ok("calendar")
    (tmp_path / "contoso-cal" / "copy.ics").write_bytes((rig.calendar_dir / "m1.ics").read_bytes())
    [_, other] = await rig.sync_ok("calendar")
    assert other.created_crm == 0 and len(crm_appointments()) == 1
