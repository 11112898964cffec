"""Each condition on its own, and the combinators."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rules.helpers import facts, matches, one_rule


@pytest.mark.parametrize(
    ("when", "kw", "expected"),
    [
        ("{mailbox: alice}", {}, True),
        ("{mailbox: [bob, ALICE]}", {}, True),
        ("{mailbox: bob}", {}, False),
        ("{direction: outgoing}", {"direction": "outgoing"}, True),
        ("{direction: outgoing}", {"direction": "incoming"}, False),
        ("{from: Bob@Contoso.com}", {"from_": "bob@contoso.com"}, True),
        ("{from: [x@y.z, bob@contoso.com]}", {"from_": "BOB@contoso.com"}, True),
        ("{from: bob@contoso.com}", {"to": "bob@contoso.com"}, False),
        ("{to: bob@contoso.com}", {"to": ["a@b.c", "bob@contoso.com"]}, True),
        ("{to: bob@contoso.com}", {"cc": "bob@contoso.com"}, False),
        ("{cc: bob@contoso.com}", {"cc": "bob@contoso.com"}, True),
        ("{recipient: bob@contoso.com}", {"bcc": "bob@contoso.com"}, True),
        ("{recipient: bob@contoso.com}", {"from_": "bob@contoso.com"}, False),
        ("{from_domain: contoso.com}", {"from_": "bob@CONTOSO.com"}, True),
        ("{from_domain: contoso.com}", {"from_": "bob@mail.contoso.com"}, False),
        ("{from_domain: '*.contoso.com'}", {"from_": "bob@mail.contoso.com"}, True),
        ("{from_domain: '*.contoso.com'}", {"from_": "bob@a.b.contoso.com"}, True),
        ("{from_domain: '*.contoso.com'}", {"from_": "bob@contoso.com"}, False),
        ("{from_domain: .contoso.com}", {"from_": "bob@mail.contoso.com"}, True),
        ("{from_domain: '*.contoso.com'}", {"from_": "bob@notcontoso.com"}, False),
        ("{from_domain: '@contoso.com'}", {"from_": "bob@contoso.com"}, True),
        ("{to_domain: fabrikam.com}", {"to": "x@fabrikam.com"}, True),
        ("{cc_domain: fabrikam.com}", {"to": "x@fabrikam.com"}, False),
        ("{recipient_domain: fabrikam.com}", {"cc": "x@fabrikam.com"}, True),
        ("{has_attachment: true}", {"has_attachment": True}, True),
        ("{has_attachment: false}", {"has_attachment": True}, False),
        ("{size: {min: 1KB}}", {"size": 1024}, True),
        ("{size: {min: 1KB}}", {"size": 1023}, False),
        ("{size: {max: 10MB}}", {"size": 10 * 1024 * 1024}, True),
        ("{size: {max: '1.5 MiB'}}", {"size": 1_600_000}, False),
        ("{size: {min: 100, max: 200}}", {"size": 150}, True),
        ("{sender_is: contact}", {"sender_entities": {"contact"}}, True),
        ("{sender_is: [account, lead]}", {"sender_entities": {"contact"}}, False),
        ("{sender_is: any}", {"sender_entities": {"lead"}}, True),
        ("{sender_is: any}", {}, False),
        ("{sender_is: none}", {}, True),
        ("{sender_is: none}", {"sender_entities": {"user"}}, False),
        ("{recipient_is: project}", {"recipient_entities": {"project"}}, True),
        ("{recipient_is: project}", {"sender_entities": {"project"}}, False),
        ("{auto_submitted: true}", {"headers": {"Auto-Submitted": "auto-replied"}}, True),
        ("{auto_submitted: false}", {"headers": {"Auto-Submitted": "no"}}, True),
        ("{subject: 'invoice \\d+'}", {"subject": "Re: INVOICE 42"}, True),
        ("{subject: '(?-i)invoice'}", {"subject": "INVOICE"}, False),
        ("{subject: [foo, bar]}", {"subject": "a bar b"}, True),
        ("{subject: '^$'}", {"subject": ""}, True),
        ("{body: 'order #\\d+'}", {"body": "hello\nyour order #123 shipped"}, True),
        ("{body: 'late'}", {"body": "x" * (64 * 1024) + "late"}, False),  # beyond the 64 KiB cap
        ("{header: {X-Priority: '^1'}}", {"headers": {"x-priority": "1 (Highest)"}}, True),
        ("{header: {X-Priority: '^1'}}", {"headers": {"X-Priority": "3"}}, False),
        ("{header: {X-Priority: ''}}", {}, False),  # a missing header never matches
        ("{header: {Received: 'mx2'}}", {"headers": [("Received", "mx1"), ("Received", "mx2")]}, True),
        ("{header: {X-A: a, X-B: b}}", {"headers": {"X-A": "a"}}, False),
        ("{folder: Tracked/Contoso}", {"folder": "tracked/contoso"}, True),
        ("{folder: Tracked/Contoso}", {"folder": None}, False),
    ],
)
def test_condition(tmp_path: Path, when: str, kw: dict, expected: bool) -> None:
    if isinstance(kw.get("headers"), list):
        kw = {**kw, "headers": tuple(kw["headers"])}
    assert matches(one_rule(tmp_path, when), facts(**kw)) is expected


def test_header_cap(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{header: {X-Long: 'end'}}")
    assert not matches(rs, facts(headers={"X-Long": "x" * 9000 + "end"}))
    assert matches(rs, facts(headers={"X-Long": "x" * 8000 + "end"}))


def test_mapping_means_all(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{from_domain: contoso.com, subject: invoice}")
    assert matches(rs, facts(from_="a@contoso.com", subject="Invoice"))
    assert not matches(rs, facts(from_="a@contoso.com", subject="Hello"))
    assert not matches(rs, facts(from_="a@fabrikam.com", subject="Invoice"))


def test_all_any_not(tmp_path: Path) -> None:
    rs = one_rule(
        tmp_path,
        "{all: [{any: [{subject: invoice}, {subject: order}]}, {not: {from_domain: spam.example}}]}",
    )
    assert matches(rs, facts(subject="Order 1", from_="a@b.c"))
    assert matches(rs, facts(subject="invoice", from_="a@b.c"))
    assert not matches(rs, facts(subject="hello", from_="a@b.c"))
    assert not matches(rs, facts(subject="invoice", from_="a@spam.example"))


def test_why_names_the_failing_condition(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{from_domain: contoso.com, subject: invoice}")
    step = rs.evaluate(facts(from_="a@contoso.com", subject="hello")).trace[0]
    assert not step.matched and step.why == "subject did not match"
    rs = one_rule(tmp_path, "{any: [{subject: a}, {mailbox: bob}]}")
    why = rs.evaluate(facts(subject="x")).trace[0].why
    assert why.startswith("any: none held") and "subject did not match" in why and "mailbox" in why


def test_captures_from_regexes(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{subject: '(?P<number>CAS-\\d{5})', header: {X-Ref: '^(?P<ref>\\w+)'}}")
    step = rs.evaluate(facts(subject="Re: CAS-01001", headers={"X-Ref": "abc def"})).trace[0]
    assert step.matched and step.captures == {"number": "CAS-01001", "ref": "abc"}


def test_optional_group_captures_empty(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{subject: '(?P<a>x)|(?P<b>y)'}")
    assert rs.evaluate(facts(subject="y")).trace[0].captures == {"a": "", "b": "y"}


def test_first_written_condition_wins_a_capture_name(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{folder: 'Clients/{name}', subject: '(?P<name>\\w+)'}")
    assert rs.evaluate(facts(folder="Clients/Contoso", subject="hello")).trace[0].captures == {"name": "Contoso"}
    rs = one_rule(tmp_path, "{subject: '(?P<name>\\w+)', folder: 'Clients/{name}'}")
    assert rs.evaluate(facts(folder="Clients/Contoso", subject="hello")).trace[0].captures == {"name": "hello"}


def test_any_captures_from_the_branch_that_held(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{any: [{subject: '(?P<n>CAS-\\d+)'}, {folder: 'Cases/{n}'}]}")
    assert rs.evaluate(facts(subject="hi", folder="Cases/CAS-7")).trace[0].captures == {"n": "CAS-7"}
    assert rs.evaluate(facts(subject="CAS-9", folder="Cases/CAS-7")).trace[0].captures == {"n": "CAS-9"}


def test_rule_without_when_matches_everything(tmp_path: Path) -> None:
    from tests.rules.helpers import ruleset

    rs = ruleset(tmp_path, "rules:\n  - name: all-mail\n    then: {categories: [mail]}\n")
    assert rs.evaluate(facts()).categories == ("mail",)
