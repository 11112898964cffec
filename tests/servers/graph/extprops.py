"""Single-value extended properties, as Graph serves them on contacts and events:
written in a POST or PATCH (``singleValueExtendedProperties``: a PATCH adds or
replaces by ``id``, keeping the others), shown only when asked for with
``$expand=singleValueExtendedProperties($filter=id eq '...')``, and searched
with ``$filter=singleValueExtendedProperties/Any(ep: ep/id eq '...' and
ep/value eq '...')`` (the "Get singleValueLegacyExtendedProperty" and
"Create single-value extended property" pages)."""

from __future__ import annotations

import re
from typing import Any

from tests.servers.graph.model import GraphError
from tests.servers.graph.odata import one
from tests.servers.httpfake import Request

KEY = "singleValueExtendedProperties"
_FILTER = re.compile(
    r"^singleValueExtendedProperties/any\((\w+):\s*\1/id eq '((?:[^']|'')*)' and \1/value eq '((?:[^']|'')*)'\)$",
    re.IGNORECASE,
)
_EXPAND_ID = re.compile(r"id eq '((?:[^']|'')*)'", re.IGNORECASE)


def merged(old: list[dict[str, Any]] | None, new: Any) -> list[dict[str, Any]]:
    """The properties after a write: ``new`` adds or replaces by id (ids compare case-insensitively)."""
    if not isinstance(new, list) or not all(isinstance(p, dict) and "id" in p and "value" in p for p in new):
        raise GraphError(400, "BadRequest", "singleValueExtendedProperties must be a list of {id, value}.")
    out = {str(p["id"]).lower(): p for p in old or []}
    for prop in new:
        out[str(prop["id"]).lower()] = {"id": str(prop["id"]), "value": str(prop["value"])}
    return list(out.values())


def expanded(request: Request, props: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What ``$expand`` adds to an item's JSON (nothing when it does not ask for our properties)."""
    expand = one(request, "$expand") or ""
    if not expand.lower().startswith(KEY.lower()):
        return {}
    ids = {m.replace("''", "'").lower() for m in _EXPAND_ID.findall(expand)}
    chosen = [p for p in props or [] if not ids or p["id"].lower() in ids]
    return {KEY: chosen} if chosen else {}


def matches(request: Request, props: list[dict[str, Any]] | None) -> bool:
    """Whether an item passes a ``$filter`` on an extended property (no filter: every item)."""
    flt = one(request, "$filter")
    if not flt:
        return True
    m = _FILTER.match(flt.strip())
    if m is None:
        raise GraphError(400, "BadRequest", f"This fake filters only on an extended property's value, not {flt!r}.")
    value = m.group(3).replace("''", "'")
    # the property's name compares case-sensitively, its value case-insensitively (as documented)
    return any(p["id"] == m.group(2).replace("''", "'") and p["value"].lower() == value.lower() for p in props or [])
