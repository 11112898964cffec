"""The sync planner's three-way logic with plain values: no target, no store.

Each case builds the three sides (CRM items, the user's listing and read
copies, the status rows) and says which actions the plan holds, in order.
The engine tests (test_engine_*.py, test_dav_*.py) check the same decisions
end to end; these pin the decision itself, one row of the table in
:mod:`mailfiler.sync.plan` at a time."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from mailfiler.config.syncschema import SyncFilter
from mailfiler.errors import SyncItemUnreadable, SyncSideEmpty
from mailfiler.sources.target import Fetched
from mailfiler.sync.actions import BY_EMAIL, Op, Plan, Policy, Status
from mailfiler.sync.crm import CrmItem
from mailfiler.sync.items import Fields, ParsedItem, content_hash
from mailfiler.sync.plan import Inputs, check_sides, plan_collection, selection, to_read

OWNER = "anna@example.com"
T0 = dt.datetime(2024, 3, 1, 9, 0)
T1 = dt.datetime(2024, 3, 2, 9, 0)


def contact(name: str, job: str = "", emails: list[str] | None = None) -> Fields:
    return {"name": name, "job_title": job, "emails": sorted(emails or [])}


@dataclass
class World:
    """The three sides of one contacts collection, as the planner sees them."""

    policy: Policy = field(default_factory=lambda: Policy(filters=[SyncFilter(owner="mailbox")]))
    role: str = "main"
    crm: dict[int, CrmItem] = field(default_factory=dict)
    listing: dict[str, str] = field(default_factory=dict)
    parsed: dict[str, tuple[Fetched, ParsedItem]] = field(default_factory=dict)
    statuses: list[Status] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    unreadable: dict[str, tuple[Fetched, Exception]] = field(default_factory=dict)
    elsewhere: set[int] = field(default_factory=set)

    def crm_item(self, cid: int, fields: Fields, *, owner: str = OWNER, modified: dt.datetime = T0) -> CrmItem:
        self.crm[cid] = CrmItem(cid, f"uid-{cid}", fields, modified, owner=owner)
        return self.crm[cid]

    def copy(self, href: str, uid: str, fields: Fields, *, etag: str = "e1", categories: list[str] | None = None,
             modified: dt.datetime | None = None, read: bool = True) -> None:  # fmt: skip
        """An item on the user's side; *read*: its content was read this pass."""
        self.listing[href] = etag
        if read:
            self.parsed[href] = (Fetched(href, etag, b""), ParsedItem(uid, fields, categories or [], modified))

    def synced(self, cid: int, href: str, *, state: str = "linked", etag: str = "e1",
               crm: Fields | None = None, mbox: Fields | None = None) -> Status:  # fmt: skip
        """A status row: *cid* and *href* agreed on *crm* (default: the CRM item's fields)."""
        agreed = crm if crm is not None else self.crm[cid].fields
        status = Status(
            id=len(self.statuses) + 1, state=state, href=href, etag=etag, uid=f"uid-{cid}", crm_id=cid,
            crm_hash=content_hash(agreed), mbox_hash=content_hash(mbox if mbox is not None else agreed),
            base=json.dumps(agreed),
        )  # fmt: skip
        self.statuses.append(status)
        return status

    def inputs(self) -> Inputs:
        return Inputs(
            "contacts", self.role, self.policy, OWNER, self.crm, self.statuses, self.listing, self.parsed,
            self.broken, self.unreadable, self.elsewhere,
        )  # fmt: skip

    def plan(self) -> Plan:
        return plan_collection(self.inputs())

    def ops(self) -> list[tuple[str, Any]]:
        """(op, href or CRM id) of every action, in order."""
        out = []
        for a in self.plan():
            href = a.href or (a.status.href if a.status is not None else None)
            out.append((str(a.op), href if href is not None else (a.item.id if a.item else None)))
        return out


def linked_pair(w: World, *, crm: Fields | None = None, mbox: Fields | None = None, read: bool = True) -> None:
    """CRM item 1 and a.vcf, synced at ``contact("A", "v1")``, then each side as given."""
    base = contact("A", "v1")
    w.crm_item(1, crm or base)
    w.synced(1, "a.vcf", crm=base, mbox=base)
    changed = mbox is not None and mbox != base
    w.copy("a.vcf", "uid-1", mbox or base, etag="e2" if changed else "e1", read=read or changed)


# -- both sides present ---------------------------------------------------------------------


def test_nothing_changed_plans_nothing() -> None:
    w = World()
    linked_pair(w, read=False)
    assert w.ops() == []


def test_a_new_etag_with_the_same_content_is_a_touch() -> None:
    w = World()
    linked_pair(w)
    w.listing["a.vcf"] = "e9"
    assert w.ops() == [("touch", "a.vcf")]


@pytest.mark.parametrize(
    ("crm", "mbox", "reason", "to_mailbox", "to_crm"),
    [
        (contact("A", "v2"), None, "changed in the CRM", ["job_title"], []),
        (None, contact("A", "v2"), "changed by the user", [], ["job_title"]),
        (contact("B", "v1"), contact("A", "v2"), "changed on both sides", ["name"], ["job_title"]),
    ],
)
def test_a_change_on_either_side_is_merged(
    crm: Fields | None, mbox: Fields | None, reason: str, to_mailbox: list[str], to_crm: list[str]
) -> None:
    w = World()
    linked_pair(w, crm=crm, mbox=mbox)
    [action] = w.plan()
    assert (action.op, action.reason, action.side) == (Op.UPDATE, reason, "both")
    assert action.resolution is not None
    assert sorted(action.resolution.to_mailbox) == to_mailbox
    assert sorted(action.resolution.to_crm) == to_crm
    assert action.resolution.merged.conflicts == []


def test_a_crm_change_reads_the_copy_even_when_its_etag_did_not_move() -> None:
    w = World()
    linked_pair(w, crm=contact("A", "v2"), read=False)
    assert to_read(w.statuses, w.listing, {}, w.crm, selection(w.crm, w.policy, role="main", owner=OWNER)) == ["a.vcf"]
    [action] = w.plan()  # not read after all (it vanished meanwhile): the applier reads it
    assert action.op is Op.UPDATE and action.pair is None and action.resolution is None


@pytest.mark.parametrize(
    ("policy", "crm_modified", "mbox_modified", "winner", "value"),
    [
        ("crm-wins", T0, T1, "crm", "crm"),
        ("mailbox-wins", T1, T0, "mailbox", "mbox"),
        ("newest-wins", T0, T1, "mailbox", "mbox"),
        ("newest-wins", T1, T0, "crm", "crm"),
        ("newest-wins", T1, None, "crm", "crm"),  # a time unknown: the CRM
    ],
)
def test_the_same_field_changed_on_both_sides_is_a_conflict_the_policy_settles(
    policy: str, crm_modified: dt.datetime, mbox_modified: dt.datetime | None, winner: str, value: str
) -> None:
    w = World()
    w.policy.conflicts = policy
    linked_pair(w, crm=contact("A", "crm"), mbox=contact("A", "mbox"))
    w.crm[1].modified = crm_modified
    _, parsed = w.parsed["a.vcf"]
    parsed.modified = mbox_modified
    [action] = w.plan()
    assert action.resolution is not None
    [conflict] = action.resolution.merged.conflicts
    assert (conflict.field, conflict.winner) == ("job_title", winner)
    assert action.resolution.merged.base["job_title"] == value
    assert action.describe()["conflicts"][0]["winner"] == winner


def test_a_field_synced_one_way_is_never_a_conflict() -> None:
    w = World()
    w.policy.directions = {"job_title": "to_mailbox"}
    linked_pair(w, crm=contact("A", "crm"), mbox=contact("A", "mbox"))
    [action] = w.plan()
    assert action.resolution is not None and action.resolution.merged.conflicts == []
    assert sorted(action.resolution.to_mailbox) == ["job_title"] and action.resolution.to_crm == {}


# -- one side deleted -----------------------------------------------------------------------


def test_deleted_in_the_crm_deletes_the_copy() -> None:
    w = World()
    linked_pair(w, read=False)
    del w.crm[1]
    [action] = w.plan()
    assert (action.op, action.side, action.reason, action.winner) == (
        Op.DELETE_COPY, "mailbox", "deleted in the CRM", None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "op", "winner"),
    [("crm-wins", Op.DELETE_COPY, "crm"), ("newest-wins", Op.DELETE_COPY, "crm"),
     ("mailbox-wins", Op.RECREATE, "mailbox")],
)  # fmt: skip
def test_deleted_in_the_crm_and_edited_by_the_user(policy: str, op: Op, winner: str) -> None:
    """A deletion has no time of its own: newest-wins counts it as the newer change."""
    w = World()
    w.policy.conflicts = policy
    linked_pair(w, mbox=contact("A", "edited"))
    del w.crm[1]
    [action] = w.plan()
    assert (action.op, action.winner) == (op, winner)
    if op is Op.RECREATE:
        assert action.state == "linked" and action.pair is not None


@pytest.mark.parametrize(
    ("rule", "op", "side"),
    [("unlink", Op.UNLINK, "status"), ("restore", Op.RESTORE, "mailbox"), ("delete-in-crm", Op.DELETE_IN_CRM, "crm")],
)
def test_deleted_by_the_user_follows_on_mailbox_delete(rule: str, op: Op, side: str) -> None:
    w = World()
    w.policy.on_mailbox_delete = rule
    linked_pair(w)
    w.listing.clear()
    w.parsed.clear()
    w.crm_item(2, contact("B"))  # the other side is not empty, or the guard would stop
    w.synced(2, "b.vcf")
    w.copy("b.vcf", "uid-2", contact("B"), read=False)
    assert [(str(a.op), a.side) for a in w.plan()] == [(str(op), side)]


def test_deleted_by_the_user_and_no_longer_selected_is_forgotten() -> None:
    w = World()
    linked_pair(w)
    w.listing.clear()
    w.parsed.clear()
    w.crm[1].owner = "someone@example.com"
    assert w.ops() == [("forget", "a.vcf")]


# -- filters ----------------------------------------------------------------------------------


def test_an_item_the_filters_no_longer_select_leaves_the_users_side() -> None:
    w = World()
    linked_pair(w, read=False)
    w.crm[1].owner = "someone@example.com"
    [action] = w.plan()
    assert (action.op, action.reason, action.resolution) == (
        Op.DELETE_COPY, "no longer selected by the sync filters", None,
    )  # fmt: skip


def test_the_users_last_edit_reaches_the_crm_before_the_copy_leaves() -> None:
    w = World()
    linked_pair(w, mbox=contact("A", "edited"))
    w.crm[1].owner = "someone@example.com"
    [action] = w.plan()
    assert action.op is Op.DELETE_COPY and action.resolution is not None
    assert action.resolution.to_crm == {"job_title": "edited"}


def test_a_tracked_item_stays_whatever_the_filters_say() -> None:
    w = World()
    w.crm_item(1, contact("A", "v2"), owner="someone@example.com")
    w.synced(1, "a.vcf", state="tracked", crm=contact("A", "v1"))
    w.copy("a.vcf", "uid-1", contact("A", "v1"))
    [action] = w.plan()
    assert action.op is Op.UPDATE and action.resolution is not None
    assert sorted(action.resolution.to_mailbox) == ["job_title"]


def test_selected_crm_items_without_a_copy_are_uploaded_in_id_order() -> None:
    w = World()
    w.crm_item(3, contact("C"))
    w.crm_item(1, contact("A"))
    w.crm_item(2, contact("B"), owner="someone@example.com")
    assert w.ops() == [("upload", 1), ("upload", 3)]
    assert {a.stage for a in w.plan()} == {"upload"}


def test_items_in_another_collection_are_not_uploaded_here() -> None:
    w = World(elsewhere={1})
    w.crm_item(1, contact("A"))
    w.copy("x.vcf", "uid-1", contact("A"))
    assert w.ops() == [("ignore", "x.vcf")]


# -- new on the user's side -------------------------------------------------------------------


def test_the_users_own_item_is_ignored_and_a_tracked_one_created() -> None:
    w = World()
    w.copy("own.vcf", "own", contact("Own"))
    w.copy("new.vcf", "new", contact("New"), categories=["tracked"])
    plan = w.plan()
    assert [(str(a.op), a.href, a.side) for a in plan] == [
        ("create", "new.vcf", "crm"), ("ignore", "own.vcf", "status"),
    ]  # fmt: skip
    assert plan.actions[0].state == "tracked"


def test_in_a_tracked_collection_every_new_item_is_created_and_nothing_uploaded() -> None:
    w = World(role="tracked")
    w.crm_item(1, contact("A"))
    w.copy("new.vcf", "new", contact("New"))
    assert w.ops() == [("create", "new.vcf")]


def test_a_copy_with_a_crm_items_uid_is_linked_with_lists_joined() -> None:
    """First link: no base, so the users' list entries are kept beside the CRM's."""
    w = World()
    w.crm_item(1, contact("A", "", ["a@crm.example"]))
    w.copy("a.vcf", "uid-1", contact("A", "boss", ["a@home.example"]))
    [action] = w.plan()  # linked, so not uploaded as well
    assert (action.op, action.state, action.reason) == (Op.LINK, "linked", "linked to the CRM item with its UID")
    assert action.resolution is not None
    merged = action.resolution.merged
    assert merged.base["emails"] == ["a@crm.example", "a@home.example"]
    assert merged.base["job_title"] == "boss" and merged.conflicts == []
    assert sorted(action.resolution.to_crm) == ["emails", "job_title"]
    assert sorted(action.resolution.to_mailbox) == ["emails"]


def test_a_tracked_copy_links_to_the_contact_with_its_address() -> None:
    w = World()
    w.crm_item(1, contact("A", "", ["a@x.example"]), owner="someone@example.com")
    w.crm_item(2, contact("B", "", ["b@x.example"]), owner="someone@example.com")
    w.copy("n.vcf", "n", contact("Bee", "", ["B@x.example"]), categories=["Tracked"])
    [action] = w.plan()
    assert (action.op, action.reason, action.state, action.item and action.item.id) == (
        Op.LINK, BY_EMAIL, "tracked", 2,
    )  # fmt: skip


def test_a_second_copy_of_one_item_is_ignored() -> None:
    w = World()
    w.crm_item(1, contact("A"))
    w.copy("a1.vcf", "uid-1", contact("A"))
    w.copy("a2.vcf", "uid-1", contact("A"))
    w.copy("n1.vcf", "n", contact("N"), categories=["Tracked"])
    w.copy("n2.vcf", "n", contact("N"), categories=["Tracked"])
    assert w.ops() == [("link", "a1.vcf"), ("ignore", "a2.vcf"), ("create", "n1.vcf"), ("ignore", "n2.vcf")]


def test_an_ignored_item_is_looked_at_again_when_it_changes() -> None:
    w = World()
    w.statuses.append(Status(id=1, state="ignored", href="own.vcf", etag="e1", uid="own"))
    w.copy("own.vcf", "own", contact("Own"), etag="e2", categories=["Tracked"])
    [action] = w.plan()
    assert action.op is Op.CREATE and action.status is not None and action.status.id == 1


# -- kept aside, cleanup, the guard -----------------------------------------------------------------


def test_unreadable_items_are_kept_aside_and_left_alone() -> None:
    w = World()
    linked_pair(w, crm=contact("A", "v2"), read=False)
    w.broken.add("a.vcf")
    w.listing["bad.vcf"] = "e1"
    w.broken.add("bad.vcf")
    w.unreadable["bad.vcf"] = (Fetched("bad.vcf", "e1", b"junk"), SyncItemUnreadable("no BEGIN"))
    plan = w.plan()
    assert [(str(a.op), a.href, a.stage) for a in plan] == [("keep-aside", "bad.vcf", "read")]


def test_status_rows_that_describe_nothing_are_forgotten() -> None:
    w = World()
    w.crm_item(1, contact("A"))
    w.crm_item(2, contact("B"), owner="someone@example.com")
    w.crm_item(3, contact("C"))
    w.statuses += [
        Status(id=1, state="ignored", href="gone.vcf"),
        Status(id=2, state="unlinked", href=None, crm_id=2),  # no longer selected
        Status(id=3, state="unlinked", href=None, crm_id=9),  # deleted in the CRM
        Status(id=4, state="unlinked", href=None, crm_id=3),  # kept: it must not come back
        Status(id=5, state="unlinked", href=None, crm_id=1),
    ]
    plan = w.plan()
    assert [(str(a.op), a.status and a.status.id, a.stage) for a in plan] == [
        ("forget", 1, "cleanup"), ("forget", 2, "cleanup"), ("forget", 3, "cleanup"),
    ]  # fmt: skip


@pytest.mark.parametrize("empty", ["mailbox", "crm"])
def test_a_side_that_suddenly_looks_empty_stops_the_sync(empty: str) -> None:
    w = World()
    linked_pair(w, read=False)
    if empty == "mailbox":
        w.listing.clear()
    else:
        w.crm[1].owner = "someone@example.com"
    selected = selection(w.crm, w.policy, role="main", owner=OWNER)
    kw: dict[str, Any] = dict(kind="contacts", role="main", mailbox="anna", location="/x", force_delete=False)
    with pytest.raises(SyncSideEmpty) as caught:
        check_sides(w.statuses, w.listing, w.crm, selected, **kw)
    assert caught.value.side == empty
    assert check_sides(w.statuses, w.listing, w.crm, selected, **{**kw, "force_delete": True}) is True


def test_planning_twice_gives_the_same_plan() -> None:
    w = World()
    linked_pair(w, crm=contact("A", "v2"), mbox=contact("B", "v1"))
    w.crm_item(5, contact("E"))
    w.copy("n.vcf", "n", contact("N"), categories=["Tracked"])
    first, second = w.plan(), w.plan()
    assert [a.describe() for a in first] == [a.describe() for a in second]
    json.dumps([a.describe() for a in first])  # the dry run's output is JSON
