"""Exchange's rule shape (sources/outlookrules.py, shared by EWS and Graph): a rule read into
the model's conditions and actions, and the plans that keep mailfiler's named rules in step
and never name another rule."""

from __future__ import annotations

from mailfiler.serverrules import analyze
from mailfiler.sources import outlookrules as o
from mailfiler.sources.inboxrules import Route

CONTOSO = Route("INBOX/Clients/Contoso", from_domains=("contoso.com",))
OWN = CONTOSO.rule_name


def found(name: str, seq: int, **kw: object) -> o.Found:
    return o.Found(id=f"id-{seq}", name=name, sequence=seq, **kw)  # type: ignore[arg-type]


def test_conditions_and_exceptions_read_as_all_of_and_unless() -> None:
    cond = o.condition_of({"senderContains": ["contoso.com"], "hasAttachments": True},
                          {"subjectContains": ["newsletter"], "sentOnlyToMe": True})  # fmt: skip
    assert cond is not None and cond.op == "allof"
    # in the predicates' name order, whatever order the server gave them in
    assert cond.text == (
        'hasAttachments and sender contains "contoso.com" and unless sentOnlyToMe or subject contains "newsletter"'
    )
    # the sender test decides for contoso.com's mail as far as it can: the rest depends on the message
    assert analyze.judge(cond, "contoso.com", None) == (None, True)
    assert analyze.judge(cond, "fabrikam.com", None)[0] is False
    assert o.condition_of({}, {}) is None


def test_actions_read_into_the_model() -> None:
    acts = o.actions_of({"moveToFolder": "F1", "forwardTo": ["a@x.example"], "redirectTo": ["b@x.example"],
                         "delete": True, "stopProcessingRules": True, "markAsRead": True},
                        {"F1": "INBOX/Clients"}.get)  # type: ignore[arg-type]  # fmt: skip
    assert [(a.kind, a.target) for a in acts] == [("move", "INBOX/Clients"), ("delete", None), ("forward", "a@x.example"),
                                                 ("redirect", "b@x.example"), ("flag", None), ("stop", None)]  # fmt: skip


def test_route_conditions_keep_the_senders_one_condition() -> None:
    both = Route("F", from_domains=("contoso.com",), from_addresses=("bob@gmail.com",), subject_contains=("inv",))
    assert o.route_conditions(both) == {"senderContains": ["@contoso.com", ".contoso.com", "bob@gmail.com"],
                                        "subjectContains": ["inv"]}  # fmt: skip
    only = Route("F", from_addresses=("bob@gmail.com",), to_addresses=("sales@example.com",))
    assert o.route_conditions(only) == {"fromAddresses": ["bob@gmail.com"], "sentToAddresses": ["sales@example.com"]}


def test_plans_touch_only_mailfilers_rules() -> None:
    users = [found("Mine", 1, actions={"delete": True}), found("mailfilerish", 7)]
    plan = o.plan("ews", users, [CONTOSO], {CONTOSO.folder: "F1"})
    [op] = o.ops_of(plan)
    assert (op.op, op.name, op.sequence, op.folder_id) == ("create", OWN, 8, "F1")  # after the user's rules
    in_step = found(OWN, 8, conditions={"senderContains": ["@CONTOSO.COM", ".CONTOSO.COM"]},
                    actions={"moveToFolder": "F1"})  # fmt: skip
    assert o.plan("graph", [*users, in_step], [CONTOSO], {CONTOSO.folder: "F1"}).changes == []
    # disabled by the user, a second copy, a read-only one, a missing folder, a route gone
    disabled = found(OWN, 8, enabled=False, conditions=in_step.conditions, actions=in_step.actions)
    twice = found(OWN, 9, conditions=in_step.conditions, actions=in_step.actions)
    plan = o.plan("ews", [*users, disabled, twice], [CONTOSO], {CONTOSO.folder: "F1"})
    assert [(c.op, c.name) for c in plan.changes] == [("update", OWN), ("delete", OWN)]
    assert [(op.op, op.rule_id) for op in o.ops_of(plan)] == [("update", "id-8"), ("delete", "id-9")]
    locked = found(OWN, 8, read_only=True)
    plan = o.plan("graph", [*users, locked], [CONTOSO], {CONTOSO.folder: "F1"})
    assert plan.changes == [] and "read-only" in plan.warnings[0]
    plan = o.plan("ews", users, [CONTOSO], {CONTOSO.folder: None})
    assert plan.changes == [] and "does not exist on the server" in plan.warnings[0]
    plan = o.plan("ews", [*users, in_step], [], {})
    assert [(op.op, op.rule_id) for op in o.ops_of(plan)] == [("delete", "id-8")]
    assert o.problems_of([*users, in_step, twice]) == [f"mailfiler's rule {OWN!r} is on the server 2 times"]
