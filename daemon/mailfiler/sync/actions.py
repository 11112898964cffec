"""What a sync plan is made of (:mod:`mailfiler.sync.plan` makes one,
:mod:`mailfiler.sync.apply` performs it): the operations and the side each
writes, an :class:`Action` with its reason and data, the :class:`Plan`, the
:class:`Policy` of a kind, the :class:`Status` rows as the planner sees them,
and the three-way :func:`resolve` of a linked pair."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from mailfiler.config.syncschema import SyncFilter
from mailfiler.sources.target import Fetched
from mailfiler.sync.crm import CrmItem
from mailfiler.sync.items import Fields, ParsedItem
from mailfiler.sync.merge import Merged, merge

#: status states of an item with a copy on both sides: ``linked`` came from the CRM
#: through the sync filters; ``tracked`` was brought in by the user (a category, a
#: tracked collection) and stays in sync whatever the filters say, as in Dynamics
LINKED = ("linked", "tracked")

Pair = tuple[Fetched, ParsedItem]
#: the reason of a LINK found by e-mail address (logged as such when applied)
BY_EMAIL = "linked to the CRM contact with its e-mail address"


@dataclass
class Policy:
    """How one kind (contacts or appointments) syncs for one mailbox."""

    filters: list[SyncFilter]
    directions: dict[str, str] = field(default_factory=dict)
    conflicts: str = "crm-wins"
    on_mailbox_delete: str = "unlink"
    category: str | None = "Tracked"


@dataclass(frozen=True)
class Status:
    """One status row as the planner sees it (a plain copy of ``SyncItem``)."""

    id: int
    state: str
    href: str | None
    etag: str | None = None
    uid: str | None = None
    #: the linked record (contacts) or activity (appointments); None once the CRM item is deleted
    crm_id: int | None = None
    crm_hash: str | None = None
    mbox_hash: str | None = None
    base: str | None = "{}"

    def base_fields(self) -> Fields:
        return json.loads(self.base or "{}")


class Op(StrEnum):
    UPLOAD = "upload"  # a CRM item gets a copy on the user's side
    RESTORE = "restore"  # the user deleted a copy; on_mailbox_delete: restore uploads it again
    UPDATE = "update"  # both sides of a linked pair, merged against the base
    LINK = "link"  # a copy linked to a CRM item for the first time (no base: lists are joined)
    CREATE = "create"  # the user's tracked item becomes a CRM item, then is linked
    RECREATE = "recreate"  # conflict: deleted in the CRM, edited by the user, mailbox-wins
    DELETE_COPY = "delete-copy"  # the copy leaves the user's side
    DELETE_IN_CRM = "delete-in-crm"  # the user deleted it; on_mailbox_delete: delete-in-crm
    UNLINK = "unlink"  # the user deleted it; on_mailbox_delete: unlink
    FORGET = "forget"  # a status row that describes nothing any more
    IGNORE = "ignore"  # the user's own item, remembered by etag
    TOUCH = "touch"  # same content under a new etag
    KEEP_ASIDE = "keep-aside"  # unreadable: shunted, left alone on both sides


#: which side each operation writes (``status``: only the status table)
SIDES: dict[Op, str] = {
    Op.UPLOAD: "mailbox", Op.RESTORE: "mailbox", Op.UPDATE: "both", Op.LINK: "both", Op.CREATE: "crm",
    Op.RECREATE: "crm", Op.DELETE_COPY: "mailbox", Op.DELETE_IN_CRM: "crm", Op.UNLINK: "status",
    Op.FORGET: "status", Op.IGNORE: "status", Op.TOUCH: "status", Op.KEEP_ASIDE: "status",
}  # fmt: skip


@dataclass(frozen=True)
class Resolution:
    """A three-way merge and the writes it asks for on each side."""

    merged: Merged
    #: fields whose merged value differs from the user's copy
    to_mailbox: frozenset[str]
    #: fields whose merged value differs from the CRM item
    to_crm: Fields


def resolve(policy: Policy, base: Fields | None, item: CrmItem, pair: Pair) -> Resolution:
    fetched, parsed = pair
    merged = merge(
        base,
        item.fields,
        parsed.fields,
        policy.directions,
        policy=policy.conflicts,
        crm_modified=item.modified,
        mbox_modified=parsed.modified or fetched.modified,
    )
    return Resolution(
        merged=merged,
        to_mailbox=frozenset(k for k, v in merged.mailbox.items() if v != parsed.fields.get(k)),
        to_crm={k: v for k, v in merged.crm.items() if v != item.fields.get(k)},
    )


@dataclass
class Action:
    op: Op
    reason: str
    #: items: one item's step (a failure costs that item); cleanup: status rows only
    stage: str = "items"
    href: str | None = None
    status: Status | None = None
    item: CrmItem | None = None
    pair: Pair | None = None
    #: the merge of UPDATE and LINK, and of a DELETE_COPY whose user edits reach the CRM first;
    #: None on an UPDATE whose copy was not read (it is read when applied)
    resolution: Resolution | None = None
    #: the status state a LINK, CREATE or RECREATE writes
    state: str | None = None
    #: a deletion that met an edit: the side that wins (crm | mailbox)
    winner: str | None = None
    #: KEEP_ASIDE: the copy as read and why it could not be parsed
    fetched: Fetched | None = None
    error: Exception | None = None

    @property
    def side(self) -> str:
        return SIDES[self.op]

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (``sync --dry-run``)."""
        out: dict[str, Any] = {"op": str(self.op), "side": self.side, "reason": self.reason}
        href = self.href or (self.status.href if self.status is not None else None)
        if href is not None:
            out["href"] = href
        if self.item is not None:
            out["crm_id"] = self.item.id
            out["name"] = self.item.fields.get("name") or self.item.fields.get("subject")
        if self.resolution is not None:
            out["to_mailbox"] = sorted(self.resolution.to_mailbox)
            out["to_crm"] = sorted(self.resolution.to_crm)
            if self.resolution.merged.conflicts:
                out["conflicts"] = [
                    {"field": c.field, "crm": c.crm, "mailbox": c.mailbox, "winner": c.winner}
                    for c in self.resolution.merged.conflicts
                ]
        if self.winner is not None:
            out["conflicts"] = [{"field": "*", "winner": self.winner}]
        return out


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    #: the --force-delete let an empty side through (see :func:`check_sides`)
    forced: bool = False

    def count(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for a in self.actions:
            out[str(a.op)] += 1
        return dict(out)

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)
