"""The command line as an admin meets it: help, errors, exit codes, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def mf(*args: str, cwd: Path | None = None, env_config: str | None = None) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    env.pop("MAILFILER_CONFIG", None)
    if env_config:
        env["MAILFILER_CONFIG"] = env_config
    return subprocess.run(
        [sys.executable, "-m", "mailfiler", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "Maildir").mkdir()  # the mailbox root exists, as an MDA makes it; mailfiler never creates it
    cfg = tmp_path / "mailfiler.yaml"
    cfg.write_text(
        "database: sqlite:///state/mf.db\n"
        "state_dir: state\n"
        "mailboxes:\n"
        "  - name: alice\n"
        "    owner: alice@example.com\n"
        "    maildir: Maildir\n"
        "    create_missing_folders: true\n"
        "    tracked_folders:\n"
        "      - folder: Tracked/Contoso\n"
        "        regarding: account:contoso\n"
    )
    return cfg


def test_help_teaches() -> None:
    out = mf("--help")
    assert out.returncode == 0
    assert "tracked folder" in out.stdout and "MAILFILER_CONFIG" in out.stdout
    for cmd in ("run", "once", "status", "activities", "records", "shunt", "config"):
        assert cmd in out.stdout
        sub = mf(cmd, "--help")
        assert sub.returncode == 0, sub.stderr


def test_no_config_is_a_clear_error() -> None:
    out = mf("status")
    assert out.returncode == 78
    assert "--config" in out.stderr and "MAILFILER_CONFIG" in out.stderr
    assert "Traceback" not in out.stderr


def test_config_check_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "database: mysql://x\n"
        "state_dir: s\n"
        "mailboxes:\n"
        "  - name: alice\n"
        "    owner: not-an-address\n"
        "    maildir: M\n"
        "    tracked_folder: []\n"
    )
    out = mf("--config", str(bad), "config", "check")
    assert out.returncode == 78
    lines = [line for line in out.stderr.splitlines() if line.startswith(str(bad))]
    assert any(f"{bad}:1:" in line for line in lines), out.stderr
    assert any(f"{bad}:5:" in line for line in lines), out.stderr
    assert any(f"{bad}:7:" in line and "tracked_folders" in line for line in lines), out.stderr
    js = mf("--config", str(bad), "config", "check", "--json")
    assert js.returncode == 78
    assert json.loads(js.stdout)["valid"] is False


def test_config_check_ok_via_env(config: Path) -> None:
    out = mf("config", "check", env_config=str(config))
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout


def test_records_import_and_list(config: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "records.csv"
    csv_file.write_text(
        "entity,key,name,emails,domains,parent\n"
        "contact,bob,Bob Smith,bob@contoso.com,,account:contoso\n"
        "account,contoso,Contoso Ltd,,contoso.com;contoso.co.uk,\n"
    )
    out = mf("--config", str(config), "records", "import", str(csv_file), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["created"] == 2
    again = mf("--config", str(config), "records", "import", str(csv_file), "--json")
    assert json.loads(again.stdout) == {"file": str(csv_file), "created": 0, "updated": 0, "unchanged": 2}
    listed = json.loads(mf("--config", str(config), "records", "list", "--entity", "account", "--json").stdout)
    assert listed == [
        {
            "ref": "account:contoso",
            "entity": "account",
            "key": "contoso",
            "name": "Contoso Ltd",
            "parent": None,
            "emails": [],
            "domains": ["contoso.co.uk", "contoso.com"],
        }
    ]


def test_records_import_rejects_bad_rows(config: Path, tmp_path: Path) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("entity,key,name,emails\ncontact,,No Key,x@y.z\nwidget,w1,W,\ncontact,c,C,not-an-email\n")
    out = mf("--config", str(config), "records", "import", str(csv_file))
    assert out.returncode == 65
    assert f"{csv_file}:2: missing key" in out.stderr
    assert f"{csv_file}:4:" in out.stderr
    assert "nothing was imported" in out.stderr


def test_unknown_regarding_filter(config: Path) -> None:
    out = mf("--config", str(config), "activities", "--regarding", "account:nope")
    assert out.returncode == 66
    assert "no record account:nope" in out.stderr
