"""Inbox rules: GetInboxRules and UpdateInboxRules (create, set, delete), stored per mailbox.

The fake stores the rules and answers them back; it does not run them on delivery (a test that
needs a rule's effect delivers into the rule's target folder itself)."""

from __future__ import annotations

import copy
import itertools
import xml.etree.ElementTree as ET

from tests.servers.ews.context import Context
from tests.servers.ews.soap import EwsError, el, local, q, sub

_numbers = itertools.count(1)
_RULES: dict[int, dict[str, list[ET.Element]]] = {}  # id(store) -> smtp -> rules


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
    sub(answer, "m:OutlookRuleBlobExists", "false")
    sub(answer, "m:InboxRules").extend(rules)
    return answer


def update_inbox_rules(ctx: Context, request: ET.Element) -> ET.Element:
    answer = el("m:UpdateInboxRulesResponse", ResponseClass="Success")
    try:
        with ctx.store.lock:
            rules = _rules(ctx, _mailbox(ctx, request))
            for operation in request.find(q("m:Operations")) or []:
                kind = local(operation)
                if kind == "DeleteRuleOperation":
                    rule_id = (operation.findtext(q("t:RuleId")) or "").strip()
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
    """As Exchange stores a rule: no empty Exceptions, folders named by FolderId."""
    for exceptions in rule.findall(q("t:Exceptions")):
        if not len(exceptions):
            rule.remove(exceptions)
    for action in rule.iter():
        for i, ref in enumerate(list(action)):
            if ref.tag == q("t:DistinguishedFolderId"):
                _, folder = ctx.folder(ref)
                action.remove(ref)
                action.insert(i, el("t:FolderId", Id=folder.id, ChangeKey=folder.change_key))
