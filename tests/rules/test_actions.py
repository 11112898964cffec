"""Actions: regarding in every form, create, create_contact, categories, owner, skip/track."""

from __future__ import annotations

from pathlib import Path

from mailfiler.rules import CreateContactSpec, RecordFields, RegardingSpec, split_display_name
from tests.rules.helpers import facts, ruleset


def decide(tmp_path: Path, then: str, when: str = "{mailbox: alice}", **kw):
    rs = ruleset(tmp_path, f"rules:\n  - name: r\n    when: {when}\n    then: {then}\n")
    return rs.evaluate(facts(**kw))


def test_skip_and_track_words_and_keys(tmp_path: Path) -> None:
    assert decide(tmp_path, "skip").action == "skip"
    assert decide(tmp_path, "track").action == "track"
    assert decide(tmp_path, "{skip: true}").action == "skip"
    assert decide(tmp_path, "{track: true}").action == "track"
    d = decide(tmp_path, "skip")
    assert d.rule == "r" and d.regarding is None


def test_regarding_string(tmp_path: Path) -> None:
    d = decide(tmp_path, "{regarding: 'case:{n}'}", when="{subject: '(?P<n>CAS-\\d+)'}", subject="CAS-1")
    assert d.regarding == RegardingSpec("case", key="CAS-1")
    assert d.regarding.ref == "case:CAS-1"
    assert d.action == "track" and d.rule == "r"  # a regarding implies track


def test_regarding_by_key_name_and_field(tmp_path: Path) -> None:
    d = decide(tmp_path, "{regarding: {entity: account, key: contoso}}")
    assert d.regarding == RegardingSpec("account", key="contoso")
    d = decide(
        tmp_path,
        "{regarding: {entity: account, name: '{a}'}}",
        when="{folder: 'Clients/{a}'}",
        folder="Clients/Contoso Ltd",
    )
    assert d.regarding == RegardingSpec("account", name="Contoso Ltd")
    d = decide(
        tmp_path, "{regarding: {entity: contact, field: email, value: '{from.address}'}}", from_="Bob@Contoso.com"
    )
    assert d.regarding == RegardingSpec("contact", field="email", value="bob@contoso.com")
    d = decide(
        tmp_path, "{regarding: {entity: account, field: domain, value: '{from.domain}'}}", from_="bob@CONTOSO.com"
    )
    assert d.regarding == RegardingSpec("account", field="domain", value="contoso.com")
    assert "with domain" in d.regarding.describe()


def test_regarding_create_with_fields(tmp_path: Path) -> None:
    then = (
        "{regarding: {entity: account, name: '{a}', create: true, fields: "
        "{name: '{a} (client)', parent: 'account:{a|slug}', emails: ['{from.address}'], domains: ['{from.domain}']}}}"
    )
    d = decide(tmp_path, then, when="{folder: 'Kunder/{a}'}", folder="Kunder/Åkesson AB", from_="Eva <eva@akesson.se>")
    assert d.regarding == RegardingSpec(
        "account",
        name="Åkesson AB",
        create=True,
        fields=RecordFields(
            name="Åkesson AB (client)", parent="account:akesson-ab", emails=("eva@akesson.se",), domains=("akesson.se",)
        ),
    )
    assert d.regarding.describe() == "account named 'Åkesson AB' (created if missing)"


def test_empty_lookup_means_no_match(tmp_path: Path) -> None:
    rs = ruleset(
        tmp_path,
        """\
        rules:
          - name: r
            when: {subject: '(?P<n>\\d*)x'}
            then: {regarding: 'case:{n}'}
          - name: fallback
            then: track
        """,
    )
    d = rs.evaluate(facts(subject="x"))
    assert not d.trace[0].matched and "came out empty" in d.trace[0].why
    assert d.rule == "fallback" and d.regarding is None


def test_create_contact(tmp_path: Path) -> None:
    d = decide(tmp_path, "{create_contact: true}", from_="Smith, Bob <bob@contoso.com>")
    assert d.create_contact == CreateContactSpec("contact", True, "bob@contoso.com", "Smith, Bob", "Bob", "Smith")
    assert d.action is None  # creating a contact decides nothing about tracking
    d = decide(tmp_path, "{create_contact: {entity: lead, parent_by_domain: false}}", from_="bob.smith@x.com")
    assert d.create_contact == CreateContactSpec("lead", False, "bob.smith@x.com", "", "Bob", "Smith")
    assert decide(tmp_path, "{create_contact: true}").create_contact is None  # no From
    assert decide(tmp_path, "{create_contact: false, track: true}").create_contact is None


def test_categories_and_owner(tmp_path: Path) -> None:
    d = decide(
        tmp_path,
        "{categories: [vip, 'client:{a}', vip], owner: Alice@Example.com}",
        when="{folder: 'C/{a}'}",
        folder="C/x",
    )
    assert d.categories == ("vip", "client:x")
    assert d.owner == "alice@example.com"
    assert d.action is None and d.rule is None


def test_builtin_template_names(tmp_path: Path) -> None:
    then = "{categories: ['{subject}|{mailbox}|{folder}|{direction}|{from.address}|{from.name}|{from.domain}|{from.local}|{from.first}|{from.last}']}"
    d = decide(tmp_path, then, subject="Hi", folder="F", from_="Smith, Bob <bob@contoso.com>", direction="outgoing")
    assert d.categories == ("Hi|alice|F|outgoing|bob@contoso.com|Smith, Bob|contoso.com|bob|Bob|Smith",)
    d = decide(tmp_path, then)  # no From, no folder: empty, never an error
    assert d.categories == ("|alice||incoming||||||",)


def test_split_display_name() -> None:
    assert split_display_name("Smith, Bob") == ("Bob", "Smith")
    assert split_display_name("Bob Smith") == ("Bob", "Smith")
    assert split_display_name("bob.smith@x") == ("Bob", "Smith")
    assert split_display_name("", "bob.smith@x.com") == ("Bob", "Smith")
    assert split_display_name("", "bob_smith+crm@x.com") == ("Bob", "Smith")
    assert split_display_name("", "info@x.com") == ("", "Info")
    assert split_display_name("Bob") == ("Bob", "")
    assert split_display_name("Bob van der Berg") == ("Bob", "van der Berg")
    assert split_display_name('"Smith, Bob"') == ("Bob", "Smith")
    assert split_display_name("Conan O'Brien") == ("Conan", "O'Brien")
    assert split_display_name("Bob Smith (Contoso)") == ("Bob", "Smith")
    assert split_display_name("Åsa Öberg") == ("Åsa", "Öberg")
    assert split_display_name("", "") == ("", "")
