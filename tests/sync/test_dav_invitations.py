"""Meeting invitations in tracked mail: the tracker turns an iMIP REQUEST into an
appointment regarding the mail's record (a CANCEL cancels it), in the mail's
transaction, and never lets a broken invitation stop the mail; from there the
appointment reaches the user's CalDAV calendar like any other."""

from __future__ import annotations

import json
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailfiler.service.runtime import sync_config
from mailfiler.store import models as m
from mailfiler.store.detailmodels import AppointmentDetails
from mailfiler.sync import ical
from mailfiler.sync.dav import CalDavTarget
from tests.mailgen import drop_into_maildir, maildirpp_folder_dir
from tests.servers.radicale import DavUser, dav_user, radicale
from tests.store.helpers import Store, mailbox_config, track_raw
from tests.sync.test_config_cli import mf, write

__all__ = ["dav_user", "radicale"]

ANNA = "anna@example.com"
STO = "Europe/Stockholm"
RECORDS = [{"entity": "account", "key": "contoso", "name": "Contoso AB", "domains": ["contoso.com"]}]


def vevent(method: str, *, seq: int = 0, summary: str = "Avstämning Q3", extra: str = "") -> str:
    return (
        f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Microsoft Corporation//Outlook 16.0//EN\r\nMETHOD:{method}\r\n"
        f"BEGIN:VEVENT\r\nUID:040000008200E00074C5B7101A82E008-åäö\r\nSEQUENCE:{seq}\r\n"
        f"DTSTAMP:20240901T080000Z\r\nDTSTART;TZID={STO}:20241027T023000\r\nDTEND;TZID={STO}:20241027T033000\r\n"
        f"SUMMARY:{summary}\r\nLOCATION:Möllevångstorget 1\r\nORGANIZER;CN=Bo Ek:mailto:bo@contoso.com\r\n"
        f"ATTENDEE;CN=Anna;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION:mailto:{ANNA}\r\n{extra}"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def invitation_mail(mid: str, ics: str, method: str, subject: str = "Inbjudan: Avstämning Q3") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Bo Ek <bo@contoso.com>"
    msg["To"] = f"Anna <{ANNA}>"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Sep 2024 10:00:00 +0200"
    msg["Message-ID"] = mid
    msg.set_content("Hej Anna, välkommen på avstämning.\n")
    msg.add_alternative(ics, subtype="calendar", params={"method": method})
    return msg.as_bytes()


@pytest.fixture
def env(store: Store, tmp_path: Path):
    config = store.config(
        records=RECORDS,
        mailboxes=[mailbox_config("anna", ANNA, tmp_path / "Maildir", {"Kunder/Contoso": "account:contoso"})],
    )
    return store.tracker(config), sync_config(store.db, config)["anna"]


def appointment() -> tuple[m.Activity, AppointmentDetails]:
    d = AppointmentDetails.get()
    return m.Activity.get_by_id(d.activity_id), d


def test_an_invitation_becomes_an_appointment_regarding_the_mails_record(env) -> None:
    tracker, rt = env
    out = track_raw(
        tracker, rt, "Kunder/Contoso", "s1", invitation_mail("<inv1@contoso.com>", vevent("REQUEST"), "REQUEST")
    )
    assert out.event == "tracked"
    mail = m.Activity.get(m.Activity.message_id == "<inv1@contoso.com>")
    appt, details = appointment()
    assert (appt.kind, appt.subject, appt.owner) == ("appointment", "Avstämning Q3", ANNA)
    assert appt.regarding_id == mail.regarding_id and mail.regarding.ref == "account:contoso"
    assert (details.location, details.status) == ("Möllevångstorget 1", "confirmed")
    assert mail.parse_defects is None
    # an update, then a cancellation, each in a mail of its own
    track_raw(tracker, rt, "Kunder/Contoso", "s2",
              invitation_mail("<inv2@contoso.com>", vevent("REQUEST", seq=1, summary="Avstämning Q3 (ny tid)"), "REQUEST"))  # fmt: skip
    track_raw(tracker, rt, "Kunder/Contoso", "s3",
              invitation_mail("<inv3@contoso.com>", vevent("CANCEL", seq=2), "CANCEL", "Inställt: Avstämning Q3"))  # fmt: skip
    appt, details = appointment()
    assert (appt.subject, details.status) == ("Avstämning Q3 (ny tid)", "cancelled")
    assert AppointmentDetails.select().count() == 1


def test_a_broken_invitation_never_stops_the_mail(env) -> None:
    tracker, rt = env
    raw = invitation_mail("<bad@contoso.com>", "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nnot really", "REQUEST")
    assert track_raw(tracker, rt, "Kunder/Contoso", "s1", raw).event == "tracked"
    mail = m.Activity.get(m.Activity.message_id == "<bad@contoso.com>")
    assert mail.regarding.ref == "account:contoso" and "invitation: broken iCalendar" in mail.parse_defects
    assert AppointmentDetails.select().count() == 0


def test_a_bug_in_the_invitation_code_is_rolled_back_alone(env, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailfiler.sync import invitations

    real = invitations.apply_invitations

    def half_then_boom(*args, **kw):
        real(*args, **kw)  # the appointment is written...
        raise RuntimeError("boom")  # ...then something breaks

    monkeypatch.setattr(invitations, "apply_invitations", half_then_boom)
    tracker, rt = env
    raw = invitation_mail("<inv1@contoso.com>", vevent("REQUEST"), "REQUEST")
    assert track_raw(tracker, rt, "Kunder/Contoso", "s1", raw).event == "tracked"
    mail = m.Activity.get(m.Activity.message_id == "<inv1@contoso.com>")
    assert "invitation: RuntimeError: boom" in mail.parse_defects
    assert AppointmentDetails.select().count() == 0  # the savepoint took back the half-done appointment
    assert m.Attachment.select().where(m.Attachment.activity == mail).count() == 1  # the .ics stays on the mail


def test_invitation_to_the_users_calendar_end_to_end(tmp_path: Path, dav_user: DavUser) -> None:
    """Tracked mail → `mailfiler once` → appointments list → `mailfiler sync` → the user's CalDAV calendar."""
    url = dav_user.url("crm-calendar")
    cfg = write(tmp_path, f"""\
        tracked_folders:
          - {{folder: Kunder/Contoso, regarding: "account:contoso"}}
        sync:
          caldav: {{url: "{url}", username: {dav_user.name}, password_file: {dav_user.password_file}}}
        """)  # fmt: skip
    folder = maildirpp_folder_dir(tmp_path / "Maildir", "Kunder/Contoso")
    drop_into_maildir(folder, invitation_mail("<inv1@contoso.com>", vevent("REQUEST"), "REQUEST"))
    out = mf(cfg, "once")
    assert out.returncode == 0, out.stderr
    [appt] = json.loads(mf(cfg, "appointments", "list", "--json", "--regarding", "account:contoso").stdout)
    assert (appt["subject"], appt["status"], appt["start"]) == (
        "Avstämning Q3", "confirmed", f"2024-10-27T02:30:00[{STO}]")  # fmt: skip
    out = mf(cfg, "sync", "--json")
    [result] = json.loads(out.stdout)
    assert (result["state"], result["uploaded"]) == ("ok", 1), out.stderr

    drop_into_maildir(folder, invitation_mail("<inv2@contoso.com>", vevent("CANCEL", seq=1), "CANCEL", "Inställt"))
    assert mf(cfg, "once").returncode == 0
    [appt] = json.loads(mf(cfg, "appointments", "list", "--json").stdout)
    assert appt["status"] == "cancelled"
    [result] = json.loads(mf(cfg, "sync", "--json").stdout)
    assert result["updated_mailbox"] == 1

    import asyncio

    async def on_server() -> list:
        t = CalDavTarget(url, **dav_user.target_kwargs())
        await t.open(create=False)
        listing = await t.list()
        got = await t.get_multi(list(listing))
        await t.close()
        return [ical.parse(f.data).fields for f in got]

    [fields] = asyncio.run(on_server())
    assert (fields["subject"], fields["status"], fields["location"]) == (
        "Avstämning Q3",
        "cancelled",
        "Möllevångstorget 1",
    )
    assert fields["organizer"] == ["bo@contoso.com", "Bo Ek"]
