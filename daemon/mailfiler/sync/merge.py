"""The per-field three-way merge of a CRM item and the user's copy.

For each field, against the value both sides last agreed on (``base``):

- ``to_mailbox``: the CRM value, always (an edit on the user's side is
  overwritten, as Dynamics does with a one-way field);
- ``from_mailbox``: the user's value, always;
- ``none``: each side keeps its own;
- ``both``: the side that moved from the base wins; when both moved to
  different values it is a conflict, settled by the policy (``crm-wins``,
  ``mailbox-wins``, ``newest-wins`` by the item's modification times, the CRM
  on a tie or when a time is unknown) and reported with both values.

Without a base (an item linked for the first time), a list field is the
union of both (nothing the user had is dropped) and a scalar that is empty
on one side takes the other's value; only two different non-empty scalars
are a conflict.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from mailfiler.sync.items import LIST_FIELDS, SORTED_FIELDS, Fields

DIRECTIONS = ("both", "to_mailbox", "from_mailbox", "none")
POLICIES = ("crm-wins", "mailbox-wins", "newest-wins")

_MISSING = object()


@dataclass
class Conflict:
    field: str
    crm: Any
    mailbox: Any
    winner: str  # crm | mailbox


@dataclass
class Merged:
    crm: Fields
    mailbox: Fields
    #: the agreed values of the fields that sync (the next merge's base)
    base: Fields
    conflicts: list[Conflict] = field(default_factory=list)


def crm_wins(policy: str, crm_modified: dt.datetime | None, mbox_modified: dt.datetime | None) -> bool:
    if policy == "mailbox-wins":
        return False
    if policy == "newest-wins" and crm_modified is not None and mbox_modified is not None:
        return crm_modified >= mbox_modified
    return True


def _key(value: Any) -> Any:
    """What makes two list entries the same: an attendee's address, an override's recurrence id."""
    if isinstance(value, dict) and "recurrence_id" in value:
        return value["recurrence_id"]
    if isinstance(value, list) and len(value) == 3:  # [address, name, role]
        return value[0]
    return repr(value)


def _union(crm: list[Any], mbox: list[Any]) -> list[Any]:
    seen = {_key(x) for x in crm}
    return [*crm, *(x for x in mbox if _key(x) not in seen)]


def merge(
    base: Fields | None,
    crm: Fields,
    mbox: Fields,
    directions: dict[str, str],
    *,
    policy: str = "crm-wins",
    crm_modified: dt.datetime | None = None,
    mbox_modified: dt.datetime | None = None,
) -> Merged:
    out = Merged(crm=dict(crm), mailbox=dict(mbox), base={})
    for name in crm:
        direction = directions.get(name, "both")
        c, m = crm[name], mbox.get(name)
        if direction == "none":
            continue
        if direction == "to_mailbox":
            value = c
        elif direction == "from_mailbox":
            value = m
        elif c == m:
            value = c
        else:
            b = base.get(name, _MISSING) if base is not None else _MISSING
            if b is _MISSING and name in LIST_FIELDS:
                value = _union(c or [], m or [])
                if name in SORTED_FIELDS:
                    value = sorted(value, key=_key)
            elif b is _MISSING and not c:
                value = m
            elif (b is _MISSING and not m) or m == b:
                value = c
            elif c == b:
                value = m
            else:
                winner = "crm" if crm_wins(policy, crm_modified, mbox_modified) else "mailbox"
                value = c if winner == "crm" else m
                out.conflicts.append(Conflict(name, c, m, winner))
        out.crm[name] = out.mailbox[name] = out.base[name] = value
    return out


def creatable(fields: Fields, directions: dict[str, str]) -> set[str]:
    """The fields copied when an item is created on the other side: all but ``none``."""
    return {name for name in fields if directions.get(name, "both") != "none"}
