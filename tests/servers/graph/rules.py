"""Inbox rules: ``mailFolders/inbox/messageRules`` (list, get, create, update, delete), stored
per mailbox, in the shapes of Microsoft's Graph reference (messageRule, messageRulePredicates,
messageRuleActions).

As Exchange Online answers: a created rule gets an id, ``hasError`` and ``isReadOnly``,
``isEnabled`` true unless given; ``senderContains`` comes back upper-cased (the documented
example posts "adele" and reads "ADELE"); a PATCH replaces each top-level property it names
(``actions`` as a whole); a rule whose moveToFolder or copyToFolder folder is gone reads
``hasError`` true.  Only the Inbox holds rules.  The fake does not run rules on delivery."""

from __future__ import annotations

import base64
import copy
import itertools
import weakref
from typing import Any

from tests.servers.graph.model import GraphError, Mailbox, not_found
from tests.servers.graph.odata import Ctx, json_response, read_json
from tests.servers.httpfake import Response

_numbers = itertools.count(1)
_RULES: weakref.WeakKeyDictionary[Mailbox, list[dict[str, Any]]] = weakref.WeakKeyDictionary()
#: the properties a client writes (the others are the server's)
WRITABLE = ("displayName", "sequence", "isEnabled", "conditions", "exceptions", "actions", "isReadOnly")
_PREDICATE_LISTS = ("bodyContains", "bodyOrSubjectContains", "categories", "headerContains", "recipientContains",
                    "senderContains", "subjectContains", "fromAddresses", "sentToAddresses")  # fmt: skip


def rules_of(mailbox: Mailbox) -> list[dict[str, Any]]:
    return _RULES.setdefault(mailbox, [])


def _inbox(ctx: Ctx, folder: str) -> Mailbox:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        if mailbox.folder(folder).well_known != "inbox":
            raise GraphError(400, "ErrorInvalidRequest", "Rules can only be set on the Inbox folder.")
    return mailbox


def _check(body: dict[str, Any], *, create: bool) -> None:
    unknown = [k for k in body if k not in WRITABLE and not k.startswith("@odata")]
    if unknown:
        raise GraphError(400, "RequestBodyRead", f"The property '{unknown[0]}' does not exist on type 'microsoft.graph.messageRule'.")  # fmt: skip
    if create and not (isinstance(body.get("displayName"), str) and body["displayName"].strip()):
        raise GraphError(400, "ErrorInvalidRequest", "The rule's displayName is required.")
    if create and not isinstance(body.get("sequence"), int):
        raise GraphError(400, "ErrorInvalidRequest", "The rule's sequence is required.")
    for key in ("conditions", "exceptions"):
        for name in _PREDICATE_LISTS:
            value = (body.get(key) or {}).get(name)
            if value is not None and not isinstance(value, list):
                raise GraphError(400, "RequestBodyRead", f"Cannot convert '{name}' to a collection.")


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    rule = {k: copy.deepcopy(v) for k, v in body.items() if k in WRITABLE}
    for key in ("conditions", "exceptions"):
        if rule.get(key) and rule[key].get("senderContains"):
            rule[key]["senderContains"] = [str(s).upper() for s in rule[key]["senderContains"]]
    return rule


def _render(mailbox: Mailbox, rule: dict[str, Any]) -> dict[str, Any]:
    out = {"id": rule["id"], "displayName": rule["displayName"], "sequence": rule["sequence"],
           "isEnabled": rule.get("isEnabled", True), "hasError": False, "isReadOnly": rule.get("isReadOnly", False)}  # fmt: skip
    for key in ("conditions", "exceptions", "actions"):
        if rule.get(key):
            out[key] = copy.deepcopy(rule[key])
    actions = rule.get("actions") or {}
    for key in ("moveToFolder", "copyToFolder"):
        if actions.get(key) and actions[key] not in mailbox.folders:
            out["hasError"] = True
    return out


def _find(mailbox: Mailbox, rule_id: str) -> dict[str, Any]:
    for rule in rules_of(mailbox):
        if rule["id"] == rule_id:
            return rule
    raise not_found("messageRule")


def list_rules(ctx: Ctx, folder: str) -> Response:
    mailbox = _inbox(ctx, folder)
    with mailbox.tenant.lock:
        value = [_render(mailbox, r) for r in sorted(rules_of(mailbox), key=lambda r: r["sequence"])]
    context = f"{ctx.base}/$metadata#users('{mailbox.id}')/mailFolders('inbox')/messageRules"
    return json_response({"@odata.context": context, "value": value})


def get_rule(ctx: Ctx, folder: str, rule_id: str) -> Response:
    mailbox = _inbox(ctx, folder)
    with mailbox.tenant.lock:
        item = _render(mailbox, _find(mailbox, rule_id))
    context = f"{ctx.base}/$metadata#users('{mailbox.id}')/mailFolders('inbox')/messageRules/$entity"
    return json_response({"@odata.context": context, **item})


def create_rule(ctx: Ctx, folder: str) -> Response:
    mailbox = _inbox(ctx, folder)
    body = read_json(ctx.request)
    _check(body, create=True)
    if not body.get("actions"):
        raise GraphError(400, "ErrorInvalidRequest", "The rule's actions are required.")
    rule = add_rule(mailbox, body)
    with mailbox.tenant.lock:
        item = _render(mailbox, rule)
    context = f"{ctx.base}/$metadata#users('{mailbox.id}')/mailFolders('inbox')/messageRules/$entity"
    return json_response({"@odata.context": context, **item}, 201)


def patch_rule(ctx: Ctx, folder: str, rule_id: str) -> Response:
    mailbox = _inbox(ctx, folder)
    body = read_json(ctx.request)
    _check(body, create=False)
    with mailbox.tenant.lock:
        rule = _find(mailbox, rule_id)
        if rule.get("isReadOnly"):
            raise GraphError(403, "ErrorAccessDenied", "The rule is read-only.")
        rule.update(_stored(body))
        item = _render(mailbox, rule)
    context = f"{ctx.base}/$metadata#users('{mailbox.id}')/mailFolders('inbox')/messageRules/$entity"
    return json_response({"@odata.context": context, **item})


def delete_rule(ctx: Ctx, folder: str, rule_id: str) -> Response:
    mailbox = _inbox(ctx, folder)
    with mailbox.tenant.lock:
        rule = _find(mailbox, rule_id)
        if rule.get("isReadOnly"):
            raise GraphError(403, "ErrorAccessDenied", "The rule is read-only.")
        rules_of(mailbox).remove(rule)
    return Response(204)


_R = r"/mailFolders/(?P<f>[^/]+)/messageRules"
#: the user routes of tests/servers/graph/server.py (method, pattern, handler, operation)
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", _R, lambda c, f: list_rules(c, f), "GET messageRules"),
    ("POST", _R, lambda c, f: create_rule(c, f), "POST messageRules"),
    ("GET", _R + r"/(?P<r>[^/]+)", lambda c, f, r: get_rule(c, f, r), "GET messageRule"),
    ("PATCH", _R + r"/(?P<r>[^/]+)", lambda c, f, r: patch_rule(c, f, r), "PATCH messageRule"),
    ("DELETE", _R + r"/(?P<r>[^/]+)", lambda c, f, r: delete_rule(c, f, r), "DELETE messageRule"),
]


def add_rule(mailbox: Mailbox, body: dict[str, Any]) -> dict[str, Any]:
    """Outlook (or the user on the web) saves a rule: the stored rule, with its id."""
    with mailbox.tenant.lock:
        rule = _stored(body)
        rule["id"] = base64.urlsafe_b64encode(b"\x01\x00\x00\x00" + next(_numbers).to_bytes(4, "big")).decode()
        rules_of(mailbox).append(rule)
        return rule
