"""Inbox rules: GetInboxRules and UpdateInboxRules (create, set, delete), stored per mailbox.

The fake stores the rules and answers them back; like Exchange, it does not find a disabled
rule to delete (ErrorItemNotFound: a client enables it first).  It keeps one flag for Outlook's rule blob
(the client-side rules Outlook keeps in the mailbox): GetInboxRules answers it as
OutlookRuleBlobExists, and an UpdateInboxRules with RemoveOutlookRuleBlob true deletes it, as
Exchange does.  On delivery into the Inbox (``EwsServer.deliver``) it runs the enabled rules
in priority order with the conditions ContainsSenderStrings, FromAddresses,
ContainsSubjectStrings and SentToAddresses (a rule with any other condition does not run) and
the actions MoveToFolder and StopProcessingRules; other actions are not run."""

from __future__ import annotations

import copy
import itertools
import xml.etree.ElementTree as ET

from tests.servers.ews.context import Context
from tests.servers.ews.soap import EwsError, el, local, q, sub

_numbers = itertools.count(1)
_RULES: dict[int, dict[str, list[ET.Element]]] = {}  # id(store) -> smtp -> rules
_BLOBS: dict[int, set[str]] = {}  # id(store) -> mailboxes whose Outlook rule blob exists


def _rules(ctx: Context, smtp: str) -> list[ET.Element]:
    return _RULES.setdefault(id(ctx.store), {}).setdefault(smtp.lower(), [])


def _mailbox(ctx: Context, request: ET.Element) -> str:
    smtp = (request.findtext(q("m:MailboxSmtpAddress")) or ctx.target).strip().lower()
    ctx.check_access(smtp)
    return smtp


def get_inbox_rules(ctx: Context, request: ET.Element) -> ET.Element:
    # GetInboxRules answers directly in the response element (no ResponseMessages), as documented
    answer = el("m:GetInboxRulesResponse", ResponseClass="Success")
    try:
        with ctx.store.lock:
            rules = [copy.deepcopy(r) for r in _rules(ctx, _mailbox(ctx, request))]
    except EwsError as e:
        answer.set("ResponseClass", "Error")
        sub(answer, "m:MessageText", e.text)
        sub(answer, "m:ResponseCode", e.code)
        return answer
    sub(answer, "m:ResponseCode", "NoError")
    sub(answer, "m:OutlookRuleBlobExists", "true" if has_blob(ctx.store, _mailbox(ctx, request)) else "false")
    sub(answer, "m:InboxRules").extend(rules)
    return answer


def update_inbox_rules(ctx: Context, request: ET.Element) -> ET.Element:
    answer = el("m:UpdateInboxRulesResponse", ResponseClass="Success")
    try:
        with ctx.store.lock:
            smtp = _mailbox(ctx, request)
            rules = _rules(ctx, smtp)
            if (request.findtext(q("m:RemoveOutlookRuleBlob")) or "").strip().lower() == "true":
                set_blob(ctx.store, smtp, False)
            for operation in request.find(q("m:Operations")) or []:
                kind = local(operation)
                if kind == "DeleteRuleOperation":
                    rule_id = (operation.findtext(q("t:RuleId")) or "").strip()
                    # Exchange does not find a disabled rule to delete (exchangelib's Rule.delete enables it first)
                    if any((r.findtext(q("t:RuleId")) or "").strip() == rule_id
                           and (r.findtext(q("t:IsEnabled")) or "").strip() == "false" for r in rules):  # fmt: skip
                        raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
                    _remove(rules, rule_id)
                    continue
                rule = copy.deepcopy(operation.find(q("t:Rule")))
                if rule is None:
                    raise EwsError("ErrorInvalidRequest", "No Rule.")
                _normalise(ctx, rule)
                if kind == "SetRuleOperation":
                    _remove(rules, (rule.findtext(q("t:RuleId")) or "").strip())
                else:
                    for old in rule.findall(q("t:RuleId")):
                        rule.remove(old)
                    rule.insert(0, el("t:RuleId", f"Rule{next(_numbers):08d}="))
                rules.append(rule)
            rules.sort(key=lambda r: int(r.findtext(q("t:Priority")) or 0))
    except EwsError as e:
        answer.set("ResponseClass", "Error")
        sub(answer, "m:MessageText", e.text)
        sub(answer, "m:ResponseCode", e.code)
        return answer
    sub(answer, "m:ResponseCode", "NoError")
    return answer


def _remove(rules: list[ET.Element], rule_id: str) -> None:
    for rule in rules:
        if (rule.findtext(q("t:RuleId")) or "").strip() == rule_id:
            rules.remove(rule)
            return
    raise EwsError("ErrorRuleNotFound", "The specified rule was not found.")


def _normalise(ctx: Context, rule: ET.Element) -> None:
    """As Exchange stores a rule: no empty Exceptions, folders named by FolderId, xs:boolean as true/false."""
    for flag in rule.iter():
        if local(flag) in ("IsEnabled", "StopProcessingRules", "Delete", "MarkAsRead", "PermanentDelete"):
            flag.text = "true" if (flag.text or "").strip() in ("true", "1") else "false"
    for exceptions in rule.findall(q("t:Exceptions")):
        if not len(exceptions):
            rule.remove(exceptions)
    for action in rule.iter():
        for i, ref in enumerate(list(action)):
            if ref.tag == q("t:DistinguishedFolderId"):
                _, folder = ctx.folder(ref)
                action.remove(ref)
                action.insert(i, el("t:FolderId", Id=folder.id, ChangeKey=folder.change_key))


# -- the Outlook rule blob, and running rules on delivery (EwsServer's test-facing API) --------


def has_blob(store: object, smtp: str) -> bool:
    return smtp.lower() in _BLOBS.get(id(store), set())


def set_blob(store: object, smtp: str, exists: bool) -> None:
    blobs = _BLOBS.setdefault(id(store), set())
    (blobs.add if exists else blobs.discard)(smtp.lower())


def _strings(rule: ET.Element, name: str) -> list[str] | None:
    found = rule.find(f"{q('t:Conditions')}/{q('t:' + name)}")
    if found is None:
        return None
    return [(s.text or "").lower() for s in found.iter() if s.tag in (q("t:String"), q("t:EmailAddress"))]


_RUN = ("ContainsSenderStrings", "FromAddresses", "ContainsSubjectStrings", "SentToAddresses")


def _matches(rule: ET.Element, sender: str, subject: str, recipients: list[str]) -> bool:
    conditions = rule.find(q("t:Conditions"))
    if conditions is None or any(local(c) not in _RUN for c in conditions):
        return False
    tests = [
        ("ContainsSenderStrings", lambda v: v in sender),
        ("FromAddresses", lambda v: v == sender),
        ("ContainsSubjectStrings", lambda v: v in subject),
        ("SentToAddresses", lambda v: v in recipients),
    ]
    for name, test in tests:
        values = _strings(rule, name)
        if values is not None and not any(test(v) for v in values):
            return False
    return True


def delivery_folder(store: object, smtp: str, mime: bytes) -> str | None:
    """The folder id the mailbox's rules move a message delivered to the Inbox into, or None."""
    from email.parser import BytesHeaderParser
    from email.utils import getaddresses

    headers = BytesHeaderParser().parsebytes(mime)
    sender = (getaddresses([str(headers.get("From", ""))]) or [("", "")])[0][1].lower()
    subject = str(headers.get("Subject", "")).lower()
    recipients = [
        a.lower() for _, a in getaddresses([str(h) for h in headers.get_all("To", []) + headers.get_all("Cc", [])])
    ]
    target = None
    for rule in list(_RULES.get(id(store), {}).get(smtp.lower(), [])):
        if (rule.findtext(q("t:IsEnabled")) or "true").strip() != "true" or not _matches(
            rule, sender, subject, recipients
        ):
            continue
        move = rule.find(f"{q('t:Actions')}/{q('t:MoveToFolder')}/{q('t:FolderId')}")
        if move is not None and target is None:
            target = move.get("Id")
        if (rule.findtext(f"{q('t:Actions')}/{q('t:StopProcessingRules')}") or "").strip() == "true":
            break
    return target
