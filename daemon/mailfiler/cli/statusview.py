"""What ``mailfiler status`` prints: the daemons and the config in force,
the tracked and watched folders, track by tag, sync-back and server rules
(``--json`` gives the same data, built by :func:`mailfiler.store.reports.status`)."""

from __future__ import annotations

import click

from mailfiler.cli.output import Col, plural, table, when
from mailfiler.cli.serverrules import print_status as print_server_rules


def print_status(data: dict, problems: list, wide: bool) -> None:
    """The status as tables, for a person."""
    for d in data["daemons"]:
        click.echo(f"daemon on {d['host']} (pid {d['pid']}): {d['state']}, heartbeat {d['heartbeat_age_s']} s ago")
        click.echo(f"  config in force: {_in_force_text(d['config_in_force'], bool(problems))}")
        if d.get("config_error"):
            click.secho(f"  config error (previous config in force): {d['config_error']}", fg="red")
    if not data["daemons"]:
        click.echo("no daemon has run against this store yet")
    appointments = f", {plural(data['appointments'], 'appointment')}" if data["appointments"] else ""
    click.echo(
        f"{plural(data['activities'], 'e-mail activity', 'e-mail activities')} tracked{appointments},"
        f" {plural(data['shunted'], 'message')} in the shunt"
    )
    rows = [
        (
            mb["name"],
            f["folder"],
            f["regarding"] or "-",
            f["state"],
            when(f["last_sync"]),
            f["tracked"],
            f["shunted"],
            f["last_error"] or "",
        )
        for mb in data["mailboxes"]
        for f in mb["folders"]
    ]
    columns = [
        Col("mailbox", short=True), Col("folder"), Col("regarding", drop=1), Col("state", short=True),
        Col("last sync (UTC)", short=True, drop=3), Col("tracked", short=True), Col("shunted", short=True, drop=4),
        Col("last error", overflow="fold"),
    ]  # fmt: skip
    table(None, columns, rows, wide=wide)
    hints = {(mb["name"], f["hint"]) for mb in data["mailboxes"] for f in mb["folders"] if f["hint"]}
    for name, hint in sorted(hints):
        click.echo(f"hint ({name}): {hint}")
    watched = [
        (mb["name"], f["folder"], f["state"], when(f["last_sync"]), f["tracked"], f["skipped"], f["shunted"])
        for mb in data["mailboxes"]
        for f in mb["watched"]
    ]
    if watched:
        columns = [
            Col("mailbox", short=True), Col("folder"), Col("state", short=True),
            Col("last sync (UTC)", short=True, drop=2), Col("tracked", short=True),
            Col("not tracked", short=True, drop=1), Col("shunted", short=True, drop=3),
        ]  # fmt: skip
        table("auto-tracking: other folders watched", columns, watched, wide=wide)
    _print_tags(data)
    _print_sync_status(data, wide)
    print_server_rules(data["server_rules"])


def config_in_force(daemons: list[dict], config_path: str | None) -> None:
    """Each daemon's config in force (the file and the version it loaded last),
    against the file as it is now (``config_in_force`` in JSON)."""
    import hashlib
    import os
    from pathlib import Path

    spec = config_path or os.environ.get("MAILFILER_CONFIG")
    path = str(Path(spec).expanduser().absolute()) if spec else None
    try:
        now = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
    except OSError:
        now = None
    for d in daemons:
        sha = d.get("config_sha256")
        changed = None if d.get("config") != path or sha is None or now is None else sha != now
        d["config_in_force"] = {
            "path": d.get("config"),
            "loaded_at": d.get("config_loaded_at"),
            "sha256": sha,
            "file_changed_since": changed,
        }


def _in_force_text(info: dict, invalid: bool) -> str:
    text = f"{info['path']}" + (f", as loaded at {info['loaded_at']}" if info["loaded_at"] else "")
    if info["file_changed_since"]:
        text += "; the file has changed since" + (" and is not valid: the last good version runs" if invalid else "")
    return text


def _print_sync_status(data: dict, wide: bool) -> None:
    """Sync-back collections (mailfiler.sync): added to `data` as "sync" for --json too."""
    rows = [
        (s["mailbox"], s["kind"], s["location"], s["state"], when(s["last_sync"]), s["items"], s["shunted"],
         s["last_error"] or "")
        for s in data.get("sync", [])
    ]  # fmt: skip
    if rows:
        columns = [
            Col("mailbox", short=True), Col("kind", short=True), Col("where", drop=1), Col("state", short=True),
            Col("last sync (UTC)", short=True, drop=2), Col("items", short=True), Col("shunted", short=True, drop=3),
            Col("last error", overflow="fold"),
        ]  # fmt: skip
        table("sync-back: address books and calendars", columns, rows, wide=wide)


def _print_tags(data: dict) -> None:
    """Track by tag, a line per mailbox whose tags are followed."""
    for mb in data["mailboxes"]:
        tags = mb.get("tags")
        if not tags:
            continue
        last = when(tags["last_change"]) if tags["last_change"] else "none yet"
        click.echo(
            f"track by tag ({mb['name']}): {plural(tags['folders'], 'folder')} followed, last tag change applied"
            f" {last}; {plural(tags['tracked'], 'message')} tracked in other folders,"
            f" {plural(tags['untracked'], 'activity', 'activities')} untracked"
        )
