"""``mailfiler records``: import and list CRM records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailfiler.cli.errors import handle_errors
from mailfiler.cli.output import emit_json, json_option, table


@click.group()
def records() -> None:
    """CRM records (accounts, contacts, leads, cases, custom entities)."""


@records.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@json_option
@click.pass_obj
@handle_errors
def import_(obj: Any, file: Path, as_json: bool) -> None:
    """Load records from a CSV or YAML FILE (create or update by entity+key).

    \b
    Fields: entity, key, name, emails, domains, parent.
    CSV: a header row; list fields separated by ';' or ','.
      entity,key,name,emails,domains,parent
      account,contoso,Contoso Ltd,,contoso.com;contoso.co.uk,
      contact,bob,Bob Smith,bob@contoso.com,,account:contoso
    YAML: a list of mappings (or a `records:` list), lists as YAML lists.

    The whole file is imported in one transaction, or nothing is.
    Folders whose regarding names a record that did not exist are re-linked
    by the daemon on its next start or reload (SIGHUP).
    """
    from mailfiler.service.runtime import open_store
    from mailfiler.store.records import read_records_file, upsert_records

    cfg = obj.load().config
    open_store(cfg)
    items = read_records_file(file)
    result = upsert_records(items, known_entities=cfg.entity_types())
    data = {"file": str(file), "created": result.created, "updated": result.updated, "unchanged": result.unchanged}
    if as_json:
        emit_json(data)
    else:
        click.echo(f"{file}: {result.created} created, {result.updated} updated, {result.unchanged} unchanged")


@records.command("list")
@click.option("--entity", metavar="E", help="Only records of this entity type (account, contact, ...).")
@json_option
@click.pass_obj
@handle_errors
def list_(obj: Any, entity: str | None, as_json: bool) -> None:
    """List records with their addresses and parent."""
    from mailfiler.store.records import list_records, record_json

    obj.open_store_for_reading()
    data = [record_json(r) for r in list_records(entity)]
    if as_json:
        emit_json(data)
        return
    rows = [
        (r["ref"], r["name"], ", ".join(r["emails"] + ["@" + d for d in r["domains"]]), r["parent"] or "") for r in data
    ]
    table(f"{len(data)} records", ["record", "name", "addresses", "parent"], rows)
