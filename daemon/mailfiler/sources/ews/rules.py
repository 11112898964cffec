"""An Exchange Server mailbox's inbox rules: GetInboxRules and UpdateInboxRules
through exchangelib, in the client's pool (the event loop never blocks).

Every UpdateInboxRules mailfiler sends says RemoveOutlookRuleBlob false:
exchangelib's own ``create_rule``/``set_rule``/``delete_rule`` send true,
which deletes the Outlook client-side rules (kept only in that blob, which
Outlook cannot rebuild), so this module calls the services itself.  It
creates, sets and deletes only rules named ``mailfiler: FOLDER``.
"""

from __future__ import annotations

import logging
from typing import Any

from exchangelib import Account
from exchangelib.properties import Actions, Conditions, FolderId, MoveToFolder, Rule
from exchangelib.services.inbox_rules import CreateInboxRule, DeleteInboxRule, GetInboxRules, SetInboxRule

from mailfiler.errors import ServerRulesChanged
from mailfiler.sources import outlookrules as o
from mailfiler.sources.ews import folders as fl
from mailfiler.sources.ews.client import EwsClient
from mailfiler.sources.ews.settings import EwsSettings
from mailfiler.sources.inboxrules import Plan, Route, RulesSnapshot

log = logging.getLogger("mailfiler.serverrules")

#: exchangelib field names whose Graph name is not their camelCase
_RENAMED = {
    "contains_sender_strings": "senderContains",
    "contains_subject_strings": "subjectContains",
    "contains_body_strings": "bodyContains",
    "contains_subject_or_body_strings": "bodyOrSubjectContains",
    "contains_header_strings": "headerContains",
    "contains_recipient_strings": "recipientContains",
    "is_ndr": "isNonDeliveryReport",
    "flagged_for_action": "messageActionFlag",
    "forward_to_recipients": "forwardTo",
    "forward_as_attachment_to_recipients": "forwardAsAttachmentTo",
    "redirect_to_recipients": "redirectTo",
    "send_sms_alert_to_recipients": "sendSmsAlertTo",
}
#: the Graph names of a route's predicates -> exchangelib's Conditions fields
_ROUTE_FIELDS = {
    "senderContains": "contains_sender_strings",
    "fromAddresses": "from_addresses",
    "subjectContains": "contains_subject_strings",
    "sentToAddresses": "sent_to_addresses",
}
#: distinguished folders a rule may name instead of an id
_DISTINGUISHED = {"inbox": "INBOX", "junkemail": "Junk Email", "deleteditems": "Deleted Items", "drafts": "Drafts",
                  "sentitems": "Sent Items", "outbox": "Outbox", "archive": "Archive"}  # fmt: skip


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _plain(value: Any) -> Any:
    """exchangelib values as JSON-able ones: addresses as strings, folders by id."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "email_address"):  # Address, Mailbox
        return str(value.email_address or "")
    if isinstance(value, MoveToFolder) or hasattr(value, "distinguished_folder_id"):  # MoveToFolder, CopyToFolder
        if value.folder_id is not None:
            return str(value.folder_id.id)
        return f"distinguished:{value.distinguished_folder_id.id}" if value.distinguished_folder_id else None
    if hasattr(value, "minimum_size"):  # WithinSizeRange
        return {"minimumSize": value.minimum_size, "maximumSize": value.maximum_size}
    if hasattr(value, "start_date_time"):  # WithinDateRange
        return f"{value.start_date_time} - {value.end_date_time}"
    if hasattr(value, "id") and hasattr(value, "changekey"):  # ServerReplyWithMessage's ItemId
        return True
    return value


def _fields(element: Any) -> dict[str, Any]:
    if element is None:
        return {}
    out = {}
    for f in element.FIELDS:
        value = getattr(element, f.name, None)
        # `is`, not ==: exchangelib's elements compare by hash, which a list cannot take
        if value is not None and value is not False and not (isinstance(value, list) and not value):
            out[_RENAMED.get(f.name, _camel(f.name))] = _plain(value)
    return out


def _found(rule: Any) -> o.Found:
    return o.Found(
        id=str(rule.id),
        name=rule.display_name or "",
        sequence=int(rule.priority or 0),
        enabled=rule.is_enabled is not False,
        conditions=_fields(rule.conditions),
        exceptions=_fields(rule.exceptions),
        actions=_fields(rule.actions),
        in_error=bool(rule.is_in_error),
        read_only=bool(rule.is_not_supported),
    )


def _read(account: Account) -> tuple[list[o.Found], fl.Tree]:
    found = []
    for rule in GetInboxRules(account=account).call():
        if isinstance(rule, Exception):
            raise rule
        if rule is not None:
            found.append(_found(rule))
    return found, fl.load_tree(account)


def _rule(op: o.Op) -> Rule:
    conditions = Conditions(**{_ROUTE_FIELDS[k]: v for k, v in op.conditions.items()})
    return Rule(
        id=op.rule_id,
        display_name=op.name,
        priority=op.sequence,
        is_enabled=True,
        conditions=conditions,
        actions=Actions(move_to_folder=MoveToFolder(folder_id=FolderId(id=op.folder_id))),
    )


def _write(account: Account, ops: list[o.Op], disabled: set[str]) -> None:
    for op in ops:
        if op.op == "create":
            CreateInboxRule(account=account).get(rule=_rule(op), remove_outlook_rule_blob=False)
        elif op.op == "update":
            SetInboxRule(account=account).get(rule=_rule(op), remove_outlook_rule_blob=False)
        else:
            if op.rule_id in disabled:
                # Exchange answers ErrorItemNotFound to the delete of a disabled rule (exchangelib's
                # Rule.delete works around it the same way): enable it, doing nothing, first
                idle = Rule(id=op.rule_id, display_name=op.name, priority=op.sequence or 1, is_enabled=True,
                            actions=Actions(stop_processing_rules=True))  # fmt: skip
                SetInboxRule(account=account).get(rule=idle, remove_outlook_rule_blob=False)
            DeleteInboxRule(account=account).get(rule=Rule(id=op.rule_id), remove_outlook_rule_blob=False)


class EwsRules:
    """The inbox rules of one Exchange mailbox (a :class:`~mailfiler.sources.inboxrules.RulesBackend`)."""

    name = "ews"

    def __init__(self, settings: EwsSettings) -> None:
        self.settings = settings
        self.client = EwsClient(settings)

    def _where(self, f: o.Found) -> str:
        return f"priority {f.sequence}"

    async def _read(self) -> tuple[list[o.Found], fl.Tree]:
        # a refusal comes back mapped by the client (MailboxUnavailable with Exchange's code)
        return await self.client.run(_read, self.client.account)

    async def read(self) -> RulesSnapshot:
        found, tree = await self._read()

        def path_of(folder_id: str) -> str:
            if folder_id.startswith("distinguished:"):
                name = folder_id.partition(":")[2]
                return _DISTINGUISHED.get(name, name)
            return tree.paths.get(folder_id) or f"[a folder that is gone, id ...{folder_id[-10:]}]"

        return RulesSnapshot(
            backend=self.name,
            rules=o.server_rules(found, path_of, self._where),
            problems=o.problems_of(found),
            digest=o.digest(found),
        )

    async def plan(self, routes: list[Route]) -> Plan:
        found, tree = await self._read()
        folder_ids = {r.folder: tree.find(r.folder) for r in routes}
        return o.plan(self.name, found, routes, folder_ids)

    async def apply(self, plan: Plan) -> None:
        ops = o.ops_of(plan)
        if not ops:
            return
        found, _ = await self._read()
        if o.digest([f for f in found if f.owned]) != plan.payload.get("base"):
            raise ServerRulesChanged(f"{self.settings.mailbox}: mailfiler's inbox rules changed since the plan")
        # not retried on a dropped connection: a create that went through would be made twice
        disabled = {f.id for f in found if not f.enabled}
        await self.client.run(_write, self.client.account, ops, disabled, retry_drop=False)
        log.debug("wrote %d inbox rule changes to %s", len(ops), self.settings.mailbox)


__all__ = ["EwsRules"]
