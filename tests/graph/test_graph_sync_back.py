"""Sync-back through the CLI on a Microsoft 365 mailbox (the Graph fake): `config check`
accepts graph.sync_back (and says when the mailbox has no sync: block), `mailfiler sync`
puts CRM contacts into Outlook and tracks what the user categorised in Outlook, and a
second run is quiet."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.graph.helpers import UPN, tenant
from tests.graph.test_graph_config_cli import run
from tests.graph.world import graph_block
from tests.servers.graph import GraphFake
from tests.servers.tls import make_tls

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphFake]:
    (tmp_path / "tls").mkdir()
    with GraphFake(make_tls(tmp_path / "tls")) as fake:
        tenant(fake)
        yield fake


def write(tmp_path: Path, graph: GraphFake, *, sync: bool = True) -> Path:
    mailbox: dict[str, Any] = {
        "name": "adele",
        "owner": UPN,
        "graph": graph_block(graph, tmp_path, sync_back={"contacts": True, "calendar": True,
                                                         "calendar_window": {"days_back": 7, "days_ahead": 90}}),
        "tracked_folders": [],
    }  # fmt: skip
    if sync:
        mailbox["sync"] = {"filters": {"contacts": [{"all": True}], "appointments": [{"all": True}]}}
    cfg = {
        "database": "sqlite:///state/mailfiler.db",
        "state_dir": "state",
        "records": [
            {"entity": "account", "key": "contoso", "name": "Contoso AB", "domains": ["contoso.com"]},
            {"entity": "contact", "key": "bob", "name": "Bob Smith", "emails": ["bob@contoso.com"],
             "parent": "account:contoso"},
        ],
        "mailboxes": [mailbox],
    }  # fmt: skip
    path = tmp_path / "mailfiler.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_mailfiler_sync_with_a_graph_mailbox(tmp_path: Path, graph: GraphFake) -> None:
    graph.add_contact(UPN, givenName="Bo", surname="Ek", displayName="Bo Ek", categories=["Tracked"],
                      emailAddresses=[{"address": "bo@fabrikam.se", "name": "Bo Ek"}])  # fmt: skip
    graph.add_event(UPN, subject="Möte med Bo", categories=["Tracked"],
                    start={"dateTime": "2030-01-08T10:00:00", "timeZone": "Europe/Stockholm"},
                    end={"dateTime": "2030-01-08T11:00:00", "timeZone": "Europe/Stockholm"})  # fmt: skip
    cfg = write(tmp_path, graph)
    check = run(cfg, "config", "check")
    assert check.returncode == 0, check.stdout + check.stderr

    out = run(cfg, "sync", "--json")
    assert out.returncode == 0, out.stderr
    results = {r["kind"]: r for r in json.loads(out.stdout)}
    assert (results["contacts"]["uploaded"], results["contacts"]["created_crm"]) == (1, 1)
    assert (results["calendar"]["state"], results["calendar"]["created_crm"]) == ("ok", 1)
    assert results["contacts"]["location"] == f"graph://{UPN}@{graph.tenant.id}/contacts"
    names = {str(c.fields.get("displayName")) for c in graph.mailbox(UPN).contacts.values()}
    assert names == {"Bo Ek", "Bob Smith"}
    contacts = json.loads(run(cfg, "contacts", "list", "--json").stdout)
    assert {c["name"] for c in contacts} == {"Bob Smith", "Bo Ek"}
    [appt] = json.loads(run(cfg, "appointments", "list", "--json").stdout)
    assert (appt["subject"], appt["start"]) == ("Möte med Bo", "2030-01-08T10:00:00[Europe/Stockholm]")

    again = {r["kind"]: r for r in json.loads(run(cfg, "sync", "--json").stdout)}
    assert not any(again[k][f] for k in again for f in ("uploaded", "updated_mailbox", "created_crm", "updated_crm"))
    status = json.loads(run(cfg, "status", "--json").stdout)
    assert {s["kind"]: s["state"] for s in status["sync"]} == {"contacts": "ok", "calendar": "ok"}


def test_config_check_wants_a_sync_block(tmp_path: Path, graph: GraphFake) -> None:
    check = run(write(tmp_path, graph, sync=False), "config", "check")
    assert "graph.sync_back syncs under the mailbox's sync: policies" in check.stdout + check.stderr
