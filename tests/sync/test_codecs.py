"""vCard and iCalendar to fields and back: what a round trip keeps."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import icalendar
import pytest
from dateutil.rrule import rrulestr

from mailfiler.errors import SyncItemUnreadable
from mailfiler.sync import ical, vcard
from mailfiler.sync.items import (
    APPOINTMENT_FIELDS,
    CONTACT_FIELDS,
    content_hash,
    empty_fields,
    time_from_str,
    time_to_str,
    utc_instant,
)

STO = "Europe/Stockholm"

CARD = """BEGIN:VCARD\r
VERSION:3.0\r
UID:asa-1\r
FN:Åsa Öberg-Ødegård\r
N:Öberg-Ødegård;Åsa;Maria;Dr.;\r
EMAIL;TYPE=WORK:Asa@Contoso.COM\r
EMAIL;TYPE=HOME:asa@hemma.se\r
TEL;TYPE=CELL:+46 70 123 45 67\r
TEL;TYPE=WORK,VOICE:+46 40 10 20 30\r
ORG:Contoso AB;Försäljning\r
TITLE:Säljchef\r
ADR;TYPE=WORK:;;Storgatan 1\\, 3 tr;Malmö;Skåne;211 34;Sverige\r
ADR;TYPE=HOME:;;Hemvägen 2;Lund;;222 22;Sverige\r
ADR;TYPE=POSTAL:Box 17;;;Malmö;;201 20;Sverige\r
NOTE:Första raden\\nAndra raden\r
PHOTO;VALUE=URI:https://example.com/asa.jpg\r
BDAY:1980-05-17\r
X-CUSTOM:kept\r
CATEGORIES:Tracked,VIP\r
REV:20240102T101500Z\r
END:VCARD\r
""".encode()


def contact_fields(**kw: object) -> dict:
    f = empty_fields("contacts")
    f.update(kw)
    return f


def test_vcard_with_several_addresses_and_non_ascii() -> None:
    p = vcard.parse(CARD)
    assert p.uid == "asa-1"
    f = p.fields
    assert f["name"] == "Åsa Öberg-Ødegård"
    assert (f["given_name"], f["family_name"], f["additional_names"], f["prefix"]) == (
        "Åsa", "Öberg-Ødegård", "Maria", "Dr.")  # fmt: skip
    assert f["emails"] == ["asa@contoso.com", "asa@hemma.se"]
    assert f["phones"] == [["cell", "+46 70 123 45 67"], ["voice,work", "+46 40 10 20 30"]]
    assert (f["company"], f["job_title"]) == ("Contoso AB", "Säljchef")
    assert [a["kind"] for a in f["addresses"]] == ["work", "home", "postal"]
    assert f["addresses"][0]["street"] == "Storgatan 1, 3 tr"
    assert f["addresses"][0]["region"] == "Skåne"
    assert f["addresses"][2]["po_box"] == "Box 17"
    assert f["notes"] == "Första raden\nAndra raden"
    assert p.categories == ["Tracked", "VIP"]
    assert p.modified == dt.datetime(2024, 1, 2, 10, 15)


def test_vcard_render_round_trips_every_field() -> None:
    f = vcard.parse(CARD).fields
    new = vcard.render(f, set(CONTACT_FIELDS), uid="x-1")
    assert vcard.parse(new).fields == f


def test_vcard_merge_keeps_what_mailfiler_does_not_manage() -> None:
    f = vcard.parse(CARD).fields
    f = {**f, "job_title": "VD", "emails": ["asa@contoso.com", "ny@contoso.com"]}
    out = vcard.render(f, {"job_title", "emails"}, uid="asa-1", existing=CARD).decode()
    for kept in ("PHOTO;VALUE=URI:https://example.com/asa.jpg", "BDAY:1980-05-17", "X-CUSTOM:kept",
                 "ORG:Contoso AB;Försäljning", "EMAIL;TYPE=WORK:Asa@Contoso.COM", "CATEGORIES:Tracked,VIP"):  # fmt: skip
        assert kept in out
    assert "TITLE:VD" in out and "asa@hemma.se" not in out and "EMAIL:ny@contoso.com" in out
    assert vcard.parse(out.encode()).fields == f


@pytest.mark.parametrize(
    ("data", "reason", "match"),
    [
        (b"", "empty-item", "empty"),
        (b"   \n", "empty-item", "empty"),
        (b"hello world", "bad-vcard", "no BEGIN:VCARD"),
        (b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\n", "bad-vcard", "broken vCard"),
        (b"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:no uid\r\nEND:VCARD\r\n", "bad-vcard", "no UID"),
        (b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\nBEGIN:VCARD", "bad-vcard", "broken|not a vCard"),
    ],
)
def test_malformed_vcards_name_their_reason(data: bytes, reason: str, match: str) -> None:
    with pytest.raises(SyncItemUnreadable, match=match) as info:
        vcard.parse(data)
    assert info.value.reason == reason


def test_latin1_vcard_is_read() -> None:
    p = vcard.parse(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:l1\r\nFN:Jörgen\r\nN:;Jörgen;;;\r\nEND:VCARD\r\n".encode("latin-1")
    )
    assert p.fields["name"] == "Jörgen"


# --- iCalendar ------------------------------------------------------------------------


def event_fields(**kw: object) -> dict:
    f = empty_fields("calendar")
    f.update(kw)
    return f


WEEKLY = event_fields(
    subject="Veckomöte – Malmö",
    start=f"2024-03-18T09:00:00[{STO}]",
    end=f"2024-03-18T10:00:00[{STO}]",
    location="Rum Ängen",
    body="Agenda:\n1. Åtgärder",
    organizer=["anna@example.com", "Anna Andersson"],
    attendees=[["bo@contoso.com", "Bo Ek", "required"], ["cy@fabrikam.com", "", "optional"]],
    rrule="FREQ=WEEKLY;COUNT=6;BYDAY=MO",
    exdates=[f"2024-04-08T09:00:00[{STO}]"],
    overrides=[
        {
            "recurrence_id": f"2024-04-01T09:00:00[{STO}]",
            "subject": "Veckomöte (flyttat)",
            "start": f"2024-04-02T13:00:00[{STO}]",
            "end": f"2024-04-02T14:00:00[{STO}]",
            "location": "Rum Ängen",
            "status": "confirmed",
            "body": "",
        }
    ],
)


def test_recurring_event_with_moved_and_cancelled_occurrences_round_trips() -> None:
    data = ical.render(WEEKLY, set(APPOINTMENT_FIELDS), uid="weekly-1")
    cal = icalendar.Calendar.from_ical(data)
    events = list(cal.walk("VEVENT"))
    assert len(events) == 2  # the master and the moved occurrence
    assert {tz["TZID"] for tz in cal.walk("VTIMEZONE")} == {STO}
    assert all("DTSTAMP" in ev for ev in events)
    assert ical.parse(data).fields == WEEKLY


def test_weekly_meeting_stays_at_nine_across_the_dst_change() -> None:
    """Sweden moves to summer time on 2024-03-31: the instants move, the wall clock does not."""
    data = ical.render(WEEKLY, set(APPOINTMENT_FIELDS), uid="weekly-1")
    master = next(ev for ev in icalendar.Calendar.from_ical(data).walk("VEVENT") if "RECURRENCE-ID" not in ev)
    start = master["DTSTART"].dt
    occurrences = list(rrulestr(master["RRULE"].to_ical().decode(), dtstart=start))
    assert [o.hour for o in occurrences] == [9] * 6
    utc_hours = [o.astimezone(dt.UTC).hour for o in occurrences]
    assert utc_hours[:2] == [8, 8] and utc_hours[2:] == [7, 7, 7, 7]
    assert ical.parse(data).fields["start"] == f"2024-03-18T09:00:00[{STO}]"


def test_all_day_event() -> None:
    f = event_fields(subject="Midsommarafton", start="2024-06-21", end="2024-06-22")
    data = ical.render(f, set(APPOINTMENT_FIELDS), uid="ms-1")
    assert b"DTSTART;VALUE=DATE:20240621" in data
    assert ical.parse(data).fields == f


def test_utc_floating_and_duration() -> None:
    data = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:d1\r\nDTSTAMP:20240101T000000Z\r\n"
        b"DTSTART:20240102T090000Z\r\nDURATION:PT90M\r\nSUMMARY:UTC\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    f = ical.parse(data).fields
    assert (f["start"], f["end"]) == ("2024-01-02T09:00:00Z", "2024-01-02T10:30:00Z")
    floating = data.replace(b"DTSTART:20240102T090000Z", b"DTSTART:20240102T090000")
    assert ical.parse(floating).fields["start"] == "2024-01-02T09:00:00"


def test_outlook_time_zone_name_keeps_the_instant() -> None:
    data = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:Microsoft Exchange Server 2010\r
BEGIN:VTIMEZONE\r
TZID:W. Europe Standard Time\r
BEGIN:STANDARD\r
DTSTART:16010101T030000\r
TZOFFSETFROM:+0200\r
TZOFFSETTO:+0100\r
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=10\r
END:STANDARD\r
BEGIN:DAYLIGHT\r
DTSTART:16010101T020000\r
TZOFFSETFROM:+0100\r
TZOFFSETTO:+0200\r
RRULE:FREQ=YEARLY;INTERVAL=1;BYDAY=-1SU;BYMONTH=3\r
END:DAYLIGHT\r
END:VTIMEZONE\r
BEGIN:VEVENT\r
UID:outlook-1\r
DTSTAMP:20240101T000000Z\r
DTSTART;TZID=W. Europe Standard Time:20240703T100000\r
DTEND;TZID=W. Europe Standard Time:20240703T110000\r
SUMMARY:Outlook\r
END:VEVENT\r
END:VCALENDAR\r
"""
    f = ical.parse(data).fields
    # 10:00 summer time in Central Europe is 08:00 UTC, whichever way the zone is named
    assert utc_instant(f["start"]) == dt.datetime(2024, 7, 3, 8, 0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n", "no VEVENT"),
        (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nSUMMARY:no start\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "DTSTART"),
        (
            b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:2024-13-45\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            "DTSTART|broken",
        ),
        (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20240101T000000Z\r\n", "broken|VEVENT"),
        (b"BEGIN:VCARD\r\nEND:VCARD\r\n", "no BEGIN:VCALENDAR"),
        (
            b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART:20240101T000000Z\r\nEND:VEVENT\r\n"
            b"BEGIN:VEVENT\r\nUID:b\r\nDTSTART:20240101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
            "2 different events",
        ),
    ],
)
def test_malformed_icalendar_names_its_reason(data: bytes, match: str) -> None:
    with pytest.raises(SyncItemUnreadable, match=match) as info:
        ical.parse(data)
    assert info.value.reason == "bad-icalendar"


def test_merge_into_an_event_keeps_alarms_and_partstat() -> None:
    data = ical.render(WEEKLY, set(APPOINTMENT_FIELDS), uid="weekly-1")
    cal = icalendar.Calendar.from_ical(data)
    master = next(ev for ev in cal.walk("VEVENT") if "RECURRENCE-ID" not in ev)
    alarm = icalendar.Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", dt.timedelta(minutes=-15))
    master.add_component(alarm)
    for att in master["ATTENDEE"]:
        att.params["PARTSTAT"] = "ACCEPTED"
    f = {**WEEKLY, "location": "Rum Boken"}
    out = ical.render(f, {"location", "attendees"}, uid="weekly-1", existing=cal.to_ical())
    assert b"BEGIN:VALARM" in out and out.count(b"PARTSTAT=ACCEPTED") == 2
    assert ical.parse(out).fields == f


def test_time_strings() -> None:
    for text in ("2024-03-31", "2024-03-31T09:00:00", "2024-03-31T07:00:00Z", f"2024-03-31T09:00:00[{STO}]"):
        assert time_to_str(time_from_str(text)) == text
    assert time_from_str(f"2024-03-31T09:00:00[{STO}]").tzinfo == ZoneInfo(STO)
    assert utc_instant(f"2024-03-31T09:00:00[{STO}]") == dt.datetime(2024, 3, 31, 7, 0)
    assert utc_instant(f"2024-03-30T09:00:00[{STO}]") == dt.datetime(2024, 3, 30, 8, 0)
    assert content_hash({"a": 1, "b": [1]}) == content_hash({"b": [1], "a": 1})
