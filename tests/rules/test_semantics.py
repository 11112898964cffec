"""Order: the first rule that decides wins; continue, stop, accumulation, disabled rules."""

from __future__ import annotations

from pathlib import Path

from mailfiler.rules import RegardingSpec, load_rules
from tests.rules.helpers import ENTITIES, facts, ruleset, step, write

RULES = """\
rules:
  - name: tag-vip
    when: {from: ceo@contoso.com}
    then: {categories: [vip], owner: alice@example.com}
  - name: private
    when: {folder: 'Private/**'}
    then: skip
  - name: case
    when: {subject: '(?P<n>CAS-\\d{5})'}
    then: {regarding: 'case:{n}', categories: [case]}
  - name: contoso
    when: {from_domain: contoso.com}
    then: {regarding: account:contoso, categories: [contoso], owner: bob@example.com}
  - name: never-reached-for-contoso
    when: {from_domain: contoso.com}
    then: {categories: [late]}
"""


def test_first_deciding_rule_wins_and_ends(tmp_path: Path) -> None:
    d = ruleset(tmp_path, RULES).evaluate(facts(from_="ceo@contoso.com", subject="Re: CAS-01001"))
    assert d.regarding == RegardingSpec("case", key="CAS-01001")
    assert d.rule == "case" and d.action == "track"
    # the non-deciding rule before it went on and its actions count
    assert d.categories == ("vip", "case")
    assert d.owner == "alice@example.com"
    assert [t.rule for t in d.trace] == ["tag-vip", "private", "case"]
    assert step(d, "tag-vip").why == "matched; going on"
    assert step(d, "case").why == "matched; evaluation ends here"
    assert step(d, "case").applied == ("regarding", "track", "categories")


def test_later_rule_when_earlier_do_not_match(tmp_path: Path) -> None:
    d = ruleset(tmp_path, RULES).evaluate(facts(from_="x@contoso.com", subject="hello"))
    assert d.rule == "contoso" and d.regarding == RegardingSpec("account", key="contoso")
    assert d.categories == ("contoso",) and d.owner == "bob@example.com"
    assert "never-reached-for-contoso" not in [t.rule for t in d.trace]


def test_skip_ends_evaluation(tmp_path: Path) -> None:
    d = ruleset(tmp_path, RULES).evaluate(facts(folder="Private/x", subject="CAS-01001"))
    assert d.action == "skip" and d.rule == "private" and d.regarding is None


def test_nothing_matches(tmp_path: Path) -> None:
    d = ruleset(tmp_path, RULES).evaluate(facts(subject="hello"))
    assert d.action is None and d.regarding is None and d.rule is None and d.categories == ()
    assert len(d.trace) == 5 and not any(t.matched for t in d.trace)


def test_continue_keeps_the_first_decision_and_accumulates(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path,
        """\
        rules:
          - name: a
            when: {subject: invoice}
            then: {regarding: account:contoso, categories: [a], owner: a@x.com}
            continue: true
          - name: b
            when: {subject: invoice}
            then: {skip: true, categories: [b], owner: b@x.com}
          - name: c
            then: {categories: [c]}
        """,
    )
    d = rs.evaluate(facts(subject="invoice"))
    assert d.regarding == RegardingSpec("account", key="contoso") and d.rule == "a"
    assert d.action == "track"  # a's regarding set the action first; b's skip comes too late
    assert d.categories == ("a", "b") and d.owner == "a@x.com"
    assert step(d, "a").why == "matched; going on"
    assert step(d, "b").applied == ("categories",)
    assert "c" not in [t.rule for t in d.trace]  # b decided (skip) and did not continue


def test_continue_in_then_and_action_then_regarding(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path,
        """\
        rules:
          - name: force
            when: {mailbox: alice}
            then: {track: true, continue: true}
          - name: where
            when: {subject: '(?P<n>CAS-\\d+)'}
            then: {regarding: 'case:{n}'}
        """,
    )
    d = rs.evaluate(facts(subject="CAS-1"))
    assert d.action == "track" and d.regarding == RegardingSpec("case", key="CAS-1")
    assert d.rule == "where"  # the rule that decided the regarding
    d = rs.evaluate(facts(subject="no case"))
    assert d.action == "track" and d.regarding is None and d.rule == "force"


def test_stop(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path,
        """\
        rules:
          - name: quiet
            when: {from_domain: partner.example}
            then: {categories: [partner], stop: true}
          - name: everything
            then: track
          - name: halt
            when: {subject: halt}
            then: stop
        """,
    )
    d = rs.evaluate(facts(from_="a@partner.example"))
    assert d.categories == ("partner",) and d.action is None and len(d.trace) == 1


def test_disabled_rules_are_skipped_and_traced(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path,
        """\
        rules:
          - name: switched-off
            enabled: false
            then: skip
          - name: switched-on
            then: track
        """,
    )
    d = rs.evaluate(facts())
    assert d.action == "track" and d.rule == "switched-on"
    assert step(d, "switched-off").why == "disabled" and not step(d, "switched-off").matched


def test_files_and_folders_load_in_order(tmp_path: Path) -> None:
    folder = tmp_path / "rules.d"
    folder.mkdir()
    write(folder, "rules:\n  - name: second\n    then: skip\n", "20-b.yml")
    write(folder, "rules:\n  - name: first\n    then: {categories: [x]}\n", "10-a.yaml")
    write(folder, "not: a rule file\n", "notes.txt")
    write(folder, "rules:\n  - name: hidden\n    then: track\n", ".swap.yaml")
    write(folder, "# only comments\n", "30-empty.yaml")
    lead = write(tmp_path, "rules:\n  - name: zeroth\n    when: {subject: x}\n    then: track\n", "lead.yaml")
    rs = load_rules([lead, folder], known_entities=ENTITIES)
    assert [r.name for r in rs.rules] == ["zeroth", "first", "second"]
    assert [p.name for p in rs.sources] == ["lead.yaml", "10-a.yaml", "20-b.yml", "30-empty.yaml"]
    assert rs.rules[1].source == f"{folder / '10-a.yaml'}:2"
    assert rs.evaluate(facts()).action == "skip"


def test_evaluation_does_not_depend_on_earlier_rules_for_matching(tmp_path: Path) -> None:
    # b's regarding template renders empty, so b does not match, even though a already set a regarding
    rs = ruleset(
        tmp_path,
        """\
        rules:
          - name: a
            then: {regarding: account:contoso}
            continue: true
          - name: b
            when: {subject: '(?P<n>\\d*)'}
            then: {regarding: 'case:{n}'}
        """,
    )
    d = rs.evaluate(facts(subject="none"))
    assert not step(d, "b").matched
