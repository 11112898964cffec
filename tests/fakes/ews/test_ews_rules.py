"""The fake's inbox rules against the UpdateInboxRules (create, set, delete) and GetInboxRules
examples of Microsoft's EWS reference, element by element; the Outlook rule blob
(OutlookRuleBlobExists; RemoveOutlookRuleBlob true deletes it, false keeps it); and the rules
the fake runs on delivery into the Inbox."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.fakes.ews.test_ews_documented import (
    ALICE,
    GET_INBOX_RULES,
    UPDATE_INBOX_RULES,
    Client,
    M,
    T,
    expect,
    outline,
)
from tests.fakes.ews.test_ews_documented import client as client

EMPTY_INBOX_RULES = """
m:GetInboxRulesResponse [ResponseClass]
  m:ResponseCode
  m:OutlookRuleBlobExists
  m:InboxRules
"""


def update(client: Client, operations: str, *, remove_blob: bool) -> ET.Element:
    _, got = client.call(f"<m:UpdateInboxRules><m:RemoveOutlookRuleBlob>{str(remove_blob).lower()}"
                         f"</m:RemoveOutlookRuleBlob><m:Operations>{operations}</m:Operations></m:UpdateInboxRules>")  # fmt: skip
    return got


def get_rules(client: Client) -> ET.Element:
    _, got = client.call(f"<m:GetInboxRules><m:MailboxSmtpAddress>{ALICE}</m:MailboxSmtpAddress></m:GetInboxRules>")
    return got


def rule(name: str, subject: str, folder: str, rule_id: str = "") -> str:
    id_element = f"<t:RuleId>{rule_id}</t:RuleId>" if rule_id else ""
    return (
        f"<t:Rule>{id_element}<t:DisplayName>{name}</t:DisplayName><t:Priority>1</t:Priority><t:IsEnabled>true"
        f"</t:IsEnabled><t:Conditions><t:ContainsSubjectStrings><t:String>{subject}</t:String></t:ContainsSubjectStrings>"
        f"</t:Conditions><t:Actions><t:MoveToFolder>{folder}</t:MoveToFolder></t:Actions></t:Rule>"
    )


def test_set_and_delete_rule_match_the_documented_examples(client: Client) -> None:
    junk = '<t:DistinguishedFolderId Id="junkemail"/>'
    assert outline(update(client, f"<t:CreateRuleOperation>{rule('MoveInterestingToJunk', 'Interesting', junk)}"
                                  "</t:CreateRuleOperation>", remove_blob=True)) == expect(UPDATE_INBOX_RULES)  # fmt: skip
    got = get_rules(client)
    assert outline(got) == expect(GET_INBOX_RULES)
    rule_id = got.findtext(f".//{{{T}}}RuleId")
    folder = got.find(f".//{{{T}}}MoveToFolder/{{{T}}}FolderId")
    assert rule_id and folder is not None  # a distinguished id is answered as the folder's FolderId

    # the documented set: the same rule, renamed, its folder by FolderId with a ChangeKey
    target = f'<t:FolderId Id="{folder.get("Id")}" ChangeKey="{folder.get("ChangeKey")}"/>'
    got = update(client, f"<t:SetRuleOperation>{rule('(Modified) This is Junk', 'Interesting', target, rule_id)}"
                         "</t:SetRuleOperation>", remove_blob=True)  # fmt: skip
    assert outline(got) == expect(UPDATE_INBOX_RULES)
    after = get_rules(client)
    assert outline(after) == expect(GET_INBOX_RULES)
    assert [r.findtext(f"{{{T}}}DisplayName") for r in after.iter(f"{{{T}}}Rule")] == ["(Modified) This is Junk"]
    assert after.findtext(f".//{{{T}}}RuleId") == rule_id  # a set keeps the rule's id

    # the documented delete; a second one names a rule that is gone
    assert outline(update(client, f"<t:DeleteRuleOperation><t:RuleId>{rule_id}</t:RuleId></t:DeleteRuleOperation>",
                          remove_blob=True)) == expect(UPDATE_INBOX_RULES)  # fmt: skip
    assert outline(get_rules(client)) == expect(EMPTY_INBOX_RULES)
    gone = update(client, f"<t:DeleteRuleOperation><t:RuleId>{rule_id}</t:RuleId></t:DeleteRuleOperation>",
                  remove_blob=True)  # fmt: skip
    assert gone.get("ResponseClass") == "Error" and gone.findtext(f"{{{M}}}ResponseCode") == "ErrorRuleNotFound"


def test_the_outlook_rule_blob_survives_only_remove_outlook_rule_blob_false(client: Client) -> None:
    client.server.set_outlook_rule_blob(ALICE, True)
    assert get_rules(client).findtext(f"{{{M}}}OutlookRuleBlobExists") == "true"
    inbox = '<t:DistinguishedFolderId Id="inbox"/>'
    update(client, f"<t:CreateRuleOperation>{rule('Keep', 'x', inbox)}</t:CreateRuleOperation>", remove_blob=False)
    assert client.server.outlook_rule_blob(ALICE)
    assert get_rules(client).findtext(f"{{{M}}}OutlookRuleBlobExists") == "true"
    update(client, f"<t:CreateRuleOperation>{rule('Lose', 'y', inbox)}</t:CreateRuleOperation>", remove_blob=True)
    assert not client.server.outlook_rule_blob(ALICE)
    assert get_rules(client).findtext(f"{{{M}}}OutlookRuleBlobExists") == "false"


def test_rules_run_on_delivery_into_the_inbox(client: Client) -> None:
    server = client.server
    folder = server.folder_id(ALICE, "Inbox/TestFolder")
    operations = "".join(
        f"<t:CreateRuleOperation><t:Rule><t:DisplayName>{name}</t:DisplayName><t:Priority>{n}</t:Priority>"
        f"<t:IsEnabled>{enabled}</t:IsEnabled><t:Conditions>{conditions}</t:Conditions><t:Actions>"
        f'<t:MoveToFolder><t:FolderId Id="{folder}"/></t:MoveToFolder></t:Actions></t:Rule></t:CreateRuleOperation>'
        for n, (name, enabled, conditions) in enumerate([
            ("off", "false", "<t:ContainsSubjectStrings><t:String>never</t:String></t:ContainsSubjectStrings>"),
            ("bob", "true", "<t:FromAddresses><t:Address><t:EmailAddress>bob@example.org</t:EmailAddress></t:Address>"
                            "</t:FromAddresses><t:ContainsSubjectStrings><t:String>quote</t:String>"
                            "</t:ContainsSubjectStrings>"),
            ("body", "true", "<t:ContainsBodyStrings><t:String>hello</t:String></t:ContainsBodyStrings>"),
        ], start=1)
    )  # fmt: skip
    update(client, operations, remove_blob=False)

    def mime(frm: str, subject: str) -> bytes:
        return f"From: {frm}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()

    inbox = server.folder_id(ALICE, "Inbox")
    assert server.item(server.deliver(ALICE, mime("Bob <bob@example.org>", "A Quote"))).folder.id == folder
    assert server.item(server.deliver(ALICE, mime("Bob <bob@example.org>", "Hi"))).folder.id == inbox  # both must hold
    assert server.item(server.deliver(ALICE, mime("Eve <eve@example.org>", "never"))).folder.id == inbox  # disabled
    # ContainsBodyStrings is not run by the fake; delivery into another folder runs no rule
    assert server.item(server.deliver(ALICE, mime("Eve <eve@example.org>", "x"))).folder.id == inbox
    assert (
        server.item(server.deliver(ALICE, mime("Bob <bob@example.org>", "quote"), "Inbox/TestFolder")).folder.id
        == folder
    )
