"""``mailfiler folders``: what a mailbox holds, and which folders are tracked."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from mailfiler.cli.errors import handle_errors
from mailfiler.cli.output import emit_json, json_option, table
from mailfiler.errors import NotFound


@click.group()
def folders() -> None:
    """A mailbox's folders (any backend), read from the mailbox itself.

    Shows which are tracked (with the record each stands for), which
    auto-tracking watches, and which tracked folders do not exist yet;
    `folders create` makes those.  Needs no store and no running daemon.
    """


def _mailboxes(cfg: Any, name: str | None) -> list[Any]:
    if name is None:
        return list(cfg.mailboxes)
    chosen = [mb for mb in cfg.mailboxes if mb.name == name]
    if not chosen:
        known = ", ".join(m.name for m in cfg.mailboxes) or "none"
        raise NotFound(f"no mailbox named {name!r} in the config (mailboxes: {known})")
    return chosen


async def _survey(mb: Any) -> list[dict[str, Any]]:
    from mailfiler.backends import backend_of
    from mailfiler.tracking.autotrack import FolderFilter

    present = await backend_of(mb).folders(mb)
    tracked = {tf.folder: tf.regarding for tf in mb.tracked_folders}
    watched = FolderFilter(mb.auto_track)
    rows = []
    for folder in sorted(set(present) | set(tracked)):
        if folder in tracked:
            kind = "tracked"
        elif watched(folder):
            kind = "watched"
        else:
            kind = "-"
        rows.append(
            {
                "mailbox": mb.name,
                "folder": folder,
                "exists": folder in present,
                "kind": kind,
                "regarding": tracked.get(folder),
            }
        )
    return rows


@folders.command("list")
@click.option("--mailbox", metavar="NAME", help="Only this mailbox (default: all in the config).")
@json_option
@click.pass_obj
@handle_errors
def list_(obj: Any, mailbox: str | None, as_json: bool) -> None:
    """List the mailbox's folders: tracked (and regarding what), watched by
    auto-tracking, or neither; and tracked folders that are missing."""
    cfg = obj.load().config
    rows = [row for mb in _mailboxes(cfg, mailbox) for row in asyncio.run(_survey(mb))]
    if as_json:
        emit_json(rows)
        return
    table(
        None,
        ["mailbox", "folder", "kind", "regarding", "exists"],
        [
            (r["mailbox"], r["folder"], r["kind"], r["regarding"] or "", "yes" if r["exists"] else "MISSING")
            for r in rows
        ],
    )
    if any(not r["exists"] for r in rows):
        click.echo("`mailfiler folders create` makes the missing tracked folders.", err=True)


async def _create_missing(mb: Any, dry_run: bool) -> list[str]:
    from mailfiler.backends import make_source

    source = make_source(mb)
    await source.open()
    try:
        missing = [tf.folder for tf in mb.tracked_folders if not await source.folder_exists(tf.folder)]
        if not dry_run:
            for folder in missing:
                await source.create_folder(folder)
    finally:
        await source.close()
    return missing


@folders.command("create")
@click.option("--mailbox", metavar="NAME", help="Only this mailbox (default: all in the config).")
@click.option("--dry-run", is_flag=True, help="Say what would be created; create nothing.")
@json_option
@click.pass_obj
@handle_errors
def create(obj: Any, mailbox: str | None, dry_run: bool, as_json: bool) -> None:
    """Create the tracked folders that do not exist in the mailbox yet
    (on IMAP they are also subscribed, so mail clients show them)."""
    cfg = obj.load().config
    made = {mb.name: asyncio.run(_create_missing(mb, dry_run)) for mb in _mailboxes(cfg, mailbox)}
    if as_json:
        emit_json({"dry_run": dry_run, "created": made})
        return
    verb = "would create" if dry_run else "created"
    for name, folder_list in made.items():
        for folder in folder_list:
            click.echo(f"{name}: {verb} {folder}")
    if not any(made.values()):
        click.echo("every tracked folder exists", err=True)
    sys.exit(0)
