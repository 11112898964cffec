"""``mailfiler rules``: check rule files, and try the rules on a message.

Neither command writes anything: ``rules test`` opens the store only to see
which records the message's addresses resolve to, and only when the store
already exists at the latest schema version.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from mailfiler.cli.errors import EXIT_CONFIG, handle_errors, report
from mailfiler.cli.output import emit_json, json_option, table
from mailfiler.config.schema import BUILTIN_ENTITIES, Config
from mailfiler.errors import ConfigError, MessageError, NotFound, UserError


@click.group()
def rules() -> None:
    """Check rule files and try them on a message (rules/README.md documents the language)."""


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
        click.echo(f"{len(ruleset.rules)} rule(s) in {len(ruleset.sources)} file(s): OK")


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
@click.option("--folder", metavar="PATH", help='The folder it is in, written with "/" (default: none).')
@json_option
@click.pass_obj
@handle_errors
def test(obj: Any, message: Path, mailbox: str | None, folder: str | None, as_json: bool) -> None:
    """Show what the rules decide for MESSAGE (an .eml file), writing nothing.

    Prints whether the rules track or skip it, the regarding, and the trace:
    each rule tried, whether it matched, its captures, and why.  Senders and
    recipients are resolved to records from the store when it exists.
    """
    from mailfiler.rules import load_rules

    cfg = obj.load().config
    ruleset = load_rules(cfg.rules, known_entities=cfg.entity_types())
    result = rules_test_result(cfg, ruleset, message.read_bytes(), source=str(message), mailbox=mailbox, folder=folder)
    if as_json:
        emit_json(result)
    else:
        _print_result(result)


def rules_test_result(
    cfg: Config,
    ruleset: Any,
    raw: bytes,
    *,
    source: str,
    mailbox: str | None,
    folder: str | None,
    resolve: bool = True,
) -> dict[str, Any]:
    """The result of ``rules test`` as a dict (the JSON output).

    The hook for adding more to what ``rules test`` explains (correlation,
    auto-tracking policy): extend the dict here and :func:`_print_result`.
    """
    from mailfiler.rules import Facts, auto_submitted_reason, direction_of
    from mailfiler.tracking.parse import parse_message

    try:
        msg = parse_message(raw)
    except MessageError as exc:
        raise UserError(f"{source}: {exc}") from None
    mb = _mailbox(cfg, mailbox)
    owner = mb.owner if mb is not None else None
    store_note, sender_entities, recipient_entities = "not read", set[str](), set[str]()
    if resolve:
        store_note, sender_entities, recipient_entities = _resolve(cfg, msg)
    facts = Facts.from_parsed(
        msg,
        None,  # the headers the parser kept: what the daemon's rules see
        mailbox=mb.name if mb is not None else "",
        folder=folder,
        direction=direction_of(msg.addresses.get("from", []), owner),
        sender_entities=sender_entities,
        recipient_entities=recipient_entities,
    )
    decision = ruleset.evaluate(facts)
    tracked = next(
        (tf for tf in (mb.tracked_folders if mb is not None else []) if folder is not None and tf.folder == folder),
        None,
    )
    data = decision.to_dict()
    data["regarding_text"] = decision.regarding.describe() if decision.regarding else None
    trace = data.pop("trace")
    if tracked is not None and tracked.regarding:
        note = f"the tracked folder's regarding {tracked.regarding} wins over any rule"
    elif decision.action == "track":
        note = "tracked, by rule " + str(decision.rule)
    elif decision.action == "skip":
        note = "not tracked: rule " + str(decision.rule) + " says skip"
    else:
        note = "the rules say nothing about tracking: the folder and the mailbox's policy decide"
    return {
        "message": {
            "file": source,
            "message_id": msg.message_id,
            "subject": msg.subject,
            "from": [a.address for a in facts.from_],
            "to": [a.address for a in facts.to],
            "cc": [a.address for a in facts.cc],
            "mailbox": facts.mailbox,
            "folder": folder,
            "direction": facts.direction,
            "auto_submitted": auto_submitted_reason(facts),
            "sender_entities": sorted(facts.sender_entities),
            "recipient_entities": sorted(facts.recipient_entities),
        },
        "tracked_folder": {"folder": tracked.folder, "regarding": tracked.regarding} if tracked else None,
        "store": store_note,
        "rules": {"files": [str(p) for p in ruleset.sources], "count": len(ruleset.rules)},
        "decision": data,
        "summary": note,
        "trace": trace,
    }


def _mailbox(cfg: Config, name: str | None) -> Any:
    if name is None:
        return cfg.mailboxes[0] if cfg.mailboxes else None
    for mb in cfg.mailboxes:
        if mb.name == name:
            return mb
    known = ", ".join(m.name for m in cfg.mailboxes) or "none"
    raise NotFound(f"no mailbox named {name!r} in the config (mailboxes: {known})")


def _resolve(cfg: Config, msg: Any) -> tuple[str, set[str], set[str]]:
    """(what happened, sender entity types, recipient entity types), read-only.

    Never creates or migrates a store: a missing SQLite file or an older
    schema means no resolution, and is said so."""
    import peewee

    from mailfiler.config.loader import sqlite_path
    from mailfiler.errors import MailfilerError
    from mailfiler.service.runtime import precedence
    from mailfiler.store import db as storedb
    from mailfiler.store.migrations import LATEST, current_version
    from mailfiler.store.records import resolve_addresses
    from mailfiler.util.secrets import read_secret

    path = sqlite_path(cfg.database)
    if cfg.database.startswith("sqlite:///") and (path is None or not path.exists()):
        return "no store yet: addresses not resolved", set(), set()
    try:
        password = (
            read_secret(cfg.database_password_file, what="database_password_file")
            if (cfg.database_password_file)
            else None
        )
        database = storedb.connect(cfg.database, password=password)
        try:
            if current_version(database) != LATEST:
                return "the store's schema is not current: addresses not resolved", set(), set()
            senders = [a.address for a in msg.addresses.get("from", [])]
            recipients = [a.address for role in ("to", "cc", "bcc") for a in msg.addresses.get(role, [])]
            found = resolve_addresses(
                senders + recipients, precedence=precedence(cfg), ambiguous=cfg.tracking.ambiguous_addresses
            )
        finally:
            database.close()
    except (MailfilerError, peewee.PeeweeException) as exc:
        return f"store unavailable ({exc}): addresses not resolved", set(), set()
    sender = {r.entity for a in senders for r in found.get(a.lower(), [])}
    recipient = {r.entity for a in recipients for r in found.get(a.lower(), [])}
    return "read", sender, recipient


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
    click.secho(f"=> {result['summary']}", bold=True)
    rows = [
        (
            t["rule"],
            "yes" if t["matched"] else "no",
            ", ".join(f"{k}={v}" for k, v in t["captures"].items()),
            t["why"] + (f" [{', '.join(t['applied'])}]" if t["applied"] else ""),
        )
        for t in result["trace"]
    ]
    table(f"{len(rows)} of {result['rules']['count']} rule(s) tried", ["rule", "matched", "captures", "why"], rows)
