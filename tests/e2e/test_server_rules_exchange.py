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
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.harness import E2EEnv, locations
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.servers.ews import EwsServer
from tests.servers.ews.soap import PREFIXES

ALICE = "alice@example.com"
CONTOSO = "INBOX/Clients/Contoso"
OTHER = "INBOX/Clients/Fabrikam"
ROUTE = {"from_domains": ["contoso.com"]}
OWN = f"mailfiler: {CONTOSO}"
M, T = PREFIXES["m"], PREFIXES["t"]


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
    ews_world(env, exchange, route=None)
    assert f"alice: delete rule {OWN}" in env.cli("rules", "server", "apply").stdout
    assert {n: ET.tostring(r) for n, r in rules_on(exchange).items()} == theirs
    assert exchange.outlook_rule_blob(ALICE)


def test_ews_rule_written_by_mailfiler_files_a_delivery_that_the_daemon_tracks(
    exchange: EwsServer, env: E2EEnv
) -> None:
    ews_world(env, exchange)
    env.cli("rules", "server", "apply")
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    item = exchange.deliver(ALICE, mail(1, frm="Bob <bob@sales.contoso.com>", subject="Offer"))  # to the Inbox
    assert exchange.item(item).folder.id == exchange.folder_id(ALICE, fake(CONTOSO))  # the fake ran the rule
    act = env.wait_activity(mid(1), timeout=10)
    assert act["regarding"] == "account:contoso" and locations(act) == [("alice", CONTOSO)]
    # mail from elsewhere stays in the Inbox
    other = exchange.deliver(ALICE, mail(2, frm="Eve <eve@example.org>"))
    assert exchange.item(other).folder.id == exchange.folder_id(ALICE, "Inbox")
