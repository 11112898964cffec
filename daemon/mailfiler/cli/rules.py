"""``mailfiler rules``: check rule files, try the rules on a message, and
re-apply them to tracked mail.

``rules check`` and ``rules test`` write nothing: ``rules test`` opens the
store read-only (to resolve addresses, look up records and correlate), and
only when it already exists at the latest schema version.  ``rules apply``
changes regarding, one transaction per activity, unless ``--dry-run``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from mailfiler.cli.errors import EXIT_CONFIG, handle_errors, report
from mailfiler.cli.output import emit_json, json_option, table
from mailfiler.cli.rulestest import connect_existing, rules_test_result, schema_problem
from mailfiler.config.schema import BUILTIN_ENTITIES
from mailfiler.errors import ConfigError
from mailfiler.util.text import plural

__all__ = ["rules", "rules_test_result"]


@click.group()
def rules() -> None:
    """Check rule files, try them on a message, re-apply them to tracked mail (rules/README.md)."""


@rules.command("check")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@json_option
@click.pass_obj
def check(obj: Any, files: tuple[Path, ...], as_json: bool) -> None:
    """Check the rule files the config lists (or FILES): every problem as FILE:LINE:COL: message.

    FILES may be rule files or folders (their *.yaml and *.yml files, in name
    order).  Entity types come from the config when one is given, else the
    built-in ones.  Exits 0 when the rules are valid, 78 (EX_CONFIG) otherwise.
    """
    from mailfiler.rules import check_rules

    try:
        if files:
            cfg = obj.load().config if obj.config_path else None
            paths = list(files)
        else:
            cfg = obj.load().config
            paths = list(cfg.rules)
    except ConfigError as exc:
        _fail(exc.problems or [str(exc)], as_json, exc)
        return
    entities = cfg.entity_types() if cfg is not None else list(BUILTIN_ENTITIES)
    ruleset, problems = check_rules(paths, known_entities=entities)
    if problems:
        _fail(problems, as_json, None)
        return
    summary = {
        "valid": True,
        "files": [str(p) for p in ruleset.sources],
        "rules": len(ruleset.rules),
        "names": [r.name for r in ruleset.rules],
    }
    if as_json:
        emit_json(summary)
    elif not paths:
        click.echo("the config lists no rules: (nothing to check)")
    else:
        click.echo(f"{plural(len(ruleset.rules), 'rule')} in {plural(len(ruleset.sources), 'file')}: OK")


def _fail(problems: list[Any], as_json: bool, exc: ConfigError | None) -> None:
    if as_json:
        emit_json({"valid": False, "problems": [str(p) for p in problems]})
        sys.exit(EXIT_CONFIG)
    if exc is not None and not exc.problems:
        sys.exit(report(exc))
    for problem in problems:
        click.echo(str(problem), err=True)
    sys.exit(EXIT_CONFIG)


@rules.command("test")
@click.argument("message", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mailbox", metavar="NAME", help="The mailbox the message is in (default: the first in the config).")
@click.option("--folder", metavar="PATH", help='The folder it is in, written with "/" (default: none, the Inbox).')
@json_option
@click.pass_obj
@handle_errors
def test(obj: Any, message: Path, mailbox: str | None, folder: str | None, as_json: bool) -> None:
    """Show what the daemon would do with MESSAGE (an .eml file), writing nothing.

    Prints the rules' decision and trace (each rule tried, whether it
    matched, its captures, and why), what correlation finds in the store
    (In-Reply-To, References, token, smart), and the final answer: tracked
    or not, the regarding, how it was decided, and why.

    \b
    In a tracked folder (--folder): always tracked; the folder's regarding
      wins, else the rules', else the thread's (correlation).
    Anywhere else, or without --folder (the Inbox): auto-tracking decides,
      in this order: the watched folders, the never-track lists, the rules,
      auto-replies, then the mailbox's policy (none/replies/known/all).

    \b
    Examples:
      mailfiler rules test reply.eml
      mailfiler rules test invoice.eml --mailbox alice --folder Clients/Contoso --json

    The store is opened read-only, and only when it already exists at the
    current schema.  Without it, addresses resolve to no record and
    correlation finds nothing; the output says so.
    """
    from mailfiler.rules import load_rules

    cfg = obj.load().config
    ruleset = load_rules(cfg.rules, known_entities=cfg.entity_types())
    result = rules_test_result(cfg, ruleset, message.read_bytes(), source=str(message), mailbox=mailbox, folder=folder)
    if as_json:
        emit_json(result)
    else:
        _print_result(result)


# -- text output ---------------------------------------------------------------------------


def _print_result(result: dict[str, Any]) -> None:
    m, d = result["message"], result["decision"]
    click.echo(f"message:   {m['file']}  {m['message_id']}")
    click.echo(f"subject:   {m['subject']}")
    click.echo(f"from:      {', '.join(m['from']) or '-'}  ({m['direction']}, mailbox {m['mailbox'] or '-'})")
    click.echo(f"folder:    {m['folder'] or '(none)'}")
    entities = (
        f"sender: {', '.join(m['sender_entities']) or '-'}; recipients: {', '.join(m['recipient_entities']) or '-'}"
    )
    click.echo(f"resolves:  {entities}  [store: {result['store']}]")
    if m["auto_submitted"]:
        click.echo(f"auto:      {m['auto_submitted']}")
    regarding = d["regarding"]
    click.echo(f"action:    {d['action'] or '(rules say nothing)'}")
    if regarding:
        click.echo(f"regarding: {d['regarding_text']}  (rule {d['rule']})")
    if d["create_contact"]:
        cc = d["create_contact"]
        click.echo(f"contact:   create {cc['entity']} {cc['first']} {cc['last']} <{cc['address']}> if unknown")
    if d["categories"]:
        click.echo(f"categories: {', '.join(d['categories'])}")
    if d["owner"]:
        click.echo(f"owner:     {d['owner']}")
    click.echo(f"rules:     {result['summary']}")
    click.echo(f"correlation: {_correlation_line(result['correlation'])}")
    auto = result["auto_tracking"]
    if auto is not None:
        watched = "watched" if auto["watched"] else "not watched"
        click.echo(f"auto-track: {auto['folder']} {watched}, policy {auto['policy']}")
    _print_verdict(result["verdict"])
    rows = [
        (
            t["rule"],
            "yes" if t["matched"] else "no",
            ", ".join(f"{k}={v}" for k, v in t["captures"].items()),
            t["why"] + (f" [{', '.join(t['applied'])}]" if t["applied"] else ""),
        )
        for t in result["trace"]
    ]
    title = f"{len(rows)} of {plural(result['rules']['count'], 'rule')} tried"
    table(title, ["rule", "matched", "captures", "why"], rows)


def _correlation_line(corr: dict[str, Any]) -> str:
    if corr["note"]:
        return corr["note"]
    act = corr["activity"]
    if act is None:
        return "no tracked message in this thread"
    return (
        f"{corr['method']}: activity {act['id']} {act['message_id']} {act['subject']!r},"
        f" regarding {act['regarding'] or '(none)'}"
    )


def _print_verdict(v: dict[str, Any]) -> None:
    if not v["tracked"]:
        click.secho(f"=> not tracked: {v['reason']}", bold=True)
    else:
        what = f"regarding {v['regarding']} ({v['correlation']})" if v["regarding"] else "without a regarding"
        click.secho(f"=> tracked {what}", bold=True)
        click.echo(f"   why: {v['reason']}")
    for note in v["notes"]:
        click.echo(f"   note: {note}")


# -- rules apply ----------------------------------------------------------------------------


@rules.command("apply")
@click.option("--mailbox", metavar="NAME", help="Only activities held in (or owned by) this mailbox.")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing and create no records.")
@click.option("--all", "show_all", is_flag=True, help="List every activity, not only those that change or are kept.")
@json_option
@click.pass_obj
@handle_errors
def apply(obj: Any, mailbox: str | None, dry_run: bool, show_all: bool, as_json: bool) -> None:
    """Re-run the current rules and correlation over tracked activities.

    Use it after adding or changing a rule: mail tracked before gets the
    regarding the rules give now.  Each activity's message is read again from
    its mailbox (or, when no copy is left, rebuilt from the stored fields,
    without its headers) and decided as new mail in a folder without a
    regarding would be: the rule's regarding (a `create: true` rule creates
    its record), else its thread's (correlation), else it keeps its own.

    \b
    Never touched: mail filed in a folder with a regarding (the folder wins).
    Never done: clearing a regarding, or untracking mail the rules now skip.
    Changed: the regarding and how it was decided (`rule:NAME`, `in-reply-to`...);
      categories, owner and contacts set at tracking time stay.

    \b
    Examples:
      mailfiler rules apply --dry-run          # what would change, nothing written
      mailfiler rules apply --mailbox alice    # only alice's mail
      mailfiler rules apply --json             # {"activities": [...], "totals": {...}}

    Results: changed (would-change with --dry-run), unchanged, kept (nothing
    decides now, or the rules say skip), skipped-folder.  The table lists
    what changes or is kept; --all lists every activity.
    """
    from mailfiler.service.runtime import load_ruleset
    from mailfiler.store.migrations import migrate
    from mailfiler.tracking.reapply import reapply, totals

    cfg = obj.load().config
    ruleset = load_ruleset(cfg)
    db = connect_existing(cfg)
    try:
        if dry_run:
            problem = schema_problem(db)
            if problem is not None:
                raise problem
        else:
            migrate(db)
        results = asyncio.run(reapply(db, cfg, ruleset, mailbox=mailbox, dry_run=dry_run))
    finally:
        db.close()
    data = {
        "dry_run": dry_run,
        "mailbox": mailbox,
        "activities": [r.to_dict() for r in results],
        "totals": totals(results),
    }
    if as_json:
        emit_json(data)
    else:
        _print_apply(data, show_all)


def _print_apply(data: dict[str, Any], show_all: bool) -> None:
    quiet = {"unchanged", "skipped-folder"}
    rows = [
        (
            a["activity_id"],
            a["subject"][:50],
            _change(a["old_regarding"], a["new_regarding"]),
            _change(a["old_correlation"], a["new_correlation"]),
            a["result"],
            a["note"] or "",
        )
        for a in data["activities"]
        if show_all or a["result"] not in quiet
    ]
    counts = ", ".join(f"{n} {name}" for name, n in data["totals"].items() if n)
    title = f"{plural(len(data['activities']), 'e-mail activity', 'e-mail activities')}: {counts or 'none tracked'}"
    if rows:
        table(title, ["id", "subject", "regarding", "by", "result", "note"], rows)
    else:
        click.echo(title)
    if data["dry_run"]:
        click.echo("dry run: nothing was written")


def _change(old: str | None, new: str | None) -> str:
    return old or "-" if old == new else f"{old or '-'} -> {new or '-'}"
