"""A Microsoft 365 mailbox's inbox rules: Graph ``mailFolders/inbox/messageRules``
through the mailbox's own client (token, throttling, timeouts as every request).

mailfiler lists every rule, and creates, updates (PATCH) and deletes only the
rules whose displayName it wrote (``mailfiler: FOLDER``); a rule the server
marks ``isReadOnly`` is never written.  Needs MailboxSettings.ReadWrite (an
app's application permission, or the signed-in user's delegated one);
MailboxSettings.Read is enough to list.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from mailfiler.errors import FolderMissing, ServerRulesChanged, ServerRulesError
from mailfiler.sources import outlookrules as o
from mailfiler.sources.graph.client import GraphError
from mailfiler.sources.graph.folders import FolderTree
from mailfiler.sources.graph.source import GraphSettings, GraphSource
from mailfiler.sources.inboxrules import Plan, Route, RulesSnapshot

log = logging.getLogger("mailfiler.serverrules")

RULES = "/mailFolders/inbox/messageRules"


def _addresses(value: Any) -> list[str]:
    """A recipient collection (or one recipient) as plain addresses."""
    items = value if isinstance(value, list) else [value]
    return [str((r.get("emailAddress") or {}).get("address", "")) for r in items if isinstance(r, dict)]


def _predicates(value: Any) -> dict[str, Any]:
    out = dict(value or {})
    for key in o.ADDRESS_LISTS:
        if key in out:
            out[key] = _addresses(out[key])
    return {k: v for k, v in out.items() if v not in (None, [], {}, False) and not k.startswith("@odata")}


def _found(item: dict[str, Any]) -> o.Found:
    actions = dict(item.get("actions") or {})
    for key in ("forwardTo", "forwardAsAttachmentTo", "redirectTo"):
        if key in actions:
            actions[key] = _addresses(actions[key])
    return o.Found(
        id=str(item.get("id", "")),
        name=str(item.get("displayName") or ""),
        sequence=int(item.get("sequence") or 0),
        enabled=item.get("isEnabled") is not False,
        conditions=_predicates(item.get("conditions")),
        exceptions=_predicates(item.get("exceptions")),
        actions={k: v for k, v in actions.items() if v not in (None, [], {}, False)},
        in_error=bool(item.get("hasError")),
        read_only=bool(item.get("isReadOnly")),
    )


def _body(op: o.Op) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    for key, values in op.conditions.items():
        if key in o.ADDRESS_LISTS:
            conditions[key] = [{"emailAddress": {"address": v}} for v in values]
        else:
            conditions[key] = list(values)
    # exceptions are not sent: mailfiler's rules have none, and a PATCH leaves the server's as they are
    return {"displayName": op.name, "sequence": op.sequence, "isEnabled": True, "conditions": conditions,
            "actions": {"moveToFolder": op.folder_id}}  # fmt: skip


class GraphRules:
    """The inbox rules of one Graph mailbox (a :class:`~mailfiler.sources.inboxrules.RulesBackend`)."""

    name = "graph"

    def __init__(self, settings: GraphSettings) -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def _source(self) -> AsyncIterator[GraphSource]:
        """The mailbox's client for one pass; Graph's refusals of a rule request as ServerRulesError."""
        source = GraphSource(self.settings)
        try:
            yield source
        except GraphError as exc:
            raise ServerRulesError(
                f"{source.client.mailbox_path}: Graph refused a messageRules request: {exc.status} {exc.code}:"
                f" {exc.message} (rules need the MailboxSettings.ReadWrite permission)"
            ) from exc
        finally:
            await source.close()

    async def _read(self, source: GraphSource) -> list[o.Found]:
        found: list[o.Found] = []
        async for page in source.client.pages(RULES):
            found += [_found(item) for item in page.get("value", []) if isinstance(item, dict)]
        return found

    @staticmethod
    def _path_of(tree: FolderTree) -> Any:
        def path_of(folder_id: str) -> str:
            return tree.path_of(folder_id) or f"[a folder that is gone, id ...{folder_id[-10:]}]"

        return path_of

    async def read(self) -> RulesSnapshot:
        async with self._source() as source:
            found = await self._read(source)
            await source.tree.refresh()
            return RulesSnapshot(
                backend=self.name,
                rules=o.server_rules(found, self._path_of(source.tree), lambda f: f"sequence {f.sequence}"),
                problems=o.problems_of(found),
                digest=o.digest(found),
            )

    async def plan(self, routes: list[Route]) -> Plan:
        async with self._source() as source:
            found = await self._read(source)
            await source.tree.refresh()
            folder_ids = {r.folder: await _folder_id(source.tree, r.folder) for r in routes}
            return o.plan(self.name, found, routes, folder_ids)

    async def apply(self, plan: Plan) -> None:
        ops = o.ops_of(plan)
        if not ops:
            return
        async with self._source() as source:
            found = await self._read(source)
            if o.digest([f for f in found if f.owned]) != plan.payload.get("base"):
                raise ServerRulesChanged(f"{source.client.mailbox_path}: mailfiler's rules changed since the plan")
            for op in ops:
                await _write(source, op)


async def _folder_id(tree: FolderTree, path: str) -> str | None:
    try:
        return await tree.resolve(path)
    except FolderMissing:
        return None


async def _write(source: GraphSource, op: o.Op) -> None:
    if op.op == "create":
        await source.client.request("POST", RULES, json=_body(op))
        return
    url = f"{RULES}/{quote(str(op.rule_id), safe='')}"
    try:
        if op.op == "update":
            await source.client.request("PATCH", url, json=_body(op))
        else:
            await source.client.request("DELETE", url)
    except GraphError as exc:
        if exc.status == 404:  # deleted meanwhile: for a delete that is done; an update is planned again
            if op.op == "delete":
                return
            raise ServerRulesChanged(f"mailfiler's rule {op.name!r} was deleted since the plan") from exc
        raise


__all__ = ["GraphRules"]
