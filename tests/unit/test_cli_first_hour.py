"""Issue 16: where a new admin stumbled in the first hour, each as the admin meets it
(the real command in a subprocess): appointments among e-mail, a missing PostgreSQL
driver, a mistyped Maildir root, global options after the command, tables at 80
columns, plural forms."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mailfiler.cli import output

CALENDAR_EVENT = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:review-1\r\nDTSTAMP:20240101T000000Z\r\n"
    b"DTSTART;TZID=Europe/Stockholm:20240618T100000\r\nDTEND;TZID=Europe/Stockholm:20240618T110000\r\n"
    b"SUMMARY:Contoso review\r\nCATEGORIES:Tracked\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)
INVOICE = (
    b"Message-ID: <inv-1@contoso.com>\r\nFrom: Bob <bob@contoso.com>\r\nTo: anna@example.com\r\n"
    b"Subject: Invoice 1\r\nDate: Tue, 02 Jan 2024 09:15:00 +0100\r\n\r\nHello\r\n"
)


def mf(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILFILER_CONFIG"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "mailfiler", *args], capture_output=True, text=True, env=env, timeout=120
    )


def write_config(tmp_path: Path, *, database: str = "sqlite:///state/mf.db", maildir: str = "Maildir") -> Path:
    cfg = tmp_path / "mailfiler.yaml"
    cfg.write_text(
        f"database: {database}\n"
        "state_dir: state\n"
        "records:\n"
        "  - {entity: account, key: contoso, name: Contoso AB, domains: [contoso.com]}\n"
        "mailboxes:\n"
        "  - name: anna\n"
        "    owner: anna@example.com\n"
        f"    maildir: {maildir}\n"
        "    create_missing_folders: true\n"
        "    tracked_folders:\n"
        "      - {folder: Tracked/Contoso, regarding: 'account:contoso'}\n"
        "    sync:\n"
        "      vdir: {contacts: dav/contacts, calendar: dav/calendar}\n"
    )
    return cfg


# -- appointments are not e-mail ---------------------------------------------------------


def test_appointments_stay_out_of_email_commands(tmp_path: Path) -> None:
    (tmp_path / "Maildir").mkdir()
    cfg = write_config(tmp_path)
    assert mf("--config", str(cfg), "once").returncode == 0
    folder = tmp_path / "Maildir" / ".Tracked.Contoso"
    (folder / "tmp" / "m1").write_bytes(INVOICE)
    (folder / "tmp" / "m1").rename(folder / "new" / "m1")
    (tmp_path / "dav" / "calendar").mkdir(parents=True)
    (tmp_path / "dav" / "calendar" / "review.ics").write_bytes(CALENDAR_EVENT)
    assert mf("--config", str(cfg), "once").returncode == 0
    out = mf("--config", str(cfg), "sync", "--json")
    assert out.returncode == 0, out.stderr
    assert {r["kind"]: r["created_crm"] for r in json.loads(out.stdout)}["calendar"] == 1

    emails = json.loads(mf("--config", str(cfg), "activities", "--json").stdout)
    assert [(a["subject"], a["kind"]) for a in emails] == [("Invoice 1", "email")]
    appts = json.loads(mf("--config", str(cfg), "activities", "--kind", "appointment", "--json").stdout)
    assert [(a["subject"], a["kind"]) for a in appts] == [("Contoso review", "appointment")]
    both = json.loads(mf("--config", str(cfg), "activities", "--kind", "all", "--json").stdout)
    assert sorted(a["kind"] for a in both) == ["appointment", "email"]
    table = mf("--config", str(cfg), "activities").stdout
    assert "Invoice 1" in table and "Contoso review" not in table and "(moved out)" not in table
    assert "1 e-mail activity" in table  # singular

    status = json.loads(mf("--config", str(cfg), "status", "--json").stdout)
    assert (status["activities"], status["appointments"]) == (1, 1)
    text = mf("--config", str(cfg), "status").stdout
    assert "1 e-mail activity tracked, 1 appointment, 0 messages in the shunt" in text

    dry = json.loads(mf("--config", str(cfg), "rules", "apply", "--dry-run", "--json").stdout)
    assert [a["subject"] for a in dry["activities"]] == ["Invoice 1"]
    assert "no copy left" not in json.dumps(dry)


# -- PostgreSQL driver ---------------------------------------------------------------------


@pytest.fixture
def no_psycopg(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with a ``psycopg`` that cannot be imported, as on a machine without it."""
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named psycopg (test shadow)')\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize(
    "command", [["status"], ["run"], ["once"], ["activities"], ["status", "--json"], ["shunt", "list"]]
)
def test_missing_postgres_driver_is_one_clear_line(tmp_path: Path, no_psycopg: dict, command: list[str]) -> None:
    (tmp_path / "Maildir").mkdir()
    cfg = write_config(tmp_path, database="postgresql://mf@127.0.0.1:1/mailfiler")
    out = mf("--config", str(cfg), *command, env_extra=no_psycopg)
    assert out.returncode == 69, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr + out.stdout
    text = out.stdout if "--json" in command else out.stderr
    assert "needs the PostgreSQL driver psycopg" in text
    assert "pip install 'psycopg[binary]'" in text
    if "--json" not in command:
        assert len(out.stderr.strip().splitlines()) == 2, out.stderr  # error: ..., hint: ...


def test_config_check_finds_the_missing_postgres_driver(tmp_path: Path, no_psycopg: dict) -> None:
    (tmp_path / "Maildir").mkdir()
    cfg = write_config(tmp_path, database="postgresql://mf@127.0.0.1:1/mailfiler")
    out = mf("--config", str(cfg), "config", "check", env_extra=no_psycopg)
    assert out.returncode == 78
    assert "psycopg" in out.stderr and "pip install 'psycopg[binary]'" in out.stderr
    assert mf("--config", str(cfg), "config", "check").returncode == 0  # with the driver, it is fine


# -- a mistyped Maildir root ----------------------------------------------------------------


def test_missing_maildir_root_is_refused_not_created(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, maildir="Maildri")  # a typo
    check = mf("--config", str(cfg), "config", "check")
    assert check.returncode == 78
    assert "Maildri does not exist" in check.stderr and "never the mailbox itself" in check.stderr
    js = json.loads(mf("--config", str(cfg), "config", "check", "--json").stdout)
    assert js["valid"] is False and "Maildri does not exist" in js["problems"][0]

    once = mf("--config", str(cfg), "once")
    assert once.returncode == 69, once.stderr
    assert "Traceback" not in once.stderr
    assert "Maildri does not exist" in once.stderr and f"mkdir -p {tmp_path / 'Maildri'}" in once.stderr
    assert not (tmp_path / "Maildri").exists()

    # an existing, empty root is a new mailbox: its Inbox and tracked folders are made
    (tmp_path / "Maildri").mkdir()
    assert mf("--config", str(cfg), "once").returncode == 0
    assert (tmp_path / "Maildri" / "cur").is_dir() and (tmp_path / "Maildri" / ".Tracked.Contoso" / "new").is_dir()


# -- global options after the command -------------------------------------------------------


def test_global_options_after_the_command(tmp_path: Path) -> None:
    (tmp_path / "Maildir").mkdir()
    cfg = write_config(tmp_path)
    for args in (
        ["config", "check", "--config", str(cfg)],
        ["config", "check", f"--config={cfg}", "--log-level", "debug"],
        ["status", "--json", "--config", str(cfg)],
    ):
        out = mf(*args)
        assert out.returncode == 0, (args, out.stderr)
    out = mf("run", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 78 and "No such option" not in out.stderr
    assert "nope.yaml does not exist" in out.stderr


# -- tables at 80 columns -------------------------------------------------------------------


def _render(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], width: int, **kw) -> str:
    monkeypatch.setattr(output, "terminal_width", lambda: width)
    cols = [
        output.Col("id", short=True), output.Col("dir", short=True, drop=4), output.Col("from", drop=2),
        output.Col("subject"), output.Col("regarding", short=True), output.Col("by", drop=3), output.Col("where", drop=1),
        output.Col("att", short=True, drop=5),
    ]  # fmt: skip
    rows = [
        (7, "incoming", "bob.smith@contoso.example.com", "[urgent] Invoice 2024-11 for the support contract renewal",
         "account:contoso", "rule:contoso-domains", "alice/Tracked/Contoso/Invoices/2024/November", 2),
    ]  # fmt: skip
    output.table("1 e-mail activity", cols, rows, **{"wide": False, **kw})
    return capsys.readouterr().out


def test_table_fits_80_columns_and_names_what_it_left_out(monkeypatch, capsys) -> None:
    text = _render(monkeypatch, capsys, 80)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "[urgent]" in text  # a cell is text, not rich markup
    assert "hidden at 80 columns:" in text and "--wide" in text
    header = text.splitlines()[2]
    for col in ("id", "subject", "regarding"):
        assert col in header


def test_table_at_120_columns_drops_less_and_wide_shows_all(monkeypatch, capsys) -> None:
    narrow = _render(monkeypatch, capsys, 80)
    text = _render(monkeypatch, capsys, 120)
    assert max(len(line) for line in text.splitlines()) <= 120

    def header(rendered: str) -> str:
        return next(line for line in rendered.splitlines() if line.startswith("┃"))

    assert header(text).count("┃") > header(narrow).count("┃")
    wide = _render(monkeypatch, capsys, 80, wide=True)
    assert "hidden at" not in wide
    assert "alice/Tracked/Contoso/Invoices/2024/November" in wide and "rule:contoso-domains" in wide


def test_a_table_without_priorities_drops_from_the_right_rather_than_crop(monkeypatch, capsys) -> None:
    monkeypatch.setattr(output, "terminal_width", lambda: 40)
    output.table("t", ["first", "second", "third", "fourth", "fifth"], [("a" * 12, "b" * 12, "c", "d", "e")])
    text = capsys.readouterr().out
    assert max(len(line) for line in text.splitlines()) <= 40, text
    assert "first" in text and "fifth" not in text.splitlines()[1]
    assert "hidden at 40 columns:" in text and "--json shows all" in text  # no --wide on this command


def test_plural() -> None:
    assert output.plural(1, "activity", "activities") == "1 activity"
    assert output.plural(2, "activity", "activities") == "2 activities"
    assert output.plural(0, "message") == "0 messages"


# -- one way to name a message in the log ------------------------------------------------------


def test_message_label_is_message_id_and_subject() -> None:
    from mailfiler.tracking.labels import label_of_raw, message_label

    assert message_label("<a@b>", "Invoice 42") == '<a@b> "Invoice 42"'
    assert message_label("<a@b>", "") == "<a@b> (no subject)"
    assert message_label("<a@b>", "x\r\n\ty" + "z" * 100).startswith('<a@b> "x y')
    assert len(message_label("<a@b>", "z" * 100)) == len('<a@b> ""') + 60
    # the place only names a message that has no Message-ID
    assert message_label("<a@b>", "S", place="alice/INBOX/1") == '<a@b> "S"'
    assert message_label(None, place="alice/INBOX/1") == "(alice/INBOX/1)"
    raw = b"Message-ID: <m@x>\r\nSubject: =?utf-8?q?M=C3=B6te?=\r\n\r\nbody"
    assert label_of_raw(raw, place="p") == '<m@x> "Möte"'
    assert label_of_raw(b"", place="alice/INBOX/7") == "(alice/INBOX/7)"
    assert label_of_raw(b"\x00\xff not mail", place="alice/INBOX/8") == "(alice/INBOX/8)"


# -- scripts/run-example.sh on a fresh clone ---------------------------------------------------


def test_run_example_makes_its_maildir_on_a_fresh_clone(tmp_path: Path) -> None:
    """The example's Maildir is made by the script, not by mailfiler (which never
    creates a missing root): on a clone without state/, `config check` and `once` work."""
    repo = Path(__file__).resolve().parents[2]
    clone = tmp_path / "clone"
    for part in ("scripts", "config", "rules"):
        shutil.copytree(repo / part, clone / part)
    shutil.copy(repo / "setup.cfg", clone / "setup.cfg")
    # this venv stands in for the one the script would make (no pip install in a test)
    venv_bin = clone / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    for name in ("python", "mailfiler"):
        (venv_bin / name).symlink_to(Path(sys.executable).parent / name)
    digest = hashlib.sha256((clone / "setup.cfg").read_bytes()).hexdigest()
    (clone / ".venv" / ".run-setup-cfg.sha256").write_text(digest + "\n")
    script = clone / "scripts" / "run-example.sh"
    env = {k: v for k, v in os.environ.items() if k != "MAILFILER_CONFIG"}
    check = subprocess.run([script, "config", "check"], capture_output=True, text=True, env=env, timeout=120)
    assert check.returncode == 0, check.stderr
    assert (clone / "state" / "Maildir").is_dir()
    once = subprocess.run([script, "once", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert once.returncode == 0, once.stderr
    assert (clone / "state" / "Maildir" / ".Tracked.Contoso" / "new").is_dir()
