"""``rules check`` problems: every one at once, each at its exact line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailfiler.errors import ConfigError
from mailfiler.rules import check_rules, load_rules
from tests.rules.helpers import ENTITIES, problems, write

REPO = Path(__file__).resolve().parents[2]


def test_yaml_syntax_error(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules:\n  - name: a\n    then: [skip\n") == [
        "4:1: YAML syntax error: while parsing a flow sequence, expected ',' or ']', but got '<stream end>'"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_bytes(b"rules:\n  - name: caf\xe9\n")
    _, found = check_rules([path], known_entities=ENTITIES)
    assert [str(p) for p in found] == [f"{path}:2:14: the file is not valid UTF-8 text"]


def test_top_level(tmp_path: Path) -> None:
    assert problems(tmp_path, "- a\n") == ["1:1: a rule file must be a mapping with a rules: list"]
    assert problems(tmp_path, "rule: []\n") == [
        "1:1: unknown key 'rule' (did you mean 'rules'?)",
        "1:1: a rule file must have a rules: list",
    ]
    assert problems(tmp_path, "rules: 3\n") == [
        "1:8: rules: expected a list of rules (lines starting with '- '), found 3"
    ]
    assert problems(tmp_path, "rules:\n") == []
    assert problems(tmp_path, "") == []


def test_duplicate_keys(tmp_path: Path) -> None:
    text = "rules:\n  - name: a\n    then: skip\n    then: track\n"
    assert problems(tmp_path, text) == ["4:5: rules[0]: duplicate key 'then' (first on line 3)"]


def test_yes_no_on_off_need_quotes(tmp_path: Path) -> None:
    assert problems(tmp_path, "rules:\n  - name: off\n    then: skip\n") == [
        "2:11: rules[0].name: expected a rule name, found False"
        " (YAML reads a bare yes, no, on or off as true or false: quote it)"
    ]


def test_rule_shape(tmp_path: Path) -> None:
    text = """\
rules:
  - just a string
  - when: {subject: x}
    then: skip
  - name: has space
    then: skip
  - name: no-then
    when: {subject: x}
  - name: typo
    wehn: {subject: x}
    then: skip
    enabled: maybe
"""
    assert problems(tmp_path, text) == [
        "2:5: rules[0]: each rule must be a mapping with name:, when: and then:, found 'just a string'",
        "3:5: rules[1]: missing required key 'name'",
        "5:11: rules[2].name: rule name 'has space' may hold letters, digits, '.', '_' and '-' only",
        "7:5: rule 'no-then': missing required key 'then' (what to do: skip, track, regarding: ...)",
        "10:5: rule 'typo': unknown key 'wehn' (did you mean 'when'?)",
        "12:14: rule 'typo': enabled: expected true or false, found 'maybe'",
    ]


def test_condition_problems(tmp_path: Path) -> None:
    text = r"""rules:
  - name: r
    when:
      subjct: x
      subject: '(a)\1'
      body: 'x(?=y)'
      folder: 'Clients/{1}'
      from: contoso.com
      from_domain: ['a b']
      direction: sideways
      size: {min: lots}
      sender_is: acount
      header: {'X Bad': x}
      has_attachment: 'yes'
      any: {subject: x}
      not: {}
    then: track
"""
    assert problems(tmp_path, text) == [
        "4:7: rule 'r': when: unknown condition 'subjct' (did you mean 'subject'?)",
        "5:16: rule 'r': when.subject: invalid regular expression '(a)\\1': invalid escape sequence: \\1"
        " (backreferences such as \\1 are not supported: RE2 matches in linear time)",
        "6:13: rule 'r': when.body: invalid regular expression 'x(?=y)': invalid perl operator: (?="
        " (lookahead is not supported: RE2 matches in linear time)",
        "7:15: rule 'r': when.folder: folder pattern 'Clients/{1}': {1} must name a capture"
        " (letters, digits and _, not starting with a digit)",
        "8:13: rule 'r': when.from: 'contoso.com' is not an e-mail address (for a whole domain use from_domain:)",
        "9:21: rule 'r': when.from_domain[0]: 'a b' is not a domain (write contoso.com, or '*.contoso.com' for its subdomains)",
        "10:18: rule 'r': when.direction: direction must be incoming or outgoing, found 'sideways'",
        "11:19: rule 'r': when.size.min: expected a size in bytes or a string such as '10MB', found 'lots'",
        "12:18: rule 'r': when.sender_is: unknown entity type 'acount' (did you mean 'account'?)",
        "13:16: rule 'r': when.header: 'X Bad' is not a header name",
        "14:23: rule 'r': when.has_attachment: expected true or false, found 'yes'",
        "15:12: rule 'r': when.any: any: expects a list of conditions (lines starting with '- '), found a mapping",
        "16:12: rule 'r': when.not: no conditions (write at least one, such as subject: or folder:)",
    ]


def test_action_problems(tmp_path: Path) -> None:
    text = """\
rules:
  - name: a
    then: tack
  - name: b
    then: {regarding: acount:x}
  - name: c
    then: {regarding: {entity: case, key: x, name: y}}
  - name: d
    then: {regarding: {entity: account, field: phone, value: x}}
  - name: e
    then: {skip: true, track: true}
  - name: f
    then: {skip: true, regarding: account:x}
  - name: g
    then: {categories: ['{x']}
  - name: h
    then: {owner: nobody}
  - name: i
    then: {create_contact: {entity: account}}
  - name: j
    then: {track: true, stop: true}
    continue: true
  - name: k
    then: {regarding: {entity: account, key: x, fields: {name: y}}}
  - name: l
    then: {track: false}
  - name: m
    then: {regarding: {entity: account, key: x, create: true, fields: {parent: 'acount:y', colour: red}}}
"""
    assert problems(tmp_path, text) == [
        "3:11: rule 'a': then: unknown action 'tack' (did you mean 'track'?; or a mapping of actions)",
        "5:23: rule 'b': then.regarding: unknown entity type 'acount' (did you mean 'account'?)",
        "7:23: rule 'c': then.regarding: give exactly one of key:, name: or field: (with value:); found key and name",
        "9:48: rule 'd': then.regarding.field: field must be one of email, domain, found 'phone'",
        "11:11: rule 'e': then: skip and track contradict each other",
        "13:18: rule 'f': then.skip: a skipped message is never tracked, so regarding: would never be used",
        "15:25: rule 'g': then.categories[0]: template '{x': unbalanced '{' (write {{ for a literal brace)",
        "17:19: rule 'h': then.owner: owner 'nobody' is not an e-mail address",
        "19:37: rule 'i': then.create_contact.entity: create_contact creates a contact or a lead, not 'account'",
        "21:25: rule 'j': then: stop and continue contradict each other",
        "24:49: rule 'k': then.regarding: fields: is used only with create: true",
        "26:11: rule 'l': then: does nothing (give skip, track, regarding:, categories:, owner: ...)",
        "28:80: rule 'm': then.regarding.fields.parent: unknown entity type 'acount' (did you mean 'account'?)",
        "28:92: rule 'm': then.regarding.fields: unknown key 'colour' (expected one of: name, parent, emails, domains)",
    ]


def test_templates_naming_captures_the_condition_cannot_produce(tmp_path: Path) -> None:
    text = r"""rules:
  - name: plain
    when: {subject: '(?P<number>CAS-\d+)'}
    then: {regarding: 'case:{numbr}'}
  - name: any-branches
    when:
      any:
        - subject: '(?P<number>CAS-\d+)'
        - folder: 'Cases/{other}'
    then: {regarding: 'case:{number}'}
  - name: under-not
    when: {not: {subject: '(?P<n>x)'}}
    then: {categories: ['{n}']}
  - name: fine
    when:
      any:
        - subject: '(?P<number>CAS-\d+)'
        - folder: 'Cases/{number}'
    then: {regarding: 'case:{number}', owner: '{from.address}'}
  - name: shadow
    when: {subject: '(?P<folder>x)'}
    then: track
"""
    assert problems(tmp_path, text) == [
        "4:23: rule 'plain': then.regarding: template 'case:{numbr}' names {numbr}, which the condition cannot produce"
        " (it captures: number; built-in names: subject, mailbox, folder, direction, from.address, from.name,"
        " from.domain, from.local, from.first, from.last)",
        "10:23: rule 'any-branches': then.regarding: template 'case:{number}' names {number}, which the condition"
        " cannot produce (it captures: none; under any: a name counts only when every branch captures it;"
        " under not: never)",
        "13:25: rule 'under-not': then.categories[0]: template '{n}' names {n}, which the condition cannot produce"
        " (it captures: none; under any: a name counts only when every branch captures it; under not: never)",
        "21:21: rule 'shadow': when.subject: capture name 'folder' is a built-in template name; choose another",
    ]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    a = write(tmp_path, "rules:\n  - name: dup\n    then: skip\n", "a.yaml")
    b = write(tmp_path, "rules:\n  - name: other\n    then: skip\n  - name: dup\n    then: [bad]\n", "b.yaml")
    _, found = check_rules([a, b], known_entities=ENTITIES)
    assert [str(p) for p in found] == [
        f"{b}:4:11: rule name 'dup' is already used at {a}:2",
        f"{b}:5:11: rule 'dup': then: expected an action (skip, track) or a mapping of actions (key: value lines), found a list",
    ]


def test_missing_path_and_load_rules_raises_with_every_problem(tmp_path: Path) -> None:
    bad = write(tmp_path, "rules:\n  - name: a\n    then: tack\n")
    with pytest.raises(ConfigError) as info:
        load_rules([tmp_path / "nope.yaml", bad], known_entities=ENTITIES)
    assert [str(p) for p in info.value.problems] == [
        f"{tmp_path / 'nope.yaml'}:1:1: no such rule file or folder",
        f"{bad}:3:11: rule 'a': then: unknown action 'tack' (did you mean 'track'?; or a mapping of actions)",
    ]
    assert "2 problems in 2 rule files" in str(info.value)


def test_custom_entities_are_known(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  - name: a\n    then: {regarding: 'project:apollo'}\n")
    assert check_rules([path], known_entities=ENTITIES)[1] == []
    assert len(check_rules([path], known_entities=["account"])[1]) == 1


def test_shipped_examples_pass(tmp_path: Path) -> None:
    rs, found = check_rules([REPO / "rules"], known_entities=ENTITIES)
    assert found == []
    assert len(rs.rules) >= 10
