"""Sieve scripts as text: the generic parser, the rule reader, the writer of
mailfiler's script and include, and the marks (no server needed)."""

from __future__ import annotations

import pytest

from mailfiler.serverrules import analyze
from mailfiler.sources.inboxrules import Route
from mailfiler.sources.sieve import sievewrite as w
from mailfiler.sources.sieve.sieveparse import SieveSyntaxError, Tag, parse
from mailfiler.sources.sieve.sieveread import includes, read_rules

# A Roundcube-style script with extensions sievelib's parser refuses (include,
# duplicate, relational with a comparator), comments, a text: block and nesting.
USER_SCRIPT = """\
require ["fileinto", "include", "duplicate", "relational", "comparator-i;ascii-numeric", "vacation", "copy"];
# rule:[Spam]
if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5" { fileinto "Junk"; stop; }
# rule:[Duplicates]
if duplicate { discard; }
/* the old forwarding */
# rule:[Contoso to the boss]
if address :domain :is "from" "contoso.com" {
    redirect "boss@example.com";
}
# rule:[Disabled rule]
if false # anyof (header :contains "subject" "x")
{
    discard;
}
if header :contains "subject" "report" {
    fileinto :copy "Reports/Weekly";
    if size :over 1M { addflag "\\\\Flagged"; }
} elsif exists "list-id" {
    fileinto "Lists";
} else {
    keep;
}
vacation :days 3 text:
I am away.
..dot-stuffed
.
;
"""


def test_parser_reads_any_extension_with_lines_offsets_and_comments() -> None:
    cmds = parse(USER_SCRIPT)
    assert [c.name for c in cmds] == ["require", "if", "if", "if", "if", "if", "elsif", "else", "vacation"]
    spam = cmds[1]
    assert spam.comments == ["rule:[Spam]"] and spam.line == 3
    assert spam.tests[0].args[:4] == [Tag("value"), ("ge",), Tag("comparator"), ("i;ascii-numeric",)]
    assert USER_SCRIPT[spam.start : spam.end].endswith("stop; }")
    assert cmds[-1].args[-1] == ("I am away.\n.dot-stuffed\n",)
    assert cmds[3].comments == ["the old forwarding", "rule:[Contoso to the boss]"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("if true { keep;", "line 1"),
        ('fileinto "x"', "line 1"),
        ('require "a";\nif header :is "a" "b" ] { keep; }', "line 2, column 23"),
        ('x "unterminated;', "line 1, column 3"),
        ("/* open", "line 1, column 1"),
        ('["a" "b"];', "line 1, column 1"),
        ("stop;\nfileinto @;", "line 2, column 10"),
    ],
)
def test_parser_errors_say_where(text: str, where: str) -> None:
    with pytest.raises(SieveSyntaxError) as err:
        parse(text)
    assert where in str(err.value)


def test_reader_lists_rules_with_conditions_and_actions() -> None:
    rules = read_rules("roundcube", USER_SCRIPT, folder_map=lambda f: f)
    by_name = {r.name: r for r in rules}
    spam = by_name["Spam"]
    assert [a.kind for a in spam.actions] == ["move", "stop"] and spam.actions[0].target == "Junk"
    assert spam.conditions is not None and spam.conditions.match == "value ge"
    assert by_name["Duplicates"].actions[0].kind == "delete"
    boss = by_name["Contoso to the boss"]
    assert boss.conditions.text == 'from domain is "contoso.com"'
    assert [(a.kind, a.target) for a in boss.actions] == [("redirect", "boss@example.com")]
    assert not by_name["Disabled rule"].enabled
    # the if/elsif/else chain and the nested if: one rule per branch, conditions combined
    kinds = [[a.kind for a in r.actions] for r in rules]
    assert ["copy"] in kinds and ["flag"] in kinds and ["move"] in kinds and ["keep"] in kinds
    lists = next(r for r in rules if r.actions and r.actions[0].target == "Lists")
    assert lists.conditions.text == 'not (subject contains "report") and list-id exists'
    nested = next(r for r in rules if r.actions[0].kind == "flag")
    assert nested.conditions.text == 'subject contains "report" and size over 1048576 bytes'
    assert rules[-1].actions[0].kind == "reply" and rules[-1].conditions is None
    assert all(r.where.startswith("roundcube:") for r in rules)


def test_reader_maps_the_servers_separator() -> None:
    rules = read_rules(
        "s", 'require "fileinto"; fileinto "Kunder.Åkesson AB";', folder_map=lambda f: f.replace(".", "/")
    )
    assert rules[0].actions[0].target == "Kunder/Åkesson AB"


def test_writer_output_parses_and_reads_back_as_owned_named_rules() -> None:
    routes = [
        Route("Tracked/Contoso", from_domains=("contoso.com",), subject_contains=('say "hi"', "back\\slash")),
        Route("Kunder/Åkesson AB", from_addresses=("sven@akesson.se",), to_addresses=("sales@example.com",)),
    ]
    text = w.script_text([w.rule_block(r, r.folder) for r in routes])
    assert w.is_ours(text)
    rules = read_rules("mailfiler", text, owned=True)
    assert [r.name for r in rules] == ["mailfiler: Tracked/Contoso", "mailfiler: Kunder/Åkesson AB"]
    assert rules[0].actions[0].target == "Tracked/Contoso" and rules[0].owned
    assert 'subject contains "say "hi"" or "back\\slash"' in rules[0].conditions.text
    assert set(w.rule_blocks(text)) == {r.rule_name for r in routes}


def test_include_goes_after_the_requires_and_leaves_the_rest_byte_for_byte() -> None:
    edit = w.add_include(USER_SCRIPT, "mailfiler")
    first_line_end = USER_SCRIPT.index("\n") + 1
    assert edit.text == USER_SCRIPT[:first_line_end] + edit.added + USER_SCRIPT[first_line_end:]
    assert ("mailfiler", False) in includes(edit.text)
    parse(edit.text)  # still a valid script
    # no requires at all: at the top
    assert w.add_include("keep;\n", "mf").text == 'require "include";\ninclude :personal :optional "mf";\nkeep;\n'
    # a require followed by a command on the same line
    text = w.add_include('require "fileinto"; fileinto "x";', "mf").text
    assert [c.name for c in parse(text)] == ["require", "require", "include", "fileinto"]


def _marked(script: str, tracked: dict[str, str | None], present: set[str] | None = None) -> dict[str, list[str]]:
    rules = read_rules("s", script)
    owners = [
        analyze.Owner("account:contoso", "Tracked/Contoso", frozenset({"contoso.com"}), frozenset({"bob@gmail.com"}))
    ]
    analyze.mark(rules, analyze.Context(tracked, present, owners, trash=lambda f: f.split("/")[0] == "Trash"))
    return {r.name: [m["kind"] for m in r.marks] for r in rules}


@pytest.mark.parametrize(
    ("test", "past"),
    [
        ('address :domain :is "from" "contoso.com"', True),
        ('address :domain :is "from" "eu.contoso.com"', True),  # a part of its mail
        ('address :domain :is "from" "fabrikam.com"', False),
        ('address :is "from" "bob@gmail.com"', True),  # a contact's address
        ('header :contains "from" "contoso"', True),
        ('address :matches "from" "*@contoso.com"', True),
        ('address :regex "from" "^.*@contoso\\\\.com$"', True),
        ('header :contains "subject" "newsletter"', False),  # nothing about the sender
        ('allof (address :domain :is "from" "contoso.com", header :contains "subject" "x")', True),
        ('allof (address :domain :is "from" "fabrikam.com", header :contains "subject" "x")', False),
        ('not address :domain :is "from" ["contoso.com", "gmail.com"]', False),
        ('not address :domain :is "from" "contoso.com"', True),  # bob@gmail.com is Contoso's too
        ('anyof (address :domain :is "from" "fabrikam.com", true)', True),  # all mail
        ('address :localpart :is "from" "contoso"', False),
        ('header :contains "from" "@"', False),  # too short to say anything
    ],
)
def test_rules_sending_a_records_mail_past_tracking_are_marked(test: str, past: bool) -> None:
    marks = _marked(f'require "fileinto"; if {test} {{ discard; }}', {"Tracked/Contoso": "account:contoso"})
    assert ("past-tracking" in marks["s #1"]) is past


def test_tracked_missing_and_trash_marks() -> None:
    script = """require ["fileinto", "copy"];
# rule:[in]
if address :domain :is "from" "contoso.com" { fileinto "Tracked/Contoso"; }
# rule:[copy]
if header :contains "subject" "x" { fileinto :copy "Tracked/Contoso"; }
# rule:[gone]
if header :contains "subject" "y" { fileinto "Old/Stuff"; }
# rule:[trash]
if address :is "from" "bob@gmail.com" { fileinto "Trash"; }
# rule:[forward]
if address :domain :is "from" "contoso.com" { redirect :copy "me@elsewhere.example"; }
# rule:[disabled]
if false { discard; }
"""
    marks = _marked(script, {"Tracked/Contoso": "account:contoso"}, {"INBOX", "Tracked/Contoso", "Trash"})
    assert marks == {
        "in": ["tracked"],
        "copy": ["tracked"],
        "gone": ["missing-folder"],
        "trash": ["past-tracking"],
        # the rule "in" has filed contoso.com's mail into the tracked folder already
        "forward": ["note"],
        "disabled": [],
    }


def test_a_discard_after_a_rule_that_files_the_mail_into_a_tracked_folder_loses_nothing() -> None:
    script = """require ["fileinto"];
# rule:[early discard]
if address :domain :is "from" "contoso.com" { discard; }
# rule:[early discard and stop]
if allof (address :domain :is "from" "contoso.com", header :contains "subject" "x") { discard; stop; }
# rule:[mailfiler: Tracked/Contoso]
if address :domain :is "from" "contoso.com" { fileinto "Tracked/Contoso"; }
# rule:[late discard]
if address :domain :is "from" "contoso.com" { discard; }
# rule:[late discard of bob]
if address :is "from" "bob@gmail.com" { discard; }
"""
    marks = _marked(script, {"Tracked/Contoso": "account:contoso"})
    assert marks == {
        "early discard": ["note"],  # discard cancels only the implicit keep: the later fileinto still runs
        "early discard and stop": ["past-tracking"],
        "mailfiler: Tracked/Contoso": ["tracked"],
        "late discard": ["note"],
        "late discard of bob": ["past-tracking"],
    }
