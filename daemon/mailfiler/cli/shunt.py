"""``mailfiler shunt``: messages that could not be tracked."""

from __future__ import annotations

import sys
from typing import Any

import click

from mailfiler.cli.errors import handle_errors
from mailfiler.cli.output import emit_json, json_option, table
from mailfiler.util.text import plural


@click.group()
def shunt() -> None:
    """Messages kept aside because they could not be tracked.

    Each keeps its reason and a copy of its bytes under state_dir/shunt/.
    The source message is never touched.  Fix the cause (for example raise
    limits.max_message_bytes), then retry.
    """


@shunt.command("list")
@click.option("--all", "include_resolved", is_flag=True, help="Include messages already retried successfully.")
@json_option
@click.pass_obj
@handle_errors
def list_(obj: Any, include_resolved: bool, as_json: bool) -> None:
    """List shunted messages with their reason."""
    from mailfiler.store import reports

    obj.open_store_for_reading()
    data = reports.shunts(include_resolved=include_resolved)
    if as_json:
        emit_json(data)
        return
    rows = [
        (s["id"], s["mailbox"], s["folder"], s["source_id"][:40], s["reason"], s["attempts"], s["detail"][:80])
        for s in data
    ]
    columns = ["id", "mailbox", "folder", "source id", "reason", "tries", "detail"]
    table(plural(len(data), "shunted message"), columns, rows)


@shunt.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "retry_all", is_flag=True, help="Retry every pending shunted message.")
@json_option
@click.pass_obj
@handle_errors
def retry(obj: Any, ids: tuple[int, ...], retry_all: bool, as_json: bool) -> None:
    """Track shunted messages again: give IDs (from `shunt list`) or --all.

    Exits 0 when every retried message was tracked, 1 otherwise.
    """
    if not ids and not retry_all:
        raise click.UsageError("give one or more shunt IDs, or --all")
    from mailfiler.service.retry import retry as do_retry
    from mailfiler.service.runtime import build_services, manager_id, open_store

    loaded = obj.load()
    cfg = loaded.config
    services = build_services(open_store(cfg), cfg, manager=manager_id(loaded.path))
    results = do_retry(services, None if retry_all else list(ids))
    if as_json:
        emit_json(results)
    else:
        for r in results:
            line = f"shunt {r['id']}: {r['result']}"
            if r.get("reason"):
                line += f" ({r['reason']})"
            if r.get("message_id"):
                line += f" as {r['message_id']} regarding {r.get('regarding') or '-'}"
            if r.get("detail"):
                line += f": {r['detail']}"
            click.echo(line)
        if not results:
            click.echo("nothing to retry")
    if any(r["result"] not in ("tracked", "already-resolved") for r in results):
        sys.exit(1)
