"""Exchange's inbox rules, whichever API carries them (EWS GetInboxRules, Graph
``messageRules``): one shape for both, read into the terms of
:mod:`mailfiler.sources.inboxrules`, and the plan that keeps mailfiler's named
rules in step with the routes.

Both APIs give a rule as a flat set of predicates (all must hold; the values
of one predicate are alternatives), exceptions of the same kind (any one
stops the rule), and a flat set of actions.  The EWS and Graph modules turn
their server's answer into a :class:`Found` with Graph's property names
(``senderContains``, ``fromAddresses``, ``moveToFolder``...), addresses as
plain strings and folders by id, and carry out the :class:`Op` values of a
plan; everything else is here, once.

mailfiler's rules are the ones whose name starts with ``mailfiler: `` (the
route's ``rule_name``); every other rule is the user's and is never
changed.  A new rule of mailfiler's comes after the user's rules (the
highest sequence + 1), so the order of the user's rules is left alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mailfiler.sources.inboxrules import Action, Change, Condition, Plan, Route, ServerRule

OWN_PREFIX = "mailfiler: "

#: list predicates: (message fields, match, address part) as the model's Condition has them
_LISTS: dict[str, tuple[tuple[str, ...], str, str | None, str]] = {
    "senderContains": (("from",), "contains", None, "sender contains"),
    "fromAddresses": (("from",), "is", "all", "from"),
    "subjectContains": (("subject",), "contains", None, "subject contains"),
    "bodyContains": (("body",), "contains", None, "body contains"),
    "bodyOrSubjectContains": (("subject", "body"), "contains", None, "subject or body contains"),
    "headerContains": (("header",), "contains", None, "headers contain"),
    "recipientContains": (("to", "cc"), "contains", None, "recipients contain"),
    "sentToAddresses": (("to", "cc"), "is", "all", "sent to"),
    "categories": (("categories",), "is", None, "has category"),
    "itemClasses": (("itemclass",), "is", None, "item class is"),
    "messageClassifications": (("classification",), "is", None, "classified as"),
    "fromConnectedAccounts": (("account",), "is", None, "from the connected account"),
}
#: the address lists among them (their values compared without case)
ADDRESS_LISTS = ("fromAddresses", "sentToAddresses")


def _quote(values: list[str]) -> str:
    return " or ".join(json.dumps(v, ensure_ascii=False) for v in values)


def _test(name: str, value: Any) -> Condition:
    if name in _LISTS:
        fields, match, part, words = _LISTS[name]
        values = tuple(str(v) for v in value)
        return Condition(fields=fields, match=match, values=values, part=part, text=f"{words} {_quote(list(values))}")
    if name == "withinSizeRange" and isinstance(value, dict):
        low, high = value.get("minimumSize"), value.get("maximumSize")
        return Condition(fields=("size",), match="within", values=(str(low), str(high)),
                         text=f"size between {low} and {high} KB")  # fmt: skip
    if isinstance(value, bool):
        return Condition(fields=(name,), match="is", values=(str(value).lower(),),
                         text=name if value else f"not {name}")  # fmt: skip
    return Condition(fields=(name,), match="is", values=(str(value),), text=f"{name} is {value}")


def condition_of(conditions: dict[str, Any], exceptions: dict[str, Any]) -> Condition | None:
    """All conditions, and none of the exceptions; None: every message."""
    parts = [_test(k, v) for k, v in sorted(conditions.items()) if v not in (None, [], {})]
    unless = [_test(k, v) for k, v in sorted(exceptions.items()) if v not in (None, [], {})]
    if unless:
        either = unless[0] if len(unless) == 1 else Condition(
            op="anyof", children=tuple(unless), text=" or ".join(c.text for c in unless))  # fmt: skip
        parts.append(Condition(op="not", children=(either,), text=f"unless {either.text}"))
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return Condition(op="allof", children=tuple(parts), text=" and ".join(p.text for p in parts))


def actions_of(actions: dict[str, Any], path_of: Callable[[str], str]) -> list[Action]:
    """The model's actions; ``path_of`` names a folder id as a "/"-path (or says it is missing)."""
    out: list[Action] = []
    for name in ("moveToFolder", "copyToFolder"):
        if actions.get(name):
            path = path_of(str(actions[name]))
            kind = "move" if name == "moveToFolder" else "copy"
            out.append(Action(kind, path, f"{kind} to {path}"))
    if actions.get("delete"):
        out.append(Action("delete", None, "move to Deleted Items"))
    if actions.get("permanentDelete"):
        out.append(Action("delete", None, "delete permanently"))
    for name, kind, words in (
        ("forwardTo", "forward", "forward to"),
        ("forwardAsAttachmentTo", "forward", "forward as attachment to"),
        ("redirectTo", "redirect", "redirect to"),
        ("sendSmsAlertTo", "notify", "text message to"),
    ):
        for address in actions.get(name) or []:
            out.append(Action(kind, str(address), f"{words} {address}"))
    if actions.get("assignCategories"):
        out.append(Action("flag", None, f"assign categories {_quote(list(actions['assignCategories']))}"))
    if actions.get("markAsRead"):
        out.append(Action("flag", None, "mark as read"))
    if actions.get("markImportance"):
        out.append(Action("flag", None, f"mark importance {actions['markImportance']}"))
    if actions.get("serverReplyWithMessage"):
        out.append(Action("reply", None, "reply with a template"))
    if actions.get("stopProcessingRules"):
        out.append(Action("stop", None, "stop processing more rules"))
    return out


@dataclass
class Found:
    """One rule as the server holds it, in Graph's terms."""

    id: str
    name: str
    sequence: int
    enabled: bool = True
    conditions: dict[str, Any] = field(default_factory=dict)
    exceptions: dict[str, Any] = field(default_factory=dict)
    actions: dict[str, Any] = field(default_factory=dict)
    #: the server says it is broken (a folder it names is gone, say)
    in_error: bool = False
    #: the server says the API must not change it (Graph isReadOnly, EWS IsNotSupported)
    read_only: bool = False

    @property
    def owned(self) -> bool:
        return self.name.startswith(OWN_PREFIX)


def server_rules(found: list[Found], path_of: Callable[[str], str], where: Callable[[Found], str]) -> list[ServerRule]:
    return [
        ServerRule(
            name=f.name,
            where=where(f),
            conditions=condition_of(f.conditions, f.exceptions),
            actions=actions_of(f.actions, path_of),
            enabled=f.enabled,
            owned=f.owned,
        )
        for f in sorted(found, key=lambda f: f.sequence)
    ]


def problems_of(found: list[Found]) -> list[str]:
    out = [f"rule {f.name!r} is in error on the server (a folder or address it names may be gone)"
           for f in found if f.in_error]  # fmt: skip
    names = [f.name for f in found if f.owned]
    out += [f"mailfiler's rule {n!r} is on the server {names.count(n)} times" for n in sorted(set(names))
            if names.count(n) > 1]  # fmt: skip
    return out


def digest(found: list[Found]) -> str:
    return hashlib.sha256(json.dumps([asdict(f) for f in found], sort_keys=True).encode()).hexdigest()


# -- mailfiler's rules ------------------------------------------------------------------


def route_conditions(route: Route) -> dict[str, list[str]]:
    """A route as predicates.  The senders are one predicate (alternatives); a domain is
    ``@domain`` and ``.domain`` (its subdomains, as the records' domains count them),
    and addresses given beside domains join them as strings: both APIs AND their
    predicates, so two sender predicates would want both."""
    out: dict[str, list[str]] = {}
    if route.from_domains:
        out["senderContains"] = [f"@{d}" for d in route.from_domains] + [f".{d}" for d in route.from_domains]
        out["senderContains"] += list(route.from_addresses)
    elif route.from_addresses:
        out["fromAddresses"] = list(route.from_addresses)
    if route.subject_contains:
        out["subjectContains"] = list(route.subject_contains)
    if route.to_addresses:
        out["sentToAddresses"] = list(route.to_addresses)
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Predicates equal as the server compares them (Graph upper-cases some strings)."""

    def norm(d: dict[str, Any]) -> dict[str, Any]:
        return {k: sorted(str(x).casefold() for x in v) if isinstance(v, list) else v
                for k, v in d.items() if v not in (None, [], {}, False)}  # fmt: skip

    return norm(a) == norm(b)


@dataclass
class Op:
    """One write: create, update (by id) or delete (by id) one of mailfiler's rules."""

    op: str
    name: str
    rule_id: str | None = None
    sequence: int = 0
    conditions: dict[str, list[str]] = field(default_factory=dict)
    folder_id: str = ""


def _detail(route: Route, conditions: dict[str, list[str]]) -> str:
    when = condition_of(conditions, {})
    return f"when {when.text if when else 'always'}: move to {route.folder}"


def plan(backend: str, found: list[Found], routes: list[Route], folder_ids: dict[str, str | None]) -> Plan:
    """The changes to mailfiler's rules (and only those) that bring them in step with ``routes``.

    ``folder_ids``: each route's folder -> its id on the server (None: no such folder,
    so its rule cannot be written; an existing rule of it is left as it is)."""
    result = Plan(mailbox="", backend=backend, changes=[])
    ops: list[Op] = []
    mine: dict[str, list[Found]] = {}
    for f in found:
        if f.owned:
            mine.setdefault(f.name, []).append(f)
    top = max((f.sequence for f in found), default=0)
    wanted = {r.rule_name: r for r in routes}
    for name, route in wanted.items():
        conditions = route_conditions(route)
        folder_id = folder_ids.get(route.folder)
        have = mine.get(name, [])
        if folder_id is None:
            result.warnings.append(
                f"the folder {route.folder} does not exist on the server: mailfiler's rule {name!r} is not written"
            )
            continue
        if not have:
            top += 1
            ops.append(Op("create", name, None, top, conditions, folder_id))
            result.changes.append(Change("create", name, _detail(route, conditions)))
            continue
        first = have[0]
        in_step = (
            first.enabled
            and _same(first.conditions, conditions)
            and not any(v for v in first.exceptions.values())
            and _same(first.actions, {"moveToFolder": folder_id})
        )
        if not in_step:
            if first.read_only:
                result.warnings.append(f"mailfiler's rule {name!r} is read-only on the server; not updated")
            else:
                ops.append(Op("update", name, first.id, first.sequence, conditions, folder_id))
                result.changes.append(Change("update", name, _detail(route, conditions)))
        for extra in have[1:]:  # a second rule by the same name: the first one stands
            ops.append(Op("delete", name, extra.id, extra.sequence))
            result.changes.append(Change("delete", name, "a second rule by this name"))
    for name, have in mine.items():
        if name not in wanted:
            for f in have:
                ops.append(Op("delete", name, f.id, f.sequence))
                result.changes.append(Change("delete", name, "its tracked folder or route is gone from the config"))
    result.payload = {"ops": [asdict(o) for o in ops], "base": digest([f for f in found if f.owned])}
    return result


def ops_of(p: Plan) -> list[Op]:
    return [Op(**o) for o in p.payload.get("ops", [])]


__all__ = ["ADDRESS_LISTS", "OWN_PREFIX", "Found", "Op", "actions_of", "condition_of", "digest", "ops_of", "plan",
           "problems_of", "route_conditions", "server_rules"]  # fmt: skip
