"""``mailfiler sync``, ``mailfiler contacts`` and ``mailfiler appointments``."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from mailfiler.cli.errors import handle_errors
from mailfiler.cli.output import Col, emit_json, json_option, plural, table, wide_option
from mailfiler.errors import NotFound


@click.command("sync")
@click.option("--mailbox", metavar="NAME", help="Only this mailbox (default: every mailbox with sync:).")
@click.option(
    "--force-delete",
    is_flag=True,
    help="Go on when one side looks empty although items were synced there (the empty-side guard).",
)
@click.option("--shunted", is_flag=True, help="Only list the items kept aside as unreadable, with their reason.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Show what a sync would do, item by item, and do none of it (the store is read as it is).",
)
@json_option
@wide_option
@click.pass_obj
@handle_errors
def sync(
    obj: Any, mailbox: str | None, force_delete: bool, shunted: bool, dry_run: bool, as_json: bool, wide: bool
) -> None:
    """Sync CRM contacts and appointments with each mailbox's address book and calendar, once.

    \b
    Both ways, item by item, against the state of the last sync:
      - a CRM item the mailbox's sync filters select goes to the user's side;
        one that stops matching is removed from it;
      - the user's edits come back into the CRM, field by field (sync.fields);
        when both sides changed one field, sync.conflicts decides and the
        conflict is logged with both values;
      - a contact or event with the category `Tracked` (sync.category), or in
        a collection under sync.tracked, becomes CRM data;
      - an item the user deleted: sync.on_mailbox_delete (unlink, restore,
        delete-in-crm).

    When a side that held synced items suddenly looks empty (a changed path, a
    wiped server), that collection is not synced and the command says so;
    --force-delete goes on.  An unreadable vCard or iCalendar item is kept
    aside (see `mailfiler status`) and the rest goes on.  The daemon runs the
    same sync on sync.interval and whenever a vdir folder changes.

    Exits 0 when every collection synced cleanly, 1 otherwise.
    """
    if shunted:
        _list_shunted(obj, mailbox, as_json)
        return
    if dry_run:
        _dry_run(obj, mailbox, force_delete, as_json, wide)
        return
    from mailfiler.service.runtime import manager_id, open_store, sync_config
    from mailfiler.sync.runner import sync_all

    loaded = obj.load()
    cfg = loaded.config
    names = [m.name for m in cfg.mailboxes if m.sync is not None]
    if mailbox is not None and mailbox not in names:
        known = ", ".join(names) or "none has sync:"
        raise NotFound(f"no mailbox {mailbox!r} with sync: in the config ({known})")
    db = open_store(cfg)
    try:
        sync_config(db, cfg, manager=manager_id(loaded.path))
        results = asyncio.run(sync_all(db, loaded, mailbox=mailbox, force_delete=force_delete))
    finally:
        db.close()
    data = [{"mailbox": name, **r.as_dict()} for name, rs in results.items() for r in rs]
    if as_json:
        emit_json(data)
    else:
        _sync_table(data, wide)
        for d in data:
            for error in d["errors"]:
                click.secho(f"{d['mailbox']} {d['kind']}: {error}", fg="red", err=True)
            if d["selected"] == 0 and d["crm_total"]:
                # the commonest surprise: the default filter is owner: mailbox, and imported
                # records have no owner
                what = "contacts" if d["kind"] == "contacts" else "appointments"
                click.echo(
                    f"{d['mailbox']} {d['kind']}: the sync filters select none of the CRM's {d['crm_total']}"
                    f' {what} (the default is sync.filters.{what}: [{{owner: mailbox}}]; README "Sync-back")'
                )
        if not data:
            click.echo("no mailbox has sync: in the config")
    if any(d["state"] != "ok" for d in data):
        sys.exit(1)


#: (key in a sync result, column header): the counts of one sync, in table order
_COUNTS = [
    ("uploaded", "to user"), ("updated_mailbox", "changed there"), ("deleted_mailbox", "deleted there"),
    ("created_crm", "new in CRM"), ("updated_crm", "changed in CRM"), ("deleted_crm", "deleted in CRM"),
    ("conflicts", "conflicts"), ("shunted", "shunted"),
]  # fmt: skip


def _sync_table(data: list[dict], wide: bool) -> None:
    """--wide: a column per count; otherwise the counts that are not zero in one
    "changes" column, so that the table fits 80 columns."""
    head = [Col("mailbox", short=True), Col("kind", short=True), Col("where", drop=1), Col("state", short=True)]
    if wide:
        rows = [
            (d["mailbox"], d["kind"], d["location"], d["state"], *(d[k] for k, _ in _COUNTS), d["items"]) for d in data
        ]
        table("mailfiler sync", [*head, *(Col(h, short=True) for _, h in _COUNTS), Col("items")], rows, wide=True)
        return
    rows = [
        (
            d["mailbox"],
            d["kind"],
            d["location"],
            d["state"],
            ", ".join(f"{d[k]} {h}" for k, h in _COUNTS if d[k]) or "none",
            d["items"],
        )
        for d in data
    ]
    table("mailfiler sync", [*head, Col("changes"), Col("items", short=True)], rows, wide=False)


def _dry_run(obj: Any, mailbox: str | None, force_delete: bool, as_json: bool, wide: bool) -> None:
    from mailfiler.service.runtime import open_store
    from mailfiler.sync.preview import plan_all

    loaded = obj.load()
    names = [m.name for m in loaded.config.mailboxes if m.sync is not None]
    if mailbox is not None and mailbox not in names:
        raise NotFound(f"no mailbox {mailbox!r} with sync: in the config ({', '.join(names) or 'none has sync:'})")
    db = open_store(loaded.config)
    try:
        data = asyncio.run(plan_all(db, loaded, mailbox=mailbox, force_delete=force_delete))
    finally:
        db.close()
    if as_json:
        emit_json(data)
    else:
        rows = [
            (d["mailbox"], d["kind"], a["op"], a["side"], a.get("name") or a.get("href") or "", a["reason"])
            for d in data
            for a in d["actions"]
        ]
        columns = [Col("mailbox", short=True), Col("kind", short=True), Col("action", short=True),
                   Col("writes", short=True), Col("item"), Col("why", drop=1)]  # fmt: skip
        table(f"mailfiler sync --dry-run: {plural(len(rows), 'action')}, none performed", columns, rows, wide=wide)
        for d in data:
            for error in d["errors"]:
                click.secho(f"{d['mailbox']} {d['kind']}: {error}", fg="red", err=True)
    if any(d["state"] != "ok" for d in data):
        sys.exit(1)


def _list_shunted(obj: Any, mailbox: str | None, as_json: bool) -> None:
    from mailfiler.sync import reports

    obj.open_store_for_reading()
    data = [s for s in reports.shunted() if mailbox is None or s["mailbox"] == mailbox]
    if as_json:
        emit_json(data)
        return
    rows = [
        (s["id"], s["mailbox"], s["collection"], s["href"], s["reason"], s["attempts"], s["detail"][:80]) for s in data
    ]
    columns = ["id", "mailbox", "collection", "item", "reason", "tries", "detail"]
    table(f"{plural(len(data), 'item')} kept aside (read again when they change)", columns, rows)


@click.group()
def contacts() -> None:
    """CRM contacts with their details (names, addresses, phones, company)."""


@contacts.command("list")
@click.option("--owner", metavar="EMAIL", help="Only contacts this user owns.")
@json_option
@click.pass_obj
@handle_errors
def contacts_list(obj: Any, owner: str | None, as_json: bool) -> None:
    """List contacts; --json gives every field."""
    from mailfiler.sync import reports

    obj.open_store_for_reading()
    data = reports.contacts(owner=owner)
    if as_json:
        emit_json(data)
        return
    rows = [
        (c["ref"], c["name"], ", ".join(c["emails"]), ", ".join(p[1] for p in c["phones"]), c["company"],
         c["job_title"], c["owner"] or "-")
        for c in data
    ]  # fmt: skip
    table(plural(len(data), "contact"), ["ref", "name", "e-mail", "phone", "company", "title", "owner"], rows)


@click.group()
def appointments() -> None:
    """CRM appointments (activities of kind appointment)."""


@appointments.command("list")
@click.option("--regarding", metavar="ENTITY:KEY", help="Only appointments regarding this record.")
@json_option
@click.pass_obj
@handle_errors
def appointments_list(obj: Any, regarding: str | None, as_json: bool) -> None:
    """List appointments by start; --json gives every field, recurrence included.

    Times keep their zone: 2024-03-31T09:00:00[Europe/Stockholm]; a date alone
    is an all-day appointment.
    """
    from mailfiler.sync import reports

    obj.open_store_for_reading()
    data = reports.appointments(regarding=regarding)
    if as_json:
        emit_json(data)
        return
    rows = [
        (a["id"], a["start"], a["end"] or "", a["subject"][:60], a["location"][:30], a["regarding"] or "-",
         a["rrule"] or "", a["status"])
        for a in data
    ]  # fmt: skip
    columns = [
        Col("id", short=True), Col("start", overflow="fold"), Col("end", overflow="fold", drop=3), Col("subject"),
        Col("location", drop=2), Col("regarding", short=True), Col("repeats", drop=1),
        Col("status", short=True, drop=4),
    ]  # fmt: skip
    table(plural(len(data), "appointment"), columns, rows)
