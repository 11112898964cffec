"""Which records an address stands for: precedence, domains, ambiguity, case."""

from __future__ import annotations

from pathlib import Path

from mailfiler.config.schema import BUILTIN_ENTITIES
from mailfiler.service.runtime import sync_config
from mailfiler.store.records import ENTITY_PRECEDENCE, RecordInput, read_records_file, resolve_address, upsert_records
from tests.store.helpers import Store

PRECEDENCE = [*ENTITY_PRECEDENCE, "project"]
KNOWN = [*BUILTIN_ENTITIES, "project"]


def _refs(address: str, ambiguous: str = "all") -> list[str]:
    return [r.ref for r in resolve_address(address, precedence=PRECEDENCE, ambiguous=ambiguous)]


def _import(*items: RecordInput) -> None:
    upsert_records(list(items), known_entities=KNOWN)


def test_entity_precedence_constant() -> None:
    assert ENTITY_PRECEDENCE[:4] == ("user", "contact", "account", "lead")


PRECEDENCE_CASES = [
    (("user", "contact", "account", "lead", "case", "project"), "user"),
    (("contact", "account", "lead", "case", "project"), "contact"),
    (("account", "lead", "case", "project"), "account"),
    (("lead", "case", "project"), "lead"),
    (("project", "case"), "case"),  # built-in "others" in declaration order, then custom types
    (("project",), "project"),
]


def test_exact_email_precedence(store: Store) -> None:
    # one shared address per case; records created in reverse precedence
    # order so that insertion order cannot be what decides
    for n, (present, _) in enumerate(PRECEDENCE_CASES):
        _import(*(RecordInput(e, f"k{n}", f"{e} {n}", [f"shared{n}@contoso.com"]) for e in reversed(present)))
    for n, (_, winner) in enumerate(PRECEDENCE_CASES):
        assert _refs(f"shared{n}@contoso.com") == [f"{winner}:k{n}"], PRECEDENCE_CASES[n]


def test_exact_email_beats_domain_whatever_the_entity(store: Store) -> None:
    _import(
        RecordInput("user", "owner", "Owner", domains=["contoso.com"]),
        RecordInput("account", "contoso", "Contoso", domains=["contoso.com"]),
        RecordInput("lead", "anna", "Anna", ["anna@contoso.com"]),
    )
    assert _refs("anna@contoso.com") == ["lead:anna"]
    # no exact match: the domain decides, by precedence
    assert _refs("bob@contoso.com") == ["user:owner"]
    assert _refs("bob@fabrikam.com") == []


def test_domain_match_is_on_the_whole_domain(store: Store) -> None:
    _import(RecordInput("account", "contoso", "Contoso", domains=["contoso.com"]))
    assert _refs("a@mail.contoso.com") == []
    assert _refs("a@notcontoso.com") == []
    assert _refs("a@contoso.com") == ["account:contoso"]


def test_ambiguous_all_links_every_record_of_the_winning_type(store: Store) -> None:
    _import(
        RecordInput("contact", "a", "A", ["info@contoso.com"]),
        RecordInput("contact", "b", "B", ["info@contoso.com"]),
        RecordInput("account", "contoso", "Contoso", ["info@contoso.com"]),
    )
    assert _refs("info@contoso.com", "all") == ["contact:a", "contact:b"]
    assert _refs("info@contoso.com", "none") == []


def test_ambiguous_domains(store: Store) -> None:
    _import(
        RecordInput("account", "a", "A", domains=["contoso.com"]),
        RecordInput("account", "b", "B", domains=["contoso.com"]),
    )
    assert _refs("x@contoso.com", "all") == ["account:a", "account:b"]
    assert _refs("x@contoso.com", "none") == []


def test_ambiguity_only_counts_the_winning_type(store: Store) -> None:
    _import(
        RecordInput("contact", "a", "A", ["info@contoso.com"]),
        RecordInput("account", "x", "X", ["info@contoso.com"]),
        RecordInput("account", "y", "Y", ["info@contoso.com"]),
    )
    assert _refs("info@contoso.com", "none") == ["contact:a"]


def test_case_insensitive(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(
        "entity,key,name,emails,domains,parent\n"
        "contact,anna,Anna,Anna.Andersson@Contoso.COM,,\n"
        "account,fab,Fabrikam,,FABRIKAM.com,\n",
        encoding="utf-8",
    )
    upsert_records(read_records_file(path), known_entities=KNOWN)
    assert _refs("anna.andersson@contoso.com") == ["contact:anna"]
    assert _refs("ANNA.ANDERSSON@CONTOSO.COM") == ["contact:anna"]
    assert _refs("Someone@Fabrikam.Com") == ["account:fab"]


def test_case_insensitive_for_config_seeded_records(store: Store) -> None:
    config = store.config(
        records=[{"entity": "contact", "key": "bo", "name": "Bo", "emails": ["Bo@Contoso.com"], "domains": ["X.ORG"]}]
    )
    sync_config(store.db, config)
    assert _refs("bo@contoso.COM") == ["contact:bo"]
    assert _refs("anyone@x.org") == ["contact:bo"]


def test_case_insensitive_through_the_api(store: Store) -> None:
    _import(RecordInput("contact", "cy", "Cy", ["Cy@Contoso.com"], ["Contoso.COM"]))
    assert _refs("cy@contoso.com") == ["contact:cy"]
    assert _refs("other@contoso.com") == ["contact:cy"]
