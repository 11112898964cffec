"""``mailfiler rules server``: a mailbox's inbox rules on its mail server.

Registered under ``mailfiler rules`` by cli/main.py; the work is done in
:mod:`mailfiler.serverrules.runner`.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from mailfiler.cli.errors import EXIT_UNAVAILABLE, describe, handle_errors
from mailfiler.cli.output import emit_json, json_option, table
from mailfiler.errors import MailfilerError, NotFound, StoreError
from mailfiler.util.text import plural

_VERBS = {
    "create": "create rule",
    "update": "update rule",
    "delete": "delete rule",
    "include": "include mailfiler's script from",
    "activate": "create and activate script",
}
_MARK_LABEL = {
    "tracked": "TRACKED",
    "missing-folder": "MISSING FOLDER",
    "past-tracking": "PAST TRACKING",
    "note": "note",
}


def _mailboxes(cfg: Any, name: str | None) -> list[Any]:
    from mailfiler.backends import backend_of
    from mailfiler.serverrules.runner import backend_for

    if name is not None:
        chosen = [mb for mb in cfg.mailboxes if mb.name == name]
        if not chosen:
            known = ", ".join(m.name for m in cfg.mailboxes) or "none"
            raise NotFound(f"no mailbox named {name!r} in the config (mailboxes: {known})")
        backend_for(chosen[0])  # a Maildir: say so now
        return chosen
    return [mb for mb in cfg.mailboxes if backend_of(mb).server_rules is not None]


def _open_store(obj: Any) -> bool:
    """Open the store for the records (past-tracking marks); False when it cannot be read."""
    try:
        obj.open_store_for_reading()
        return True
    except StoreError as exc:
        click.secho(f"note: the store cannot be read ({exc}); past-tracking marks need its records", err=True)
        return False


@click.group("server", invoke_without_command=True)
@click.option("--mailbox", metavar="NAME", help="Only this mailbox (default: every mailbox on a server).")
@json_option
@click.pass_context
def server(ctx: click.Context, mailbox: str | None, as_json: bool) -> None:
    """The inbox rules on the mail server (Sieve over ManageSieve, Exchange's
    inbox rules over EWS, Microsoft 365's over Graph).

    Lists each rule with its conditions and actions, read from the server
    now, and marks those that move or copy mail into a tracked folder
    (TRACKED), that file into a folder that does not exist (MISSING FOLDER),
    and that send a tracked folder's record's mail past tracking: discard,
    reject, redirect or forward it, or move it to Trash or Junk (PAST
    TRACKING).  Rules marked "mailfiler" are the ones it writes from the
    route: of tracked folders (`rules server apply`).  Exits 69 when a
    mailbox's rules could not be read.
    """
    if ctx.invoked_subcommand is not None:
        return
    _list(ctx.obj, mailbox, as_json)


@handle_errors
def _list(obj: Any, mailbox: str | None, as_json: bool) -> None:
    from mailfiler.serverrules.runner import survey

    cfg = obj.load().config
    chosen = _mailboxes(cfg, mailbox)
    with_store = _open_store(obj)
    results: list[dict[str, Any]] = []
    failed = False
    for mb in chosen:
        try:
            results.append(asyncio.run(survey(mb, list(cfg.records), with_store=with_store)).to_json())
        except MailfilerError as exc:
            if mailbox is not None:
                raise
            failed = True
            _, _, hint = describe(exc)
            results.append({"mailbox": mb.name, "error": str(exc), "hint": hint or None})
    if as_json:
        emit_json(results)
    else:
        for data in results:
            _print_mailbox(data)
        if not results:
            click.echo("no mailbox on a mail server in the config")
    if failed:
        sys.exit(EXIT_UNAVAILABLE)


def _print_mailbox(data: dict[str, Any]) -> None:
    name = data["mailbox"]
    if "error" in data:
        click.secho(f"{name}: error: {data['error']}", fg="red", err=True)
        if data.get("hint"):
            click.echo(f"hint: {data['hint']}", err=True)
        return
    scripts = ", ".join(
        f"{s['name']} ({s['state']}{', mailfiler' if s['owned'] else ''}{', BROKEN' if s['broken'] else ''})"
        for s in data["scripts"]
    )
    rows = []
    for r in data["rules"]:
        marks = [f"{_MARK_LABEL.get(m['kind'], m['kind'])}: {m['text']}" for m in r["marks"]]
        if r["owned"]:
            marks.insert(0, "mailfiler")
        if not r["enabled"]:
            marks.insert(0, "disabled")
        actions = "; ".join(a["text"] for a in r["actions"]) or "-"
        rows.append((r["name"], r["where"], r["condition_text"], actions, "\n".join(marks)))
    table(
        # Sieve names its scripts; Exchange's rules are one list
        f"{name}: {plural(len(rows), 'rule')} on the server ({data['backend']}{': ' + scripts if scripts else ''})",
        ["rule", "where", "when", "then", "marks"],
        rows,
    )
    for line in data["problems"]:
        click.secho(f"{name}: problem: {line}", fg="red")
    for line in data["warnings"]:
        click.secho(f"{name}: warning: {line}", fg="yellow")
    for line in data["notes"]:
        click.echo(f"{name}: note: {line}")


@server.command("apply")
@click.option("--mailbox", metavar="NAME", help="Only this mailbox (default: every mailbox on a server).")
@click.option("--dry-run", is_flag=True, help="Show the changes; write nothing.")
@json_option
@click.pass_obj
@handle_errors
def apply(obj: Any, mailbox: str | None, dry_run: bool, as_json: bool) -> None:
    """Bring mailfiler's rules on the server in step with the route: of the
    tracked folders: create, update and delete its named rules (one per
    tracked folder with a route, named "mailfiler: FOLDER").  On Sieve they
    live in a script of their own that the active script includes (the
    first apply adds that include); on Exchange and Microsoft 365 they are
    inbox rules found by their names.  Your own rules are never changed.  A
    broken script is reported, not overwritten.  The daemon does the same
    on its interval.
    """
    from mailfiler.serverrules.runner import plan, routes_of

    cfg = obj.load().config
    chosen = [mb for mb in _mailboxes(cfg, mailbox) if mailbox is not None or routes_of(mb) or mb.server_rules]
    out = []
    for mb in chosen:

        async def one(mb: Any = mb) -> Any:
            backend, p = await plan(mb)
            if not dry_run:
                await backend.apply(p)
            return p

        p = asyncio.run(one())
        out.append({**p.to_json(), "dry_run": dry_run})
    if as_json:
        emit_json(out)
        return
    for p in out:
        if not p["changes"]:
            click.echo(f"{p['mailbox']}: mailfiler's rules are in step with the config")
        for c in p["changes"]:
            verb = _VERBS[c["op"]]
            click.echo(f"{p['mailbox']}: {'would ' if dry_run else ''}{verb} {c['name']}")
            if dry_run and c["detail"]:
                for line in c["detail"].rstrip("\n").splitlines():
                    click.echo(f"    {line}")
        for w in p["warnings"]:
            click.secho(f"{p['mailbox']}: warning: {w}", fg="yellow")
    if not out:
        click.echo("no tracked folder has a route: nothing to write")


def print_status(rows: list[dict[str, Any]]) -> None:
    """The server-rules part of `mailfiler status` (the daemon's last reading)."""
    if not rows:
        return
    table(
        "inbox rules on the server (the daemon's last reading)",
        ["mailbox", "read (UTC)", "rules", "into tracked", "by mailfiler", "warnings"],
        [
            (r["mailbox"], r.get("read_at", ""), r.get("rules", "-"), r.get("into_tracked", "-"),
             r.get("owned", "-"), len(r.get("warnings", [])) if not r.get("error") else "error")
            for r in rows
        ],
    )  # fmt: skip
    for r in rows:
        if r.get("error"):
            click.secho(f"{r['mailbox']}: server rules: {r['error']}", fg="red")
        for w in r.get("warnings", []):
            click.secho(f"{r['mailbox']}: server rules: {w}", fg="yellow")


__all__ = ["print_status", "server"]
