"""Meeting invitations (iMIP text/calendar parts) become appointments regarding the mail's record."""

from __future__ import annotations

import pytest

from mailfiler.store.detailmodels import AppointmentDetails
from mailfiler.store.models import Activity, Record
from mailfiler.sync.invitations import apply_invitation, apply_invitations
from tests.store.helpers import Store
from tests.sync.helpers import OWNER, crm_appointments, make_mailbox

STO = "Europe/Stockholm"


def invite(method: str, body: str, seq: int = 0) -> bytes:
    return (
        f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Outlook//EN\r\nMETHOD:{method}\r\n{body}END:VCALENDAR\r\n"
    ).encode()


MASTER = (
    "BEGIN:VEVENT\r\nUID:inv-1\r\nSEQUENCE:{seq}\r\nDTSTAMP:20240101T000000Z\r\n"
    f"DTSTART;TZID={STO}:20240318T090000\r\nDTEND;TZID={STO}:20240318T100000\r\n"
    "RRULE:FREQ=WEEKLY;COUNT=4\r\nSUMMARY:{summary}\r\nORGANIZER;CN=Bo Ek:mailto:bo@contoso.com\r\n"
    "ATTENDEE;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION:mailto:anna@example.com\r\nEND:VEVENT\r\n"
)


@pytest.fixture
def mailbox(store: Store):
    return make_mailbox()


def test_a_request_creates_then_updates_the_appointment(mailbox) -> None:
    contoso = Record.create(entity="account", key="contoso", name="Contoso")
    out = apply_invitation(invite("REQUEST", MASTER.format(seq=0, summary="Avstämning")), regarding=contoso,
                           owner=OWNER, mailbox=mailbox)  # fmt: skip
    assert out.action == "created"
    a = Activity.get_by_id(out.activity_id)
    assert (a.kind, a.regarding_id, a.owner, a.direction) == ("appointment", contoso.id, OWNER, "incoming")
    fields = crm_appointments()["Avstämning"]
    assert fields["organizer"] == ["bo@contoso.com", "Bo Ek"] and fields["rrule"] == "FREQ=WEEKLY;COUNT=4"
    other = Record.create(entity="account", key="other", name="Other")
    out = apply_invitation(invite("REQUEST", MASTER.format(seq=1, summary="Avstämning v2")), regarding=other,
                           owner=OWNER, mailbox=mailbox)  # fmt: skip
    assert out.action == "updated" and set(crm_appointments()) == {"Avstämning v2"}
    assert Activity.get_by_id(out.activity_id).regarding_id == contoso.id  # the first message decided


def test_moved_and_cancelled_occurrences(mailbox) -> None:
    apply_invitation(invite("REQUEST", MASTER.format(seq=0, summary="Möte")), regarding=None, owner=OWNER,
                     mailbox=mailbox)  # fmt: skip
    moved = (
        f"BEGIN:VEVENT\r\nUID:inv-1\r\nRECURRENCE-ID;TZID={STO}:20240325T090000\r\nDTSTAMP:20240101T000000Z\r\n"
        f"DTSTART;TZID={STO}:20240326T140000\r\nDTEND;TZID={STO}:20240326T150000\r\nSUMMARY:Möte (flyttat)\r\n"
        "END:VEVENT\r\n"
    )
    assert apply_invitation(invite("REQUEST", moved), regarding=None, owner=OWNER, mailbox=mailbox).action == "updated"
    cancel_one = (
        f"BEGIN:VEVENT\r\nUID:inv-1\r\nRECURRENCE-ID;TZID={STO}:20240401T090000\r\nDTSTAMP:20240101T000000Z\r\n"
        f"DTSTART;TZID={STO}:20240401T090000\r\nSTATUS:CANCELLED\r\nEND:VEVENT\r\n"
    )
    assert (
        apply_invitation(invite("CANCEL", cancel_one), regarding=None, owner=OWNER, mailbox=mailbox).action
        == "cancelled"
    )
    f = crm_appointments()["Möte"]
    assert [o["recurrence_id"] for o in f["overrides"]] == [f"2024-03-25T09:00:00[{STO}]"]
    assert f["overrides"][0]["start"] == f"2024-03-26T14:00:00[{STO}]"
    assert f["exdates"] == [f"2024-04-01T09:00:00[{STO}]"]
    cancel_all = "BEGIN:VEVENT\r\nUID:inv-1\r\nDTSTAMP:20240101T000000Z\r\nDTSTART:20240318T080000Z\r\nEND:VEVENT\r\n"
    assert (
        apply_invitation(invite("CANCEL", cancel_all), regarding=None, owner=OWNER, mailbox=mailbox).action
        == "cancelled"
    )
    assert AppointmentDetails.get().status == "cancelled"


def test_replies_broken_parts_and_other_content_types(mailbox) -> None:
    outcomes = apply_invitations(
        [
            ("text/plain", b"hello"),
            ("text/calendar; method=REPLY", invite("REPLY", MASTER.format(seq=0, summary="x"))),
            ("text/calendar", b"BEGIN:VCALENDAR\r\nnot really"),
            ("TEXT/CALENDAR", invite("CANCEL", MASTER.format(seq=0, summary="never tracked"))),
        ],
        regarding=None,
        owner=OWNER,
        mailbox=mailbox,
    )
    assert [o.action for o in outcomes] == ["ignored", "unreadable", "ignored"]
    assert crm_appointments() == {}
