"""An Exchange mailbox with ``ews: {sync_back: ...}`` through the commands, as an admin meets
it: ``config check``, ``mailfiler sync`` both ways against the fake Exchange, ``status``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from exchangelib.protocol import close_connections

from tests.servers.ews import EwsServer
from tests.sync.test_config_cli import mf
from tests.sync.test_ews_targets import ALICE, outlook

CONFIG = """\
database: sqlite:///state/mf.db
state_dir: state
records:
  - {{entity: account, key: contoso, name: Contoso AB, domains: [contoso.com]}}
  - {{entity: contact, key: bob, name: Bob Smith, emails: [bob@contoso.com], parent: "account:contoso"}}
mailboxes:
  - name: alice
    owner: {owner}
    ews:
      url: {url}
      username: {owner}
      auth: basic
      password_command: [printf, pw]
      version: "2016"
      sync_back: {sync_back}
{sync}"""


@pytest.fixture
def server() -> Iterator[EwsServer]:
    with EwsServer([{"smtp": ALICE, "password": "pw", "folders": ["Inbox"]}]) as fake:
        yield fake
    close_connections()


def write(
    tmp_path: Path, server: EwsServer, sync_back: str, sync: str = "    sync: {filters: {contacts: [{all: true}]}}\n"
) -> Path:
    cfg = tmp_path / "mailfiler.yaml"
    text = CONFIG.format(owner=ALICE, url=server.ews_url, sync_back=sync_back, sync=sync)
    cfg.write_text(text, encoding="utf-8")
    return cfg


def test_config_check_takes_sync_back_and_names_its_problems(tmp_path: Path, server: EwsServer) -> None:
    cfg = write(tmp_path, server, "{contacts: true, calendar: CRM}")
    out = mf(cfg, "config", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    cfg = write(tmp_path, server, "{contacts: 'a/b', calender: true}")
    out = mf(cfg, "config", "check")
    assert out.returncode != 0
    assert "a folder name (no '/')" in out.stderr + out.stdout and "calender" in out.stderr + out.stdout
    cfg = write(tmp_path, server, "{contacts: true}", sync="")
    out = mf(cfg, "config", "check")
    assert "syncs nothing without a sync: block" in out.stdout + out.stderr


def test_mailfiler_sync_with_an_exchange_mailbox(tmp_path: Path, server: EwsServer) -> None:
    cfg = write(tmp_path, server, "{contacts: true, calendar: true}")
    out = mf(cfg, "sync", "--json")
    assert out.returncode == 0, out.stderr
    results = {r["kind"]: r for r in json.loads(out.stdout)}
    assert results["contacts"]["uploaded"] == 1 and results["contacts"]["location"].startswith("ews://")
    acc = outlook(server)
    [bob] = list(acc.contacts.all())
    assert (bob.display_name, bob.email_addresses[0].email) == ("Bob Smith", "bob@contoso.com")
    bob.job_title = "CEO"
    bob.save(update_fields=["job_title"])
    out = mf(cfg, "sync", "--json")
    assert {r["kind"]: r for r in json.loads(out.stdout)}["contacts"]["updated_crm"] == 1
    [contact] = json.loads(mf(cfg, "contacts", "list", "--json").stdout)
    assert (contact["name"], contact["job_title"], contact["company"]) == ("Bob Smith", "CEO", "Contoso AB")
    status = json.loads(mf(cfg, "status", "--json").stdout)
    locations = {s["kind"]: s["location"] for s in status["sync"]}
    assert locations == {"contacts": f"ews://{ALICE}/contacts", "calendar": f"ews://{ALICE}/calendar"}
    for _ in range(2):  # nothing to do; then nothing even looked at
        results = json.loads(mf(cfg, "sync", "--json").stdout)
        assert all(r["state"] == "ok" and r["uploaded"] + r["updated_mailbox"] + r["updated_crm"] == 0 for r in results)
    assert all(r["quiet"] for r in results)
