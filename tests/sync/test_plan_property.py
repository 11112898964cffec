"""A property of the planner alone: a plan, once carried out, leaves nothing
to do.  Random edits on both sides with passes in between; each pass plans,
carries the plan out on plain dicts (what each action means, with no codec,
target or store), and plans again: the next plan must write nothing on
either side, and the one after it must be empty.

The end-to-end state machine (test_state_machine.py) checks the same over
the real engine; this one reaches the planner's corners (conflict and
delete policies, categories, copies with a CRM item's UID, e-mail links)
hundreds of times a second."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from mailfiler.config.syncschema import SyncFilter
from mailfiler.sources.target import Fetched
from mailfiler.sync.actions import LINKED, Action, Op, Plan, Policy, Status, resolve
from mailfiler.sync.crm import CrmItem
from mailfiler.sync.items import Fields, ParsedItem, content_hash
from mailfiler.sync.plan import Inputs, check_sides, plan_collection, selection, to_read

OWNER = "anna@example.com"
OTHER = "erik@example.com"
VALUES = st.sampled_from(["", "a", "b"])
EMAILS = st.sampled_from([[], ["x@example.com"], ["y@example.com"]])


@dataclass
class Copy:
    uid: str
    fields: Fields
    etag: int
    categories: list[str] = field(default_factory=list)


@dataclass
class Sides:
    policy: Policy
    crm: dict[int, CrmItem] = field(default_factory=dict)
    mine: dict[str, Copy] = field(default_factory=dict)
    statuses: dict[int, Status] = field(default_factory=dict)
    n: int = 0

    def next(self) -> int:
        self.n += 1
        return self.n

    # -- what a pass reads ---------------------------------------------------------------

    def inputs(self) -> tuple[Inputs, set[int]]:
        statuses = [self.statuses[k] for k in sorted(self.statuses)]
        listing = {href: str(c.etag) for href, c in self.mine.items()}
        selected = selection(self.crm, self.policy, role="main", owner=OWNER)
        check_sides(statuses, listing, self.crm, selected, kind="contacts", role="main", mailbox="anna",
                    location="mem", force_delete=True)  # fmt: skip
        inputs = Inputs("contacts", "main", self.policy, OWNER, dict(self.crm), statuses, listing)
        for href in to_read(statuses, listing, {}, self.crm, selected):
            c = self.mine[href]
            inputs.parsed[href] = (Fetched(href, str(c.etag), b""), ParsedItem(c.uid, dict(c.fields), c.categories))
        return inputs, selected

    def plan(self) -> Plan:
        inputs, selected = self.inputs()
        return plan_collection(inputs, selected)

    # -- what each action means --------------------------------------------------------------

    def link(self, status: Status | None, item: CrmItem, href: str, a: Action, state: str | None) -> None:
        assert a.pair is not None
        resolution = a.resolution or resolve(self.policy, None, item, a.pair)
        crm_fields = {**item.fields, **resolution.to_crm}
        self.crm[item.id] = CrmItem(item.id, item.uid, crm_fields, item.modified, owner=item.owner)
        copy = self.mine[href]
        if resolution.to_mailbox:
            copy.fields, copy.etag = dict(resolution.merged.mailbox), self.next()
        sid = status.id if status is not None else self.next()
        self.statuses[sid] = Status(
            sid, state or (status.state if status is not None else "linked"), href, str(copy.etag), copy.uid,
            item.id, content_hash(crm_fields), content_hash(copy.fields), json.dumps(resolution.merged.base),
        )  # fmt: skip

    def upload(self, item: CrmItem) -> None:
        href = f"{item.uid}.vcf"
        assert href not in self.mine  # the model has no SyncItemExists
        self.mine[href] = Copy(item.uid, dict(item.fields), self.next())
        sid = self.next()
        self.statuses[sid] = Status(sid, "linked", href, str(self.mine[href].etag), item.uid, item.id,
                                    content_hash(item.fields), content_hash(item.fields), json.dumps(item.fields))  # fmt: skip

    def create(self, a: Action) -> CrmItem:
        assert a.pair is not None
        cid = self.next()
        self.crm[cid] = CrmItem(cid, a.pair[1].uid, dict(a.pair[1].fields), None, owner=OWNER)
        return self.crm[cid]

    def apply(self, plan: Plan) -> None:
        for a in plan:
            s = a.status
            if s is not None and a.op not in (Op.UPDATE, Op.IGNORE, Op.TOUCH, Op.UNLINK):
                self.statuses.pop(s.id, None)
            if a.op is Op.UPDATE:
                assert a.item is not None and s is not None and s.href is not None
                self.link(s, a.item, s.href, a, None)
            elif a.op is Op.LINK:
                assert a.item is not None and a.href is not None
                self.link(None, a.item, a.href, a, a.state)
            elif a.op in (Op.CREATE, Op.RECREATE):
                assert a.pair is not None
                self.link(None, self.create(a), a.pair[0].href, a, a.state)
            elif a.op is Op.DELETE_COPY:
                assert s is not None and s.href is not None
                if a.resolution is not None and a.item is not None:
                    self.crm[a.item.id].fields.update(a.resolution.to_crm)
                del self.mine[s.href]
            elif a.op is Op.DELETE_IN_CRM:
                assert a.item is not None
                del self.crm[a.item.id]
            elif a.op is Op.UNLINK:
                assert s is not None
                self.statuses[s.id] = Status(s.id, "unlinked", None, None, s.uid, s.crm_id)
            elif a.op in (Op.UPLOAD, Op.RESTORE):
                assert a.item is not None
                self.upload(a.item)
            elif a.op is Op.IGNORE:
                assert a.pair is not None and a.href is not None
                sid = s.id if s is not None else self.next()
                self.statuses[sid] = Status(sid, "ignored", a.href, a.pair[0].etag, a.pair[1].uid)
            elif a.op is Op.TOUCH:
                assert s is not None and s.href is not None
                self.statuses[s.id] = Status(**{**s.__dict__, "etag": str(self.mine[s.href].etag)})
            else:
                assert a.op is Op.FORGET, a.op


EDITS = st.one_of(
    st.tuples(st.just("crm-new"), VALUES, EMAILS, st.sampled_from([OWNER, OWNER, OTHER])),
    st.tuples(st.just("crm-edit"), st.integers(0, 9), VALUES),
    st.tuples(st.just("crm-owner"), st.integers(0, 9), st.sampled_from([OWNER, OTHER])),
    st.tuples(st.just("crm-delete"), st.integers(0, 9)),
    st.tuples(st.just("mine-new"), VALUES, EMAILS, st.booleans(), st.integers(0, 12)),
    st.tuples(st.just("mine-edit"), st.integers(0, 9), VALUES),
    st.tuples(st.just("mine-delete"), st.integers(0, 9)),
    st.tuples(st.just("sync")),
)


def edit(sides: Sides, step: tuple) -> None:
    what, *args = step
    crm_ids, hrefs = sorted(sides.crm), sorted(sides.mine)
    if what == "crm-new":
        cid = sides.next()
        fields = {"name": f"K{cid}", "job_title": args[0], "emails": args[1]}
        sides.crm[cid] = CrmItem(cid, f"uid-{cid}", fields, dt.datetime(2024, 1, 1) + dt.timedelta(seconds=cid),
                                 owner=args[2])  # fmt: skip
    elif what.startswith("crm-") and crm_ids:
        item = sides.crm[crm_ids[args[0] % len(crm_ids)]]
        if what == "crm-edit":
            item.fields = {**item.fields, "job_title": args[1]}
        elif what == "crm-owner":
            item.owner = args[1]
        else:
            del sides.crm[item.id]
    elif what == "mine-new":
        n = sides.next()
        # sometimes a copy of a CRM item (its UID: a status lost, or a second copy)
        uid = f"uid-{args[3]}" if args[3] <= sides.n else f"own-{n}"
        fields = {"name": f"M{n}", "job_title": args[0], "emails": args[1]}
        sides.mine[f"m{n}.vcf"] = Copy(uid, fields, sides.next(), ["Tracked"] if args[2] else [])
    elif what.startswith("mine-") and hrefs:
        href = hrefs[args[0] % len(hrefs)]
        if what == "mine-edit":
            copy = sides.mine[href]
            copy.fields, copy.etag = {**copy.fields, "job_title": args[1]}, sides.next()
        else:
            del sides.mine[href]
    elif what == "sync":
        sides.apply(sides.plan())


@settings(max_examples=500, deadline=None)
@given(
    steps=st.lists(EDITS, min_size=4, max_size=40),
    conflicts=st.sampled_from(["crm-wins", "mailbox-wins", "newest-wins"]),
    on_delete=st.sampled_from(["unlink", "restore", "delete-in-crm"]),
)
def test_a_carried_out_plan_leaves_nothing_to_do(steps: list[tuple], conflicts: str, on_delete: str) -> None:
    sides = Sides(Policy(filters=[SyncFilter(owner="mailbox")], conflicts=conflicts, on_mailbox_delete=on_delete))
    for step in [*steps, ("sync",)]:
        edit(sides, step)
    # the next pass writes nothing on either side; it may still tidy the status (an item
    # unlinked in this pass that the filters do not select is forgotten one pass later)
    again = sides.plan()
    assert [a.describe() for a in again if a.side != "status"] == []
    assert {a.op for a in again} <= {Op.FORGET}
    sides.apply(again)
    assert [a.describe() for a in sides.plan()] == []
    # and every item is linked at most once on the user's side
    linked = [s.crm_id for s in sides.statuses.values() if s.state in LINKED]
    assert len(linked) == len(set(linked))
