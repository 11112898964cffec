"""Inbox rules on Exchange, end to end through the CLI against the fakes (tests/servers/ews
and tests/servers/graph, not a real Exchange): `mailfiler rules server --json` lists
and marks the rules (one moving mail into a tracked folder, one pointing at a folder
that is gone, one forwarding a tracked record's mail), `rules server apply --dry-run`
writes nothing, `apply` creates mailfiler's named rule from the route:, a user's own
rules survive every apply, and a changed or removed route updates or deletes only
mailfiler's rule.  On EWS every UpdateInboxRules keeps the Outlook rule blob
(RemoveOutlookRuleBlob false), and the fake runs the rule mailfiler wrote on a
delivery: the daemon then tracks the message in the folder it was moved to."""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import E2EEnv, locations, wait_for
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.graph.helpers import UPN, tenant
from tests.graph.world import graph_block
from tests.servers.ews import EwsServer
from tests.servers.ews.soap import PREFIXES
from tests.servers.graph import GraphFake
from tests.servers.graph import rules as graph_rules
from tests.servers.tls import Tls

ALICE = "alice@example.com"
CONTOSO = "INBOX/Clients/Contoso"
OTHER = "INBOX/Clients/Fabrikam"
ROUTE = {"from_domains": ["contoso.com"]}
OWN = f"mailfiler: {CONTOSO}"
M, T = PREFIXES["m"], PREFIXES["t"]
N_LATENCY = 30


def fake(folder: str) -> str:
    return "Inbox" + folder[len("INBOX") :]


# -- EWS -----------------------------------------------------------------------------------


@pytest.fixture
def exchange() -> Iterator[EwsServer]:
    users = [
        {"smtp": ALICE, "password": "pw-alice", "folders": [fake(CONTOSO), fake(OTHER), "Inbox/Old"]},
        {"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": [ALICE]},
    ]
    with EwsServer(users) as server:
        server.hub.heartbeat = 1.0
        yield server


def ews_world(env: E2EEnv, server: EwsServer, route: dict[str, Any] | None = ROUTE) -> None:
    secret = env.root / "ews.password"
    secret.write_text("pw-svc\n", encoding="utf-8")
    secret.chmod(0o600)
    spec = env.add_mailbox("alice", ALICE, [(CONTOSO, "account:contoso"), (OTHER, None)])
    if route is not None:
        spec.folders[0]["route"] = route
    spec.extra = {
        "ews": {"url": server.ews_url, "username": "svc", "password_file": str(secret), "auth": "ntlm",
                "impersonate": ALICE, "version": "2016", "timeout": 10},
        "server_rules": {"interval": 300},
    }  # fmt: skip
    env.write_config()


def ews_call(server: EwsServer, body: str) -> ET.Element:
    """One SOAP request as Outlook would send it (basic auth as alice)."""
    import httpx

    envelope = (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"'
        f' xmlns:m="{M}" xmlns:t="{T}"><soap:Header><t:RequestServerVersion Version="Exchange2016"/></soap:Header>'
        f"<soap:Body>{body}</soap:Body></soap:Envelope>"
    )
    answer = httpx.post(server.ews_url, content=envelope.encode(), auth=("alice", "pw-alice"),
                        headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=10)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return ET.fromstring(answer.content)


def outlook_rule(name: str, priority: int, conditions: str, actions: str) -> str:
    return (
        f"<t:CreateRuleOperation><t:Rule><t:DisplayName>{name}</t:DisplayName><t:Priority>{priority}</t:Priority>"
        f"<t:IsEnabled>true</t:IsEnabled><t:Conditions>{conditions}</t:Conditions><t:Actions>{actions}</t:Actions>"
        "</t:Rule></t:CreateRuleOperation>"
    )


def user_rules(server: EwsServer, folder_id: str) -> None:
    """Outlook writes three rules of the user's and keeps its client-side rules in the rule blob."""
    ops = "".join([
        outlook_rule("Contoso orders to its folder", 1,
                     "<t:ContainsSenderStrings><t:String>@contoso.com</t:String></t:ContainsSenderStrings>"
                     "<t:ContainsSubjectStrings><t:String>order</t:String></t:ContainsSubjectStrings>",
                     f'<t:MoveToFolder><t:FolderId Id="{server.folder_id(ALICE, fake(CONTOSO))}"/></t:MoveToFolder>'),
        outlook_rule("Old stuff", 2,
                     "<t:ContainsSubjectStrings><t:String>archive</t:String></t:ContainsSubjectStrings>",
                     f'<t:MoveToFolder><t:FolderId Id="{folder_id}"/></t:MoveToFolder>'),
        outlook_rule("Copy Contoso to my phone", 3,
                     "<t:ContainsSenderStrings><t:String>contoso.com</t:String></t:ContainsSenderStrings>",
                     "<t:ForwardToRecipients><t:Address><t:EmailAddress>me@phone.example</t:EmailAddress>"
                     "</t:Address></t:ForwardToRecipients>"),
    ])  # fmt: skip
    got = ews_call(server, f"<m:UpdateInboxRules><m:RemoveOutlookRuleBlob>false</m:RemoveOutlookRuleBlob>"
                           f"<m:Operations>{ops}</m:Operations></m:UpdateInboxRules>")  # fmt: skip
    assert got.find(f".//{{{M}}}ResponseCode").text == "NoError"  # type: ignore[union-attr]


def rules_on(server: EwsServer) -> dict[str, ET.Element]:
    got = ews_call(server, f"<m:GetInboxRules><m:MailboxSmtpAddress>{ALICE}</m:MailboxSmtpAddress></m:GetInboxRules>")
    return {r.findtext(f"{{{T}}}DisplayName") or "": r for r in got.iter(f"{{{T}}}Rule")}


def test_ews_rules_listed_marked_and_mailfilers_own_kept_in_step(exchange: EwsServer, env: E2EEnv) -> None:
    ews_world(env, exchange)
    old = exchange.folder_id(ALICE, "Inbox/Old")
    user_rules(exchange, old)
    exchange.set_outlook_rule_blob(ALICE, True)
    exchange.delete_folder(ALICE, "Inbox/Old")
    theirs = {name: ET.tostring(r) for name, r in rules_on(exchange).items()}

    [data] = json.loads(env.cli("rules", "server", "--json").stdout)
    assert data["backend"] == "ews"
    marks = {r["name"]: [m["kind"] for m in r["marks"]] for r in data["rules"]}
    assert marks == {
        "Contoso orders to its folder": ["tracked"],
        "Old stuff": ["missing-folder"],
        "Copy Contoso to my phone": ["past-tracking"],
    }
    forward = next(r for r in data["rules"] if r["name"] == "Copy Contoso to my phone")
    assert forward["actions"] == [
        {"kind": "forward", "target": "me@phone.example", "text": "forward to me@phone.example"}
    ]
    assert forward["condition_text"] == 'sender contains "contoso.com"'

    text = env.cli("rules", "server").stdout
    assert "on the server (ews)" in text and "MISSING FOLDER" in text and "PAST TRACKING" in text

    dry = env.cli("rules", "server", "apply", "--dry-run")
    assert f"alice: would create rule {OWN}" in dry.stdout
    assert 'when sender contains "@contoso.com" or ".contoso.com": move to INBOX/Clients/Contoso' in dry.stdout
    assert set(rules_on(exchange)) == set(theirs)

    env.cli("rules", "server", "apply")
    after = rules_on(exchange)
    assert set(after) == {*theirs, OWN}
    assert {n: ET.tostring(r) for n, r in after.items() if n != OWN} == theirs  # the user's rules untouched
    assert exchange.outlook_rule_blob(ALICE)  # every UpdateInboxRules said RemoveOutlookRuleBlob false
    own = after[OWN]
    assert own.findtext(f"{{{T}}}Priority") == "4"  # after the user's rules
    assert [s.text for s in own.iter(f"{{{T}}}String")] == ["@contoso.com", ".contoso.com"]
    assert own.find(f".//{{{T}}}MoveToFolder/{{{T}}}FolderId").get("Id") == exchange.folder_id(ALICE, fake(CONTOSO))  # type: ignore[union-attr]
    out = env.cli("rules", "server", "apply")
    assert "alice: mailfiler's rules are in step with the config" in out.stdout

    # the route changes: only mailfiler's rule is set; it goes: only mailfiler's rule is deleted
    ews_world(env, exchange, route={"from_domains": ["contoso.com"], "subject_contains": ["invoice"]})
    assert f"alice: update rule {OWN}" in env.cli("rules", "server", "apply").stdout
    after = rules_on(exchange)
    assert [s.text for s in after[OWN].find(f".//{{{T}}}ContainsSubjectStrings")] == ["invoice"]  # type: ignore[union-attr]
    assert {n: ET.tostring(r) for n, r in after.items() if n != OWN} == theirs
    # the user turns mailfiler's rule off in Outlook; the route then goes (Exchange deletes no disabled rule)
    own = rules_on(exchange)[OWN]
    own.find(f"{{{T}}}IsEnabled").text = "false"  # type: ignore[union-attr]
    set_op = f"<t:SetRuleOperation>{ET.tostring(own, encoding='unicode')}</t:SetRuleOperation>"
    ews_call(exchange, f"<m:UpdateInboxRules><m:RemoveOutlookRuleBlob>false</m:RemoveOutlookRuleBlob>"
                       f"<m:Operations>{set_op}</m:Operations></m:UpdateInboxRules>")  # fmt: skip
    assert rules_on(exchange)[OWN].findtext(f"{{{T}}}IsEnabled") == "false"
    ews_world(env, exchange, route=None)
    assert f"alice: delete rule {OWN}" in env.cli("rules", "server", "apply").stdout
    assert {n: ET.tostring(r) for n, r in rules_on(exchange).items()} == theirs
    assert exchange.outlook_rule_blob(ALICE)


def test_ews_rule_written_by_the_daemon_files_a_delivery_that_it_tracks(
    exchange: EwsServer, env: E2EEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    ews_world(env, exchange)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    wait_for(lambda: OWN in rules_on(exchange), timeout=20, what="the daemon writing mailfiler's rule")
    assert exchange.outlook_rule_blob(ALICE) is False  # none to begin with: nothing to keep
    item = exchange.deliver(ALICE, mail(1, frm="Bob <bob@sales.contoso.com>", subject="Offer"))  # to the Inbox
    assert exchange.item(item).folder.id == exchange.folder_id(ALICE, fake(CONTOSO))  # the fake ran the rule
    act = env.wait_activity(mid(1), timeout=10)
    assert act["regarding"] == "account:contoso" and locations(act) == [("alice", CONTOSO)]
    # mail from elsewhere stays in the Inbox
    other = exchange.deliver(ALICE, mail(2, frm="Eve <eve@example.org>"))
    assert exchange.item(other).folder.id == exchange.folder_id(ALICE, "Inbox")
    [row] = env.wait_status(lambda s: bool(s["server_rules"]), what="server rules in status")["server_rules"]
    assert (row["backend"], row["rules"], row["owned"], row["into_tracked"]) == ("ews", 1, 1, 1)

    # the drop-to-tracked latency of mail the rule files: the fake's streaming push, then the daemon's catch-up
    latencies = []
    with sqlite3.connect(f"file:{env.db_path}?mode=ro", uri=True, timeout=5) as db:
        for n in range(10, 10 + N_LATENCY):
            exchange.deliver(ALICE, mail(n, frm="Bob <bob@contoso.com>", subject=f"Quote {n}"))
            t0 = time.monotonic()
            while not db.execute("SELECT 1 FROM activity WHERE message_id = ?", (mid(n),)).fetchone():
                assert time.monotonic() < t0 + 30, f"message {n} not tracked within 30 s\n{daemon.log_tail()}"
                time.sleep(0.005)
            latencies.append(time.monotonic() - t0)
    latencies.sort()
    median = statistics.median(latencies)
    with capsys.disabled():
        print(f"\nEWS rule-filed drop-to-tracked latency over {N_LATENCY} deliveries (fake Exchange): median"
              f" {median * 1000:.0f} ms, p90 {latencies[int(0.9 * N_LATENCY)] * 1000:.0f} ms,"
              f" max {latencies[-1] * 1000:.0f} ms")  # fmt: skip
    assert median < 1.5, latencies


# -- Graph ---------------------------------------------------------------------------------


@pytest.fixture
def graph(graph_tls: Tls) -> Iterator[GraphFake]:
    with GraphFake(graph_tls) as fake:
        tenant(fake, [CONTOSO, OTHER, "INBOX/Old"])
        yield fake


def graph_world(env: E2EEnv, graph: GraphFake, route: dict[str, Any] | None = ROUTE) -> None:
    spec = env.add_mailbox("adele", UPN, [(CONTOSO, "account:contoso"), (OTHER, None)])
    if route is not None:
        spec.folders[0]["route"] = route
    spec.extra = {"graph": graph_block(graph, env.root), "server_rules": {"interval": 300}}
    env.write_config()


def graph_rules_on(graph: GraphFake) -> dict[str, dict[str, Any]]:
    return {r["displayName"]: dict(r) for r in graph_rules.rules_of(graph.mailbox(UPN))}


def test_graph_rules_listed_marked_and_mailfilers_own_kept_in_step(graph: GraphFake, env: E2EEnv) -> None:
    graph_world(env, graph)
    box = graph.mailbox(UPN)
    old = graph.folder(UPN, "INBOX/Old").id
    for body in (
        {"displayName": "Contoso orders to its folder", "sequence": 1,
         "conditions": {"senderContains": ["@contoso.com"], "subjectContains": ["order"]},
         "actions": {"moveToFolder": graph.folder(UPN, CONTOSO).id, "stopProcessingRules": True}},
        {"displayName": "Old stuff", "sequence": 2, "conditions": {"subjectContains": ["archive"]},
         "actions": {"moveToFolder": old}},
        {"displayName": "Copy Contoso to my phone", "sequence": 3, "conditions": {"senderContains": ["contoso.com"]},
         "actions": {"forwardTo": [{"emailAddress": {"name": "Me", "address": "me@phone.example"}}]}},
        {"displayName": "Set by the admin", "sequence": 4, "isReadOnly": True,
         "conditions": {"fromAddresses": [{"emailAddress": {"address": "ceo@example.com"}}]},
         "actions": {"markImportance": "high"}},
    ):  # fmt: skip
        graph_rules.add_rule(box, body)
    graph.delete_folder(UPN, "INBOX/Old")
    theirs = graph_rules_on(graph)

    [data] = json.loads(env.cli("rules", "server", "--json").stdout)
    assert data["backend"] == "graph"
    marks = {r["name"]: [m["kind"] for m in r["marks"]] for r in data["rules"]}
    assert marks == {
        "Contoso orders to its folder": ["tracked"],
        "Old stuff": ["missing-folder"],
        "Copy Contoso to my phone": ["past-tracking"],
        "Set by the admin": [],
    }
    assert "rule 'Old stuff' is in error on the server" in " ".join(data["problems"])
    admin = next(r for r in data["rules"] if r["name"] == "Set by the admin")
    assert admin["condition_text"] == 'from "ceo@example.com"'
    assert admin["conditions"]["part"] == "all" and admin["conditions"]["values"] == ["ceo@example.com"]

    dry = env.cli("rules", "server", "apply", "--dry-run")
    assert f"adele: would create rule {OWN}" in dry.stdout
    assert graph_rules_on(graph) == theirs

    env.cli("rules", "server", "apply")
    after = graph_rules_on(graph)
    assert {n: r for n, r in after.items() if n != OWN} == theirs  # the user's rules untouched
    own = after[OWN]
    assert own["sequence"] == 5 and own["isEnabled"] is True
    assert own["conditions"] == {"senderContains": ["@CONTOSO.COM", ".CONTOSO.COM"]}  # Graph upper-cases
    assert own["actions"] == {"moveToFolder": graph.folder(UPN, CONTOSO).id}
    assert "adele: mailfiler's rules are in step with the config" in env.cli("rules", "server", "apply").stdout

    # the route changes: only mailfiler's rule is patched; it goes: only mailfiler's rule is deleted
    graph_world(env, graph, route={"from_addresses": ["bob@contoso.com"], "to_addresses": ["sales@example.com"]})
    assert f"adele: update rule {OWN}" in env.cli("rules", "server", "apply").stdout
    own = graph_rules_on(graph)[OWN]
    assert own["conditions"] == {"fromAddresses": [{"emailAddress": {"address": "bob@contoso.com"}}],
                                 "sentToAddresses": [{"emailAddress": {"address": "sales@example.com"}}]}  # fmt: skip
    assert {n: r for n, r in graph_rules_on(graph).items() if n != OWN} == theirs
    graph_world(env, graph, route=None)
    assert f"adele: delete rule {OWN}" in env.cli("rules", "server", "apply").stdout
    assert graph_rules_on(graph) == theirs


def test_graph_rules_kept_in_step_by_the_daemon(graph: GraphFake, env: E2EEnv) -> None:
    graph_world(env, graph)
    graph_rules.add_rule(graph.mailbox(UPN), {"displayName": "Mine", "sequence": 1, "actions": {"markAsRead": True}})
    daemon = env.start_daemon()
    daemon.wait_event("server-rules-applied", timeout=30)
    assert set(graph_rules_on(graph)) == {"Mine", OWN}
    [row] = env.wait_status(lambda s: bool(s["server_rules"]), what="server rules in status")["server_rules"]
    assert (row["backend"], row["rules"], row["owned"], row["into_tracked"]) == ("graph", 2, 1, 1)

    # the route goes from the config: the daemon deletes mailfiler's rule, the user's stays
    since = daemon.mark()
    graph_world(env, graph, route=None)
    daemon.wait_event("server-rules-applied", since=since, timeout=30)
    assert set(graph_rules_on(graph)) == {"Mine"}
