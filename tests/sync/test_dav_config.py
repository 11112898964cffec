"""The caldav:/carddav: settings of the sync: block, and `mailfiler sync` against Radicale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailfiler.config import load_config
from mailfiler.errors import ConfigError
from mailfiler.sync.dav import DavTarget
from mailfiler.sync.runner import collections, poll_interval
from tests.servers.radicale import DavUser, dav_user, radicale
from tests.sync.test_config_cli import mf, write

__all__ = ["dav_user", "radicale"]


def test_dav_settings_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dav.pw").write_text("s3cret\n")
    cfg = write(tmp_path, """\
        sync:
          carddav: {url: "https://dav.example.com/anna/crm-contacts", username: anna, password_file: secrets/dav.pw,
                    ca_file: certs/ca.pem, interval: 60}
          caldav: {url: "https://dav.example.com/anna/crm-calendar/", username: anna, password_file: secrets/dav.pw}
          tracked:
            - {caldav: {url: "https://dav.example.com/anna/contoso/", username: anna, password_file: secrets/dav.pw,
                        interval: 30},
               regarding: "account:contoso"}
        """)  # fmt: skip
    loaded = load_config(cfg)
    sync = loaded.config.mailboxes[0].sync
    assert sync is not None and sync.caldav is not None and sync.caldav.verify is True
    colls = collections(sync, loaded.path.parent)
    assert [(c.kind, c.role, c.regarding, c.target.backend, c.target.location) for c in colls] == [
        ("contacts", "main", None, "carddav", "https://dav.example.com/anna/crm-contacts/"),
        ("calendar", "main", None, "caldav", "https://dav.example.com/anna/crm-calendar/"),
        ("calendar", "tracked", "account:contoso", "caldav", "https://dav.example.com/anna/contoso/"),
    ]
    book = colls[0].target
    assert isinstance(book, DavTarget)
    assert book.ca_file == tmp_path / "certs" / "ca.pem"
    assert callable(book._password) and book._password() == "s3cret"
    assert "s3cret" not in repr(book) + book.location
    assert poll_interval(sync) == 30


def test_every_dav_problem_at_its_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, """\
        sync:
          vdir: {calendar: cal}
          caldav: {url: "https://anna:pw@dav.example.com/cal/", username: anna}
          carddav: {url: "ftp://dav.example.com/x/", verify: maybe}
          tracked:
            - {caldav: {url: "https://dav.example.com/c/"}, calendar: c}
        """)  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    problems = "\n".join(str(p) for p in info.value.problems)
    for want in (
        f"{cfg}:13:21: mailboxes[0].sync.caldav.url: the URL must not hold a user name or password",
        f"{cfg}:14:22: mailboxes[0].sync.carddav.url: expected an https:// URL",
        f"{cfg}:14:58: mailboxes[0].sync.carddav.verify: Input should be a valid boolean",
        f"{cfg}:16:11: mailboxes[0].sync.tracked[0]: a tracked collection names exactly one of contacts: or calendar: (vdir folders), carddav: or caldav:",
    ):
        assert want in problems, problems
    cfg = write(tmp_path, """\
        sync:
          vdir: {calendar: cal}
          caldav: {url: "https://dav.example.com/cal/", username: anna}
        """)  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    problems = "\n".join(str(p) for p in info.value.problems)
    assert "give username: and password_file: together" in problems, problems
    cfg = write(tmp_path, """\
        sync:
          vdir: {calendar: cal}
          caldav: {url: "https://dav.example.com/cal/"}
        """)  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    assert "vdir.calendar or caldav, not both" in str(info.value.problems[0])


def test_mailfiler_sync_against_a_server(tmp_path: Path, dav_user: DavUser) -> None:
    cfg = write(tmp_path, f"""\
        sync:
          carddav: {{url: "{dav_user.url("crm")}", username: {dav_user.name}, password_file: {dav_user.password_file}}}
          caldav: {{url: "{dav_user.url("cal")}", username: {dav_user.name}, password_file: missing.pw}}
          filters:
            contacts: [{{all: true}}]
        """)  # fmt: skip
    out = mf(cfg, "sync", "--json")
    results = {r["kind"]: r for r in json.loads(out.stdout)}
    # one collection's unreadable secret stops that collection only
    assert (results["contacts"]["state"], results["contacts"]["uploaded"]) == ("ok", 1)
    assert results["calendar"]["state"] == "unavailable"
    assert "caldav password_file: cannot read" in results["calendar"]["errors"][0]
    assert (dav_user.collection_dir("crm")).is_dir()
    status = json.loads(mf(cfg, "status", "--json").stdout)
    by_kind = {s["kind"]: s for s in status["sync"]}
    assert by_kind["contacts"]["location"] == dav_user.url("crm") and by_kind["contacts"]["items"] == 1
    assert dav_user.password not in out.stdout + out.stderr
