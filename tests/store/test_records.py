"""CRM records: import from CSV and YAML, re-import, errors, custom entities."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailfiler.config.schema import BUILTIN_ENTITIES
from mailfiler.errors import RecordImportError
from mailfiler.store.models import Record, RecordAddress
from mailfiler.store.records import RecordInput, list_records, read_records_file, record_json, upsert_records
from tests.store.helpers import Store

KNOWN = list(BUILTIN_ENTITIES)

CSV_TEXT = """\
entity,key,name,emails,domains,parent
contact,bob,Bob Smith,Bob.Smith@Contoso.com;bob@contoso.co.uk,,account:contoso
account,contoso,Contoso Ltd,,contoso.com;@Contoso.CO.UK,
account,fabrikam,Fabrikam Inc.,info@fabrikam.com,fabrikam.com,
contact,åsa,Åsa Öberg,"asa@fabrikam.com, asa.oberg@example.org",,account:fabrikam
"""

YAML_TEXT = """\
records:
  - entity: contact
    key: bob
    name: Bob Smith
    emails: [Bob.Smith@Contoso.com, bob@contoso.co.uk]
    parent: account:contoso
  - entity: account
    key: contoso
    name: Contoso Ltd
    domains: [contoso.com, "@Contoso.CO.UK"]
  - {entity: account, key: fabrikam, name: Fabrikam Inc., emails: info@fabrikam.com, domains: fabrikam.com}
  - entity: contact
    key: åsa
    name: Åsa Öberg
    emails: ["asa@fabrikam.com", "asa.oberg@example.org"]
    parent: account:fabrikam
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _snapshot() -> list[dict[str, object]]:
    return [record_json(r) for r in list_records()]


EXPECTED = [
    {
        "ref": "account:contoso",
        "entity": "account",
        "key": "contoso",
        "name": "Contoso Ltd",
        "parent": None,
        "emails": [],
        "domains": ["contoso.co.uk", "contoso.com"],
    },
    {
        "ref": "account:fabrikam",
        "entity": "account",
        "key": "fabrikam",
        "name": "Fabrikam Inc.",
        "parent": None,
        "emails": ["info@fabrikam.com"],
        "domains": ["fabrikam.com"],
    },
    {
        "ref": "contact:bob",
        "entity": "contact",
        "key": "bob",
        "name": "Bob Smith",
        "parent": "account:contoso",
        "emails": ["bob.smith@contoso.com", "bob@contoso.co.uk"],
        "domains": [],
    },
    {
        "ref": "contact:åsa",
        "entity": "contact",
        "key": "åsa",
        "name": "Åsa Öberg",
        "parent": "account:fabrikam",
        "emails": ["asa.oberg@example.org", "asa@fabrikam.com"],
        "domains": [],
    },
]


@pytest.mark.parametrize(("name", "text"), [("records.csv", CSV_TEXT), ("records.yaml", YAML_TEXT)])
def test_import_with_parent_defined_later_in_the_file(store: Store, tmp_path: Path, name: str, text: str) -> None:
    items = read_records_file(_write(tmp_path, name, text))
    result = upsert_records(items, known_entities=KNOWN)
    assert (result.created, result.updated, result.unchanged) == (4, 0, 0)
    assert _snapshot() == EXPECTED


def test_csv_and_yaml_import_the_same_records(store: Store, tmp_path: Path) -> None:
    upsert_records(read_records_file(_write(tmp_path, "a.csv", CSV_TEXT)), known_entities=KNOWN)
    # the same records from YAML change nothing
    result = upsert_records(read_records_file(_write(tmp_path, "b.yml", YAML_TEXT)), known_entities=KNOWN)
    assert (result.created, result.updated, result.unchanged) == (0, 0, 4)
    assert _snapshot() == EXPECTED


def test_reimport_counts_unchanged_and_updated(store: Store, tmp_path: Path) -> None:
    path = _write(tmp_path, "records.csv", CSV_TEXT)
    upsert_records(read_records_file(path), known_entities=KNOWN)
    stamps = {r.ref: r.updated_at for r in Record.select()}

    again = upsert_records(read_records_file(path), known_entities=KNOWN)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 4)
    assert {r.ref: r.updated_at for r in Record.select()} == stamps

    changed = (
        "entity,key,name,emails,domains,parent\n"
        "contact,bob,Bob Smith,bob.smith@contoso.com,,account:fabrikam\n"  # lost an e-mail, new parent
        "account,contoso,Contoso Group,,contoso.com;contoso.co.uk,\n"  # renamed
        "account,fabrikam,Fabrikam Inc.,info@fabrikam.com,fabrikam.com;fabrikam.se,\n"  # added a domain
        "contact,åsa,Åsa Öberg,asa@fabrikam.com;asa.oberg@example.org,,account:fabrikam\n"  # the same
        "lead,new,New Lead,lead@example.net,,\n"
    )
    result = upsert_records(read_records_file(_write(tmp_path, "changed.csv", changed)), known_entities=KNOWN)
    assert (result.created, result.updated, result.unchanged) == (1, 3, 1)
    snap = {r["ref"]: r for r in _snapshot()}
    assert snap["contact:bob"]["emails"] == ["bob.smith@contoso.com"]
    assert snap["contact:bob"]["parent"] == "account:fabrikam"
    assert snap["account:contoso"]["name"] == "Contoso Group"
    assert snap["account:fabrikam"]["domains"] == ["fabrikam.com", "fabrikam.se"]
    assert snap["lead:new"]["emails"] == ["lead@example.net"]
    after = {r.ref: r.updated_at for r in Record.select()}
    assert after["contact:åsa"] == stamps["contact:åsa"]
    for ref in ("contact:bob", "account:contoso", "account:fabrikam"):
        assert after[ref] >= stamps[ref]


def test_dropping_the_parent_is_an_update(store: Store, tmp_path: Path) -> None:
    upsert_records(read_records_file(_write(tmp_path, "a.csv", CSV_TEXT)), known_entities=KNOWN)
    text = "entity,key,name,emails,domains,parent\ncontact,bob,Bob Smith,bob.smith@contoso.com;bob@contoso.co.uk,,\n"
    result = upsert_records(read_records_file(_write(tmp_path, "b.csv", text)), known_entities=KNOWN)
    assert (result.created, result.updated, result.unchanged) == (0, 1, 0)
    assert Record.get(entity="contact", key="bob").parent_id is None


BAD_CSV = """\
entity,key,name,emails,domains,parent
account,contoso,Contoso Ltd,,contoso.com,
contact,,No Key,nokey@contoso.com,,
contact,bob,Bob Smith,not-an-address,,
contact,eve,,eve@contoso.com,,
contact,carl,Carl,carl@contoso.com,,contoso
"""


def test_bad_csv_reports_every_problem_with_file_and_row_and_imports_nothing(store: Store, tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.csv", BAD_CSV)
    with pytest.raises(RecordImportError) as info:
        upsert_records(read_records_file(path), known_entities=KNOWN)
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"{path}:3: ") and "missing key" in problems[0]
    assert problems[1].startswith(f"{path}:4: ") and "'not-an-address' is not an e-mail address" in problems[1]
    assert problems[2].startswith(f"{path}:5: ") and "missing name" in problems[2]
    assert problems[3].startswith(f"{path}:6: ") and "parent" in problems[3]
    assert "nothing was imported" in str(info.value)
    assert Record.select().count() == 0


def test_bad_yaml_reports_every_problem_and_imports_nothing(store: Store, tmp_path: Path) -> None:
    text = """\
- {entity: account, key: contoso, name: Contoso Ltd}
- just a string
- {entity: contact, key: bob, name: Bob, phone: "+46 8 123"}
- {entity: contact, key: eve, emails: [eve@contoso.com]}
"""
    path = _write(tmp_path, "bad.yaml", text)
    with pytest.raises(RecordImportError) as info:
        read_records_file(path)
    problems = info.value.problems
    assert len(problems) == 3, problems
    assert problems[0] == f"{path}: record #2: expected a mapping"
    assert problems[1].startswith(f"{path}: record #3: unknown field(s) phone")
    assert problems[2] == f"{path}: record #4: missing name"
    assert Record.select().count() == 0


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "broken.yaml", "- entity: account\n  key: [unclosed\n")
    with pytest.raises(RecordImportError) as info:
        read_records_file(path)
    assert str(info.value).startswith(f"{path}:")
    assert "invalid YAML" in str(info.value)


def test_missing_parent_imports_nothing(store: Store, tmp_path: Path) -> None:
    text = (
        "entity,key,name,emails,domains,parent\n"
        "account,contoso,Contoso Ltd,,contoso.com,\n"
        "contact,bob,Bob Smith,bob@contoso.com,,account:nosuch\n"
        "contact,eve,Eve,eve@contoso.com,,account:missing\n"
    )
    path = _write(tmp_path, "orphans.csv", text)
    with pytest.raises(RecordImportError) as info:
        upsert_records(read_records_file(path), known_entities=KNOWN)
    assert info.value.problems == [
        f"{path}:3: parent account:nosuch does not exist",
        f"{path}:4: parent account:missing does not exist",
    ]
    # the transaction rolled back: not even the valid account was kept
    assert Record.select().count() == 0
    assert RecordAddress.select().count() == 0


def test_unknown_entity_type_is_rejected(store: Store, tmp_path: Path) -> None:
    text = (
        "entity,key,name,emails,domains,parent\n"
        "account,contoso,Contoso Ltd,,contoso.com,\n"
        "project,p1,Project One,,,account:contoso\n"
        "vendor,v1,Vendor One,,,\n"
    )
    path = _write(tmp_path, "custom.csv", text)
    items = read_records_file(path)
    with pytest.raises(RecordImportError) as info:
        upsert_records(items, known_entities=KNOWN)
    assert len(info.value.problems) == 2
    assert info.value.problems[0].startswith(f"{path}:3: unknown entity type 'project'")
    assert info.value.problems[1].startswith(f"{path}:4: unknown entity type 'vendor'")
    assert Record.select().count() == 0


def test_custom_entity_types_are_accepted_when_declared(store: Store, tmp_path: Path) -> None:
    text = (
        "entity,key,name,emails,domains,parent\n"
        "project,p1,Project One,p1@projects.example.org,,account:contoso\n"
        "account,contoso,Contoso Ltd,,contoso.com,\n"
    )
    items = read_records_file(_write(tmp_path, "custom.csv", text))
    config = store.config(entities=[{"name": "project", "label": "Project"}])
    result = upsert_records(items, known_entities=config.entity_types())
    assert result.created == 2
    project = record_json(Record.get(entity="project", key="p1"))
    assert project["parent"] == "account:contoso"
    assert project["emails"] == ["p1@projects.example.org"]


def test_upsert_by_api_in_one_transaction(store: Store) -> None:
    items = [
        RecordInput("contact", "a", "A", ["a@contoso.com"], parent="account:contoso"),
        RecordInput("account", "contoso", "Contoso", domains=["contoso.com"]),
    ]
    assert upsert_records(items, known_entities=KNOWN).created == 2
    assert Record.get(entity="contact", key="a").parent.key == "contoso"


def test_unknown_file_type_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(RecordImportError, match="unknown file type"):
        read_records_file(_write(tmp_path, "records.json", "[]"))
