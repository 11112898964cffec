"""The sync planner: what one pass over one collection should do, decided
without writing anything (issue 17).

The input is the three sides as read: the CRM items, the user's side (the
listing with etags, and the items whose content was read), and the status
table (``SyncItem``, the last state both agreed on).  The output is a
:class:`Plan`, an ordered list of :class:`Action` objects, each with the
side it writes, the reason, and the data it needs; :mod:`.apply` performs
them.  Nothing here touches a target or the store, so the three-way logic
is tested with plain values (``tests/sync/test_plan.py``).

What happens to each item (see README "Sync-back" for the user's view):

============================  ===================================================
CRM item      user's copy     action
============================  ===================================================
selected      none, no status upload (CRM -> user)
selected      linked          merge field by field (:mod:`mailfiler.sync.merge`)
not selected  linked          merge the user's edits into the CRM, then delete
                              the copy (the filter no longer selects it)
deleted       linked          delete the copy; when the user edited it since,
                              the conflict policy decides (mailbox-wins
                              re-creates the CRM item)
selected      deleted by user ``on_mailbox_delete``: unlink | restore | delete-in-crm
none          new, tracked    create in the CRM (a contact with a known e-mail
                              address links to that contact instead)
same UID      new             link (a copy whose status was lost)
none          new, untracked  remember it as ``ignored`` (the user's own item)
============================  ===================================================

The order is the order the actions run in, and later decisions assume the
earlier actions succeeded (an item linked by one action is not linked again
by another).  When one fails, the pass ends with an error or a skip, keeps
no CRM digest, and the next pass plans again from what really happened.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mailfiler.errors import SyncSideEmpty
from mailfiler.sources.target import Fetched, etag_key
from mailfiler.sync.actions import BY_EMAIL, LINKED, Action, Op, Pair, Plan, Policy, Resolution, Status, resolve
from mailfiler.sync.crm import CrmItem
from mailfiler.sync.filters import matches
from mailfiler.sync.items import ParsedItem, content_hash


@dataclass
class Inputs:
    """The three sides of one collection, as read."""

    kind: str
    #: main (receives CRM items) | tracked (only brings the user's items in)
    role: str
    policy: Policy
    #: the mailbox owner's address, lower-case
    owner: str
    crm_items: dict[int, CrmItem]
    statuses: list[Status]
    #: href -> etag of every item on the user's side (etags as read)
    listing: dict[str, str]
    #: the items whose content was read and parsed
    parsed: dict[str, Pair] = field(default_factory=dict)
    #: hrefs kept aside: shunted at this etag, or unreadable now
    broken: set[str] = field(default_factory=set)
    #: items read now that cannot be parsed: href -> (the copy, the error)
    unreadable: dict[str, tuple[Fetched, Exception]] = field(default_factory=dict)
    #: CRM items this mailbox already has in another collection of the kind
    elsewhere: set[int] = field(default_factory=set)
    #: content hashes of CRM items, by id, as computed (shared with :func:`to_read`)
    crm_hashes: dict[int, str] = field(default_factory=dict)


def _crm_hash(item: CrmItem, cache: dict[int, str]) -> str:
    found = cache.get(item.id)
    if found is None:
        found = cache[item.id] = content_hash(item.fields)
    return found


def selection(
    crm_items: dict[int, CrmItem], policy: Policy, *, role: str, owner: str, elsewhere: Iterable[int] = ()
) -> set[int]:
    """The CRM items the sync filters give this collection."""
    if role != "main":
        return set()
    skip = set(elsewhere)
    return {cid for cid, it in crm_items.items() if cid not in skip and matches(it, policy.filters, owner=owner)}


def check_sides(
    statuses: list[Status],
    listing: dict[str, str],
    crm_items: dict[int, CrmItem],
    selected: set[int],
    *,
    kind: str,
    role: str,
    mailbox: str,
    location: str,
    force_delete: bool,
) -> bool:
    """The empty-side guard: a side that holds nothing while the status says
    N items were synced there is a changed path or a wiped server, not N
    deletions.  Raises :class:`SyncSideEmpty`; with *force_delete* lets it
    through and returns True when it would have stopped."""
    synced = [s for s in statuses if s.state in LINKED and s.href is not None]
    if not synced:
        return False
    n = len(synced)
    hint = f"if that is really so, run `mailfiler sync --mailbox {mailbox} --force-delete`"
    crm_side = selected if role == "main" else {s.crm_id for s in synced if s.crm_id in crm_items}
    if force_delete:
        # let through once: the next sync checks again (it keeps no digest, so it looks)
        return not listing or not crm_side
    if not listing:
        raise SyncSideEmpty(
            f"the {kind} at {location} is empty, but {n} item(s) were synced there;"
            f" nothing was deleted in the CRM ({hint})",
            side="mailbox",
            items=n,
        )
    if not crm_side:
        raise SyncSideEmpty(
            f"the CRM selects no {kind} for {mailbox} (check sync filters), but {n}"
            f" item(s) were synced to {location}; nothing was deleted there ({hint})",
            side="crm",
            items=n,
        )
    return False


def to_read(
    statuses: list[Status],
    listing: dict[str, str],
    shunted: dict[str, str],
    crm_items: dict[int, CrmItem],
    selected: set[int],
    hashes: dict[int, str] | None = None,
) -> list[str]:
    """The hrefs whose content the plan needs: every item whose etag moved
    from the status (and is not shunted at that etag), then the linked copies
    whose CRM item changed (their merge needs the user's fields).  *hashes*
    keeps the CRM items' content hashes for the planner (``Inputs.crm_hashes``)."""
    known = {s.href: s.etag for s in statuses if s.href is not None}
    wanted = [
        href
        for href, etag in listing.items()
        if etag_key(known.get(href)) != etag_key(etag)
        and not (href in shunted and etag_key(shunted[href]) == etag_key(etag))
    ]
    seen = set(wanted)
    for s in statuses:
        if s.state not in LINKED or s.href is None or s.href in seen or s.href not in listing:
            continue
        if s.href in shunted and etag_key(shunted[s.href]) == etag_key(listing[s.href]):
            continue
        item = crm_items.get(s.crm_id) if s.crm_id is not None else None
        if item is None or not (s.state == "tracked" or s.crm_id in selected):
            continue
        if _crm_hash(item, {} if hashes is None else hashes) != s.crm_hash:
            wanted.append(s.href)
    return wanted


def plan_collection(inputs: Inputs, selected: set[int] | None = None) -> Plan:
    """The actions of one pass, in the order they run."""
    if selected is None:
        selected = selection(
            inputs.crm_items, inputs.policy, role=inputs.role, owner=inputs.owner, elsewhere=inputs.elsewhere
        )
    return _Planner(inputs, selected).run()


class _Planner:
    def __init__(self, inputs: Inputs, selected: set[int]) -> None:
        self.i = inputs
        self.policy = inputs.policy
        self.selected = selected
        self.actions: list[Action] = []
        # what the actions so far leave linked in this collection (a created item gets a
        # negative stand-in id until it exists)
        self.linked_here: set[int] = {
            s.crm_id for s in inputs.statuses if s.state in (*LINKED, "unlinked") and s.crm_id is not None
        }
        self.by_uid: dict[str, int] = {it.uid: cid for cid, it in inputs.crm_items.items()}
        self._stand_in = 0
        self._by_email: dict[str, list[int]] | None = None

    def add(self, op: Op, reason: str, **kw: Any) -> None:
        self.actions.append(Action(op, reason, **kw))

    def run(self) -> Plan:
        i = self.i
        for href, (fetched, exc) in i.unreadable.items():
            self.add(Op.KEEP_ASIDE, f"unreadable: {exc}", stage="read", href=href, fetched=fetched, error=exc)
        by_href = {s.href: s for s in i.statuses if s.href is not None}
        for status in i.statuses:
            if status.state in LINKED and status.href is not None:
                self.linked(status)
        for href in sorted(i.listing):
            known = by_href.get(href)
            if known is None or (known.state == "ignored" and href in i.parsed):
                self.new_on_mailbox(href, known)
        for status in i.statuses:
            if status.state == "ignored" and status.href not in i.listing:
                self.add(Op.FORGET, "the user's own item is gone", stage="cleanup", status=status)
            elif status.state == "unlinked":
                cid = status.crm_id
                if cid is None or cid not in i.crm_items:
                    self.add(Op.FORGET, "an unlinked item deleted in the CRM", stage="cleanup", status=status)
                elif i.role == "main" and cid not in self.selected:
                    # it may come back if it is selected again
                    self.add(Op.FORGET, "an unlinked item no longer selected", stage="cleanup", status=status)
        for cid in sorted(self.selected - self.linked_here):
            self.add(Op.UPLOAD, "selected by the sync filters", stage="upload", item=i.crm_items[cid])
        return Plan(self.actions)

    # -- an item linked on both sides ----------------------------------------------------

    def linked(self, status: Status) -> None:
        i, href, cid = self.i, status.href, status.crm_id
        assert href is not None
        item = i.crm_items.get(cid) if cid is not None else None
        in_scope = item is not None and (status.state == "tracked" or cid in self.selected)
        if href in i.broken:
            return  # shunted: left alone on both sides until it can be read
        if href not in i.listing:
            self.deleted_by_user(status, item, in_scope)
            return
        pair = i.parsed.get(href)
        mbox_changed = pair is not None and content_hash(pair[1].fields) != status.mbox_hash
        if item is None:
            if not mbox_changed:
                self.add(Op.DELETE_COPY, "deleted in the CRM", status=status)
            elif self.policy.conflicts == "mailbox-wins":
                # a deletion has no time of its own: newest-wins counts it as newer than any edit
                self.add(Op.RECREATE, "deleted in the CRM, edited by the user; the edit wins",
                         status=status, pair=pair, state=status.state, winner="mailbox")  # fmt: skip
            else:
                self.add(Op.DELETE_COPY, "deleted in the CRM", status=status, pair=pair, winner="crm")
            return
        if not in_scope:
            resolution = None
            if mbox_changed:
                assert pair is not None
                resolution = resolve(self.policy, status.base_fields(), item, pair)
            self.add(Op.DELETE_COPY, "no longer selected by the sync filters",
                     status=status, item=item, pair=pair, resolution=resolution)  # fmt: skip
            return
        crm_changed = _crm_hash(item, i.crm_hashes) != status.crm_hash
        if not mbox_changed and not crm_changed:
            if i.listing[href] != status.etag:  # the same version (a weak tag turned strong) or touched
                self.add(Op.TOUCH, "same content, new etag", status=status, href=href)
            return
        reason = "changed on both sides" if mbox_changed and crm_changed else (
            "changed by the user" if mbox_changed else "changed in the CRM")  # fmt: skip
        resolution = resolve(self.policy, status.base_fields(), item, pair) if pair is not None else None
        self.add(Op.UPDATE, reason, status=status, item=item, pair=pair, resolution=resolution)

    def deleted_by_user(self, status: Status, item: CrmItem | None, in_scope: bool) -> None:
        if item is None or not in_scope:
            self.add(Op.FORGET, "the user deleted a copy no longer synced", status=status)
            return
        rule = self.policy.on_mailbox_delete
        if rule == "restore":
            self.add(Op.RESTORE, "the user deleted it (on_mailbox_delete: restore)", status=status, item=item)
            self.linked_here.add(item.id)
        elif rule == "delete-in-crm":
            self.add(Op.DELETE_IN_CRM, "the user deleted it (on_mailbox_delete: delete-in-crm)",
                     status=status, item=item)  # fmt: skip
        else:
            self.add(Op.UNLINK, "the user deleted it (on_mailbox_delete: unlink)", status=status, item=item)

    # -- an item new on the user's side --------------------------------------------------

    def new_on_mailbox(self, href: str, status: Status | None) -> None:
        i = self.i
        if href in i.broken or href not in i.parsed:
            return
        pair = i.parsed[href]
        parsed = pair[1]
        cid = self.by_uid.get(parsed.uid)
        if cid is not None and cid in i.elsewhere:
            self.add(Op.IGNORE, "a copy of an item synced in another collection", status=status, href=href, pair=pair)
            return
        if cid is not None:
            if cid in self.linked_here:
                self.add(Op.IGNORE, "a second copy of a synced item", status=status, href=href, pair=pair)
                return
            if cid in self.selected or self.tracked(parsed):
                state = "linked" if cid in self.selected else "tracked"
                self.link(status, href, i.crm_items[cid], pair, state, "linked to the CRM item with its UID")
                return
        if not self.tracked(parsed):
            self.add(Op.IGNORE, "the user's own item", status=status, href=href, pair=pair)
            return
        for match in self.by_emails(parsed.fields.get("emails") or []):
            if match not in self.linked_here and match not in i.elsewhere and match in i.crm_items:
                self.link(status, href, i.crm_items[match], pair, "tracked", BY_EMAIL)
                return
        self.add(Op.CREATE, "tracked by the user", status=status, href=href, pair=pair, state="tracked")
        self._stand_in -= 1
        self.by_uid[parsed.uid] = self._stand_in
        self.linked_here.add(self._stand_in)

    def link(self, status: Status | None, href: str, item: CrmItem, pair: Pair, state: str, reason: str) -> None:
        self.add(Op.LINK, reason, status=status, href=href, item=item, pair=pair, state=state,
                 resolution=resolve(self.policy, None, item, pair))  # fmt: skip
        self.linked_here.add(item.id)

    def tracked(self, parsed: ParsedItem) -> bool:
        if self.i.role == "tracked":
            return True
        category = (self.policy.category or "").strip().lower()
        return bool(category) and category in {c.lower() for c in parsed.categories}

    def by_emails(self, emails: list[str]) -> list[int]:
        """CRM contacts with any of *emails*, by id (as ``ContactStore.find_by_emails``
        finds them, from the items already read)."""
        if self.i.kind != "contacts" or not emails:
            return []
        if self._by_email is None:
            self._by_email = defaultdict(list)
            for cid in sorted(self.i.crm_items):
                for e in self.i.crm_items[cid].fields.get("emails") or []:
                    self._by_email[e].append(cid)
        found: set[int] = set()
        for e in emails:
            found.update(self._by_email.get(e.lower(), ()))
        return sorted(found)


__all__ = [
    "BY_EMAIL", "LINKED", "Action", "Inputs", "Op", "Plan", "Policy", "Resolution", "Status",
    "check_sides", "plan_collection", "resolve", "selection", "to_read",
]  # fmt: skip
