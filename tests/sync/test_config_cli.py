"""The sync: config block (FILE:LINE:COL problems, paths) and the commands, as an admin meets them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import peewee
import pytest

from mailfiler.config import load_config
from mailfiler.errors import ConfigError
from mailfiler.sync.runner import collections, policies

BASE = """\
database: sqlite:///state/mf.db
state_dir: state
records:
  - {entity: account, key: contoso, name: Contoso AB, domains: [contoso.com]}
  - {entity: contact, key: bob, name: Bob Smith, emails: [bob@contoso.com], parent: "account:contoso"}
mailboxes:
  - name: anna
    owner: anna@example.com
    maildir: Maildir
    create_missing_folders: true
"""


def write(tmp_path: Path, sync: str) -> Path:
    cfg = tmp_path / "mailfiler.yaml"
    cfg.write_text(BASE + textwrap.indent(textwrap.dedent(sync), "    "), encoding="utf-8")
    return cfg


def test_sync_block_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = write(tmp_path, """\
        sync:
          vdir: {contacts: dav/contacts, calendar: ~/cal}
          tracked:
            - {calendar: dav/contoso, regarding: "account:contoso"}
        """)  # fmt: skip
    loaded = load_config(cfg)
    sync = loaded.config.mailboxes[0].sync
    assert sync is not None
    assert (sync.conflicts, sync.on_mailbox_delete, sync.category) == ("crm-wins", "unlink", "Tracked")
    colls = collections(sync, loaded.path.parent)
    assert [(c.kind, c.role, c.target.location) for c in colls] == [
        ("contacts", "main", str(tmp_path / "dav/contacts")),
        ("calendar", "main", str(Path("~/cal").expanduser())),
        ("calendar", "tracked", str(tmp_path / "dav/contoso")),
    ]
    pol = policies(sync)
    assert [f.owner for f in pol["contacts"].filters] == ["mailbox"]
    assert [(f.owner, f.party) for f in pol["calendar"].filters] == [("mailbox", None), (None, "mailbox")]


def test_every_sync_problem_at_its_line_and_column(tmp_path: Path) -> None:
    cfg = write(tmp_path, """\
        sync:
          vdir: {contacts: c, calender: k}
          fields:
            contacts: {job_tilte: to_mailbox}
            appointments: {subject: sideways}
          filters:
            contacts: [{}, {regarding: [contoso]}]
          conflicts: loudest-wins
          on_mailbox_delete: shrug
          interval: 1
          tracked:
            - {contacts: a, calendar: b}
        """)  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    problems = [str(p) for p in info.value.problems]
    f = str(cfg)
    expected = [
        f"{f}:12:27: mailboxes[0].sync.vdir: unknown key 'calender' (did you mean 'calendar'?)",
        f"{f}:14:19: mailboxes[0].sync.fields.contacts: unknown field 'job_tilte' (did you mean 'job_title'?)",
        "sync.fields.appointments.subject: Input should be 'both', 'to_mailbox', 'from_mailbox' or 'none'",
        f"{f}:17:20: mailboxes[0].sync.filters.contacts[0]: a sync filter needs at least one of all, owner,",
        "sync.filters.contacts[1].regarding: expected ENTITY:KEY",
        "sync.conflicts: Input should be 'crm-wins', 'mailbox-wins' or 'newest-wins'",
        "sync.on_mailbox_delete: Input should be 'unlink', 'restore' or 'delete-in-crm'",
        "sync.interval: Input should be greater than or equal to 5",
        "sync.tracked[0]: a tracked collection names exactly one of contacts: or calendar:",
    ]
    assert len(problems) == len(expected), problems
    for want, got in zip(expected, problems, strict=True):
        assert want in got, (want, got)


def mf(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILFILER_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "mailfiler", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_sync_contacts_appointments_and_status_commands(tmp_path: Path) -> None:
    cfg = write(tmp_path, """\
        sync:
          vdir: {contacts: dav/contacts, calendar: dav/calendar}
          filters:
            contacts: [{regarding: ["account:contoso"]}]
        """)  # fmt: skip
    (tmp_path / "dav" / "calendar").mkdir(parents=True)
    (tmp_path / "dav" / "calendar" / "m1.ics").write_bytes(
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:m1\r\nDTSTAMP:20240101T000000Z\r\n"
        b"DTSTART;TZID=Europe/Stockholm:20240618T100000\r\nDTEND;TZID=Europe/Stockholm:20240618T110000\r\n"
        b"SUMMARY:M\xc3\xb6te med Bob\r\nATTENDEE;CN=Bob:mailto:bob@contoso.com\r\nCATEGORIES:Tracked\r\n"
        b"END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    (tmp_path / "dav" / "calendar" / "broken.ics").write_bytes(b"BEGIN:VCALENDAR\r\nnope")
    out = mf(cfg, "sync", "--json")
    assert out.returncode == 0, out.stderr
    results = {r["kind"]: r for r in json.loads(out.stdout)}
    assert (results["contacts"]["uploaded"], results["calendar"]["created_crm"]) == (1, 1)
    assert results["calendar"]["shunted"] == 1
    assert len(list((tmp_path / "dav" / "contacts").glob("*.vcf"))) == 1

    contacts = json.loads(mf(cfg, "contacts", "list", "--json").stdout)
    assert [(c["ref"], c["name"], c["company"], c["parent"]) for c in contacts] == [
        ("contact:bob", "Bob Smith", "Contoso AB", "account:contoso")
    ]
    [appt] = json.loads(mf(cfg, "appointments", "list", "--json").stdout)
    assert (appt["subject"], appt["start"], appt["owner"]) == (
        "Möte med Bob", "2024-06-18T10:00:00[Europe/Stockholm]", "anna@example.com")  # fmt: skip
    assert appt["attendees"] == [["bob@contoso.com", "Bob", "required"]]
    status = json.loads(mf(cfg, "status", "--json").stdout)
    by_kind = {s["kind"]: s for s in status["sync"]}
    assert by_kind["contacts"]["items"] == 1 and by_kind["contacts"]["state"] == "ok"
    assert by_kind["calendar"]["shunted"] == 1 and by_kind["calendar"]["last_sync"]
    table = mf(cfg, "status").stdout
    assert "sync-back: address books and calendars" in table
    [kept] = json.loads(mf(cfg, "sync", "--shunted", "--json").stdout)
    assert (kept["href"], kept["reason"]) == ("broken.ics", "bad-icalendar")
    assert "broken.ics" in mf(cfg, "sync", "--shunted").stdout

    # the empty-side guard through the command: exit 1, a hint, nothing deleted
    for p in (tmp_path / "dav" / "contacts").glob("*.vcf"):
        p.unlink()
    out = mf(cfg, "sync")
    assert out.returncode == 1 and "--force-delete" in out.stderr
    assert json.loads(mf(cfg, "contacts", "list", "--json").stdout)
    out = mf(cfg, "sync", "--mailbox", "nobody")
    assert out.returncode == 66 and "no mailbox 'nobody' with sync:" in out.stderr


def test_sync_dry_run_shows_the_plan_and_does_nothing(tmp_path: Path) -> None:
    cfg = write(tmp_path, """\
        sync:
          vdir: {contacts: dav/contacts, calendar: dav/calendar}
          filters:
            contacts: [{regarding: ["account:contoso"]}]
        """)  # fmt: skip
    cal = tmp_path / "dav" / "calendar"
    cal.mkdir(parents=True)
    event = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20240101T000000Z\r\n"
        "DTSTART:20240618T100000Z\r\nDTEND:20240618T110000Z\r\nSUMMARY:{subject}\r\nCATEGORIES:Tracked\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    (cal / "m1.ics").write_text(event.format(uid="m1", subject="First"))
    assert mf(cfg, "sync").returncode == 0
    (cal / "m2.ics").write_text(event.format(uid="m2", subject="Second"))
    [bob] = (tmp_path / "dav" / "contacts").glob("*.vcf")
    bob.unlink()
    (tmp_path / "dav" / "contacts" / "x.vcf").write_text(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:x\r\nFN:Mine\r\nN:;Mine;;;\r\nEND:VCARD\r\n"
    )
    db_file = next(tmp_path.rglob("*.db"))
    before = (db_file.read_bytes(), sorted(p.name for p in (tmp_path / "dav").rglob("*")))

    out = mf(cfg, "sync", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plans = {d["kind"]: d for d in json.loads(out.stdout)}
    assert [(a["op"], a["href"]) for a in plans["calendar"]["actions"]] == [("create", "m2.ics")]
    # the user deleted Bob's card (on_mailbox_delete: unlink), and x.vcf is their own
    assert [(a["op"], a["href"], a["side"]) for a in plans["contacts"]["actions"]] == [
        ("unlink", bob.name, "status"), ("ignore", "x.vcf", "status"),
    ]  # fmt: skip
    text = mf(cfg, "sync", "--dry-run").stdout
    assert "none performed" in text and "m2.ics" in text and "tracked by the user" in text
    assert (db_file.read_bytes(), sorted(p.name for p in (tmp_path / "dav").rglob("*"))) == before

    out = mf(cfg, "sync", "--json")
    results = {r["kind"]: r for r in json.loads(out.stdout)}
    assert (results["calendar"]["created_crm"], results["contacts"]["unlinked"]) == (1, 1)
    out = mf(cfg, "sync", "--dry-run", "--json")
    assert all(d["actions"] == [] for d in json.loads(out.stdout))


def test_help_teaches() -> None:
    out = subprocess.run([sys.executable, "-m", "mailfiler", "sync", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for words in ("--force-delete", "Tracked", "on_mailbox_delete", "conflict", "--mailbox"):
        assert words in out.stdout
    out = subprocess.run([sys.executable, "-m", "mailfiler", "--help"], capture_output=True, text=True)
    for cmd in ("sync", "contacts", "appointments"):
        assert cmd in out.stdout


def test_vdir_paths_are_folded_and_a_store_with_the_old_spelling_doubles_nothing(tmp_path: Path) -> None:
    """``../`` in a vdir path is folded, as for every other path in the config.
    A store written before that holds the path as written: the folded path is a
    new collection row (the old one goes inactive), and its first sync pairs the
    folder's items with the CRM's by UID: nothing uploaded again, nothing doubled."""
    (tmp_path / "conf").mkdir()
    cfg = write(tmp_path, """\
        sync:
          vdir: {contacts: ../dav/contacts, calendar: ../dav/calendar}
          filters:
            contacts: [{regarding: ["account:contoso"]}]
        """)  # fmt: skip
    moved = tmp_path / "conf" / "mailfiler.yaml"
    cfg.rename(moved)
    folded = str(tmp_path / "dav" / "contacts")
    colls = collections(load_config(moved).config.mailboxes[0].sync, moved.parent)  # type: ignore[arg-type]
    assert colls[0].target.location == folded

    out = mf(moved, "sync", "--json")
    assert out.returncode == 0, out.stderr
    assert {r["kind"]: r["uploaded"] for r in json.loads(out.stdout)}["contacts"] == 1
    # make the stored row look like an earlier version's (the path as written)
    db_file = next(tmp_path.rglob("*.db"))
    db = peewee.SqliteDatabase(str(db_file))
    unfolded = str(tmp_path / "conf" / ".." / "dav" / "contacts")
    db.execute_sql("UPDATE sync_collection SET location = ? WHERE location = ?", (unfolded, folded))
    db.close()

    out = mf(moved, "sync", "--json")
    assert out.returncode == 0, out.stderr
    contacts = {r["kind"]: r for r in json.loads(out.stdout)}["contacts"]
    assert (contacts["location"], contacts["uploaded"], contacts["created_crm"], contacts["deleted_crm"]) == (
        folded,
        0,
        0,
        0,
    )
    assert len(list((tmp_path / "dav" / "contacts").glob("*.vcf"))) == 1
    status = json.loads(mf(moved, "status", "--json").stdout)
    assert [s["location"] for s in status["sync"] if s["kind"] == "contacts"] == [folded]
