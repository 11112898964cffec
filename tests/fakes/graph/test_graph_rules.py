"""Inbox rules (``mailFolders/inbox/messageRules``): the fake's answers to the requests of
Microsoft's Graph reference examples (mailfolder-list-messagerules, mailfolder-post-messagerules,
messagerule-update, messagerule-delete), compared with the structures of the documented
responses, and the rules' life: ordering, PATCH semantics, a folder gone, errors."""

from __future__ import annotations

import httpx

from tests.fakes.graph.conftest import UPN, covers, shape, user_path
from tests.servers.graph import GraphFake

# The documented create request ("From partner": forward mail whose sender contains "adele").
DOC_CREATE = {
    "displayName": "From partner",
    "sequence": 2,
    "isEnabled": True,
    "conditions": {"senderContains": ["adele"]},
    "actions": {
        "forwardTo": [{"emailAddress": {"name": "Alex Wilbur", "address": "AlexW@contoso.onmicrosoft.com"}}],
        "stopProcessingRules": True,
    },
}
# The structure of the documented responses, reduced to keys and value types.
DOC_RULE = {
    "id": "str", "displayName": "str", "sequence": "int", "isEnabled": "bool", "hasError": "bool",
    "isReadOnly": "bool", "conditions": {"senderContains": ["str"]},
    "actions": {"stopProcessingRules": "bool", "forwardTo": [{"emailAddress": {"name": "str", "address": "str"}}]},
}  # fmt: skip
DOC_LIST = {"@odata.context": "str", "value": [DOC_RULE]}


def rules_url(graph: GraphFake, folder: str = "inbox") -> str:
    return f"{user_path(graph)}/mailFolders/{folder}/messageRules"


def test_create_list_update_delete_as_documented(graph: GraphFake, api: httpx.Client) -> None:
    spam = {"displayName": "Remove spam", "sequence": 1, "isEnabled": True,
            "conditions": {"subjectContains": ["enter to win"]}, "actions": {"delete": True, "stopProcessingRules": True}}  # fmt: skip
    created = api.post(rules_url(graph), json=DOC_CREATE)
    assert created.status_code == 201, created.text
    rule = created.json()
    assert covers(shape(rule), DOC_RULE)
    # as the documented answer shows: senderContains comes back upper-cased, the server's fields added
    assert rule["conditions"] == {"senderContains": ["ADELE"]}
    assert (rule["hasError"], rule["isReadOnly"], rule["isEnabled"]) == (False, False, True)
    assert api.post(rules_url(graph), json=spam).status_code == 201

    listed = api.get(rules_url(graph))
    assert listed.status_code == 200
    body = listed.json()
    assert covers(shape({**body, "value": body["value"][1:]}), DOC_LIST)
    assert [r["displayName"] for r in body["value"]] == ["Remove spam", "From partner"]  # by sequence
    assert body["@odata.context"].endswith("/mailFolders('inbox')/messageRules")

    # the documented update: a new name, and the actions replaced as a whole
    patched = api.patch(f"{rules_url(graph)}/{rule['id']}",
                        json={"displayName": "Important from partner", "actions": {"markImportance": "high"}})  # fmt: skip
    assert patched.status_code == 200, patched.text
    after = patched.json()
    assert after["displayName"] == "Important from partner"
    assert after["actions"] == {"markImportance": "high"}
    assert after["conditions"] == {"senderContains": ["ADELE"]} and after["sequence"] == 2
    assert api.get(f"{rules_url(graph)}/{rule['id']}").json()["displayName"] == "Important from partner"

    gone = api.delete(f"{rules_url(graph)}/{rule['id']}")
    assert gone.status_code == 204 and gone.content == b""
    assert [r["displayName"] for r in api.get(rules_url(graph)).json()["value"]] == ["Remove spam"]
    missing = api.delete(f"{rules_url(graph)}/{rule['id']}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ErrorItemNotFound"


def test_the_inbox_by_id_a_move_rule_whose_folder_goes_and_refusals(graph: GraphFake, api: httpx.Client) -> None:
    acme = graph.folder(UPN, "Inbox/Clients/Acme").id
    inbox = graph.folder(UPN, "Inbox").id
    move = {"displayName": "Acme", "sequence": 1, "conditions": {"fromAddresses": [
        {"emailAddress": {"address": "bob@acme.example"}}]}, "actions": {"moveToFolder": acme}}  # fmt: skip
    made = api.post(rules_url(graph, inbox), json=move)  # the Inbox by its id
    assert made.status_code == 201 and made.json()["actions"] == {"moveToFolder": acme}
    graph.delete_folder(UPN, "Inbox/Clients/Acme")
    assert api.get(rules_url(graph)).json()["value"][0]["hasError"] is True

    other = api.post(rules_url(graph, graph.folder(UPN, "Inbox/Clients/Öresund").id), json=move)
    assert other.status_code == 400  # only the Inbox has rules
    for bad in ({"sequence": 1, "actions": {"delete": True}}, {"displayName": "x", "actions": {"delete": True}},
                {"displayName": "x", "sequence": 1}, {**move, "bogus": 1},
                {**move, "conditions": {"senderContains": "not a list"}}):  # fmt: skip
        assert api.post(rules_url(graph), json=bad).status_code == 400, bad
    assert api.patch(f"{rules_url(graph)}/AQAAAAAAAAA=", json={"isEnabled": False}).status_code == 404
