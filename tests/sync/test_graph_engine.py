"""The sync engine with a Microsoft 365 mailbox's contacts and calendar (the Graph fake) as
the user's side: CRM -> Outlook, Outlook's edits -> CRM, a conflict, a recurring meeting
with changed and cancelled occurrences both ways, and the faults Graph has (412, 429, an
expired delta link, a side that comes back empty)."""

from __future__ import annotations

import datetime as dt
import time

from mailfiler.sync.crm import ContactStore
from tests.graph.helpers import UPN
from tests.servers.graph import GraphFake, faults
from tests.sync.flaky import FlakyTarget
from tests.sync.graphrig import graph, grig, outlook_contacts, outlook_events, requests_of
from tests.sync.helpers import Rig, crm_appointment, crm_appointments, crm_contact, crm_contacts

__all__ = ["graph", "grig"]

STO = "Europe/Stockholm"
ADDRESS = {"kind": "work", "po_box": "", "extended": "", "street": "Storgatan 1", "locality": "Malmö",
           "region": "", "postal_code": "211 34", "country": "Sverige"}  # fmt: skip


def _asa() -> int:
    return crm_contact(
        "asa", "Åsa Öberg", given_name="Åsa", family_name="Öberg", emails=["asa@fabrikam.se"],
        phones=[["cell", "+46 70 123 45 67"], ["work", "+46 40 55 55 00"]], company="Fabrikam AB",
        job_title="Inköpschef", addresses=[ADDRESS],
    )  # fmt: skip


async def test_a_crm_contact_reaches_outlook_and_outlook_edits_come_back(grig: Rig, graph: GraphFake) -> None:
    _asa()
    [r] = await grig.sync_ok("contacts")
    assert r.uploaded == 1
    asa = outlook_contacts(graph)["Åsa Öberg"].fields
    assert (asa["givenName"], asa["surname"], asa["companyName"], asa["jobTitle"]) == (
        "Åsa", "Öberg", "Fabrikam AB", "Inköpschef"
    )  # fmt: skip
    assert [e["address"] for e in asa["emailAddresses"]] == ["asa@fabrikam.se"]
    assert (asa["mobilePhone"], asa["businessPhones"]) == ("+46 70 123 45 67", ["+46 40 55 55 00"])
    assert asa["businessAddress"] == {"street": "Storgatan 1", "city": "Malmö", "state": "",
                                      "postalCode": "211 34", "countryOrRegion": "Sverige"}  # fmt: skip
    [again] = await grig.sync_ok("contacts")
    assert again.quiet and not again.changes

    # Outlook (as the user would) changes the job title and adds a home number
    contact = outlook_contacts(graph)["Åsa Öberg"]
    graph.edit_contact(UPN, contact, jobTitle="Vd", homePhones=["+46 40 12 12 12"])
    [r2] = await grig.sync_ok("contacts")
    assert r2.updated_crm == 1
    crm = crm_contacts()["Åsa Öberg"]
    assert crm["job_title"] == "Vd"
    assert ["home", "+46 40 12 12 12"] in crm["phones"] and ["cell", "+46 70 123 45 67"] in crm["phones"]
    assert crm["addresses"] == [ADDRESS] and crm["emails"] == ["asa@fabrikam.se"]
    [quiet] = await grig.sync_ok("contacts")
    assert not quiet.changes


async def test_a_conflict_is_merged_field_by_field(grig: Rig, graph: GraphFake) -> None:
    cid = _asa()
    await grig.sync_ok("contacts")
    ContactStore().write(cid, {"company": "Fabrikam Nordic AB", "job_title": "CRM says"})
    graph.edit_contact(UPN, outlook_contacts(graph)["Åsa Öberg"], personalNotes="Träffades på mässan",
                       jobTitle="Outlook says")  # fmt: skip
    [r] = await grig.sync_ok("contacts")
    assert r.conflicts == 1  # job title: both changed it (crm-wins); the rest merges
    crm = crm_contacts()["Åsa Öberg"]
    assert (crm["company"], crm["notes"], crm["job_title"]) == ("Fabrikam Nordic AB", "Träffades på mässan", "CRM says")
    asa = outlook_contacts(graph)["Åsa Öberg"].fields
    assert (asa["companyName"], asa["personalNotes"], asa["jobTitle"]) == (
        "Fabrikam Nordic AB", "Träffades på mässan", "CRM says"
    )  # fmt: skip


def _monday(weeks: int) -> dt.date:
    today = dt.date.today()
    return today + dt.timedelta(days=(7 - today.weekday()) % 7 or 7) + dt.timedelta(weeks=weeks)


def _at(day: dt.date, hour: int) -> str:
    return f"{day.isoformat()}T{hour:02d}:00:00[{STO}]"


def _utc(day: dt.date, hour: int) -> str:
    local = dt.datetime(day.year, day.month, day.day, hour, tzinfo=__import__("zoneinfo").ZoneInfo(STO))
    return local.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_recurring_meeting_with_exceptions_round_trips(grig: Rig, graph: GraphFake) -> None:
    first = _monday(0)
    moved = {"recurrence_id": _at(_monday(1), 9), "subject": "Veckomöte (flyttat)", "start": _at(_monday(1), 13),
             "end": _at(_monday(1), 14), "location": "", "status": "confirmed", "body": ""}  # fmt: skip
    crm_appointment("weekly-1", "Veckomöte", _at(first, 9), _at(first, 10), location="Rum 4",
                    body="Agenda i Teams", rrule="FREQ=WEEKLY;COUNT=6;BYDAY=MO",
                    exdates=[_at(_monday(2), 9)], overrides=[moved])  # fmt: skip
    before = crm_appointments()["Veckomöte"]
    [r] = await grig.sync_ok("calendar")
    assert r.uploaded == 1
    series = outlook_events(graph)["Veckomöte"]
    assert series.recurrence is not None and series.recurrence["pattern"]["daysOfWeek"] == ["monday"]
    assert series.recurrence["range"]["numberOfOccurrences"] == 6
    assert set(series.exceptions) == {_utc(_monday(1), 9)} and series.cancelled == {_utc(_monday(2), 9)}
    _, start, _, overrides = series.exceptions[_utc(_monday(1), 9)]
    assert (overrides["subject"], start.strftime("%H:%M")) == ("Veckomöte (flyttat)", _utc(_monday(1), 13)[11:16])
    [again] = await grig.sync_ok("calendar")
    assert not again.changes and crm_appointments()["Veckomöte"] == before

    # in Outlook: one more occurrence changed, another cancelled
    graph.edit_occurrence(UPN, series, _utc(_monday(3), 9), subject="Veckomöte (extra långt)",
                          end={"dateTime": f"{_monday(3).isoformat()}T12:00:00", "timeZone": STO})  # fmt: skip
    graph.cancel_occurrence(UPN, series, _utc(_monday(4), 9))
    [r2] = await grig.sync_ok("calendar")
    assert r2.updated_crm == 1
    crm = crm_appointments()["Veckomöte"]
    assert crm["exdates"] == sorted([_at(_monday(2), 9), _at(_monday(4), 9)])
    assert [o["recurrence_id"] for o in crm["overrides"]] == [_at(_monday(1), 9), _at(_monday(3), 9)]
    extra = crm["overrides"][1]
    assert (extra["subject"], extra["start"], extra["end"]) == (
        "Veckomöte (extra långt)",
        _at(_monday(3), 9),
        _at(_monday(3), 12),
    )
    assert crm["overrides"][0] == moved and (crm["location"], crm["body"]) == ("Rum 4", "Agenda i Teams")
    [quiet] = await grig.sync_ok("calendar")
    assert not quiet.changes


async def test_a_side_that_comes_back_empty_stops_the_sync(grig: Rig, graph: GraphFake) -> None:
    for i in range(3):
        crm_contact(f"c{i}", f"Kontakt {i}", emails=[f"k{i}@example.se"])
    await grig.sync_ok("contacts")
    for contact in list(outlook_contacts(graph).values()):
        graph.delete_contact(UPN, contact)
    [r] = await grig.sync("contacts")
    assert r.state == "stopped" and "is empty" in r.errors[0]
    assert len(crm_contacts()) == 3


async def test_a_412_is_skipped_and_seen_next_time(grig: Rig, graph: GraphFake) -> None:
    cid = _asa()
    await grig.sync_ok("contacts")
    ContactStore().write(cid, {"job_title": "CRM v2"})
    inner = grig.contacts_target
    assert inner is not None

    def outlook_edits_first(op: str, n: int) -> None:
        if op == "update":  # Outlook saves just before our PATCH: Graph answers 412
            graph.edit_contact(UPN, outlook_contacts(graph)["Åsa Öberg"], personalNotes="skrivet under synken")

    grig.contacts_target = FlakyTarget(inner, outlook_edits_first)
    [r] = await grig.sync("contacts")
    assert r.skipped == 1 and outlook_contacts(graph)["Åsa Öberg"].fields["jobTitle"] == "Inköpschef"
    grig.contacts_target = inner
    await grig.sync_ok("contacts")
    asa = outlook_contacts(graph)["Åsa Öberg"].fields
    assert (asa["jobTitle"], asa["personalNotes"]) == ("CRM v2", "skrivet under synken")
    assert crm_contacts()["Åsa Öberg"]["notes"] == "skrivet under synken"


async def test_429_waits_for_retry_after(grig: Rig, graph: GraphFake) -> None:
    _asa()
    faults.throttle(graph, "POST contacts", retry_after=1)
    started = time.monotonic()
    [r] = await grig.sync_ok("contacts")
    assert r.uploaded == 1 and time.monotonic() - started >= 1.0
    assert requests_of(grig).throttled == 1 and len(outlook_contacts(graph)) == 1


async def test_an_expired_delta_link_falls_back_to_a_full_listing(grig: Rig, graph: GraphFake) -> None:
    _asa()
    crm_appointment("lunch-1", "Lunch", _at(_monday(0), 12), _at(_monday(0), 13))
    await grig.sync_ok()
    graph.edit_contact(UPN, outlook_contacts(graph)["Åsa Öberg"], jobTitle="Vd")
    graph.edit_event(UPN, outlook_events(graph)["Lunch"], subject="Lunch med Åsa")
    assert graph.expire_delta_tokens(UPN) > 0
    await grig.sync_ok()
    assert crm_contacts()["Åsa Öberg"]["job_title"] == "Vd"
    assert "Lunch med Åsa" in crm_appointments()
    assert "GET events" in graph.operations() and "GET contacts" in graph.operations()


async def test_the_users_own_outlook_contacts_are_left_alone(grig: Rig, graph: GraphFake) -> None:
    graph.add_contact(UPN, givenName="Bo", surname="Ek", displayName="Bo Ek",
                      emailAddresses=[{"address": "bo@contoso.com", "name": "Bo Ek"}])  # fmt: skip
    _asa()
    await grig.sync_ok("contacts")
    assert set(outlook_contacts(graph)) == {"Bo Ek", "Åsa Öberg"} and set(crm_contacts()) == {"Åsa Öberg"}
    [quiet] = await grig.sync_ok("contacts")
    assert not quiet.changes
