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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mailfiler.cli.errors import EXIT_CONFIG, handle_errors, report
from mailfiler.cli.output import emit_json, json_option, table
from mailfiler.config.schema import BUILTIN_ENTITIES, Config
from mailfiler.errors import (
    ConfigError,
    MailfilerError,
    MessageError,
    NotFound,
    SchemaTooNew,
    StoreUnavailable,
    UserError,
)
from mailfiler.util.text import plural

if TYPE_CHECKING:
    import peewee

T = TypeVar("T")


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

    The one place that builds it: :func:`_print_result` only formats it.
    ``resolve=False`` leaves the store alone (no resolution, no correlation).
    """
    from mailfiler.rules import Facts, auto_submitted_reason
    from mailfiler.tracking.parse import parse_message

    try:
        msg = parse_message(raw)
    except MessageError as exc:
        raise UserError(f"{source}: {exc}") from None
    mb = _mailbox(cfg, mailbox)
    tracked = _tracked_folder(mb, folder)
    # one read-only session answers every question the store can
    with _StoreReader(cfg if resolve else None) as store:
        owners = store.owner_addresses(mb.owner) if mb is not None else frozenset()
        resolved = store.resolve(cfg, _all_addresses(msg))
        facts = Facts.from_parsed(
            msg,
            None,  # the headers the parser kept: what the daemon's rules see
            mailbox=mb.name if mb is not None else "",
            folder=folder,
            # as the tracker decides it: the sender is one of the owner's addresses
            direction="outgoing" if msg.sender is not None and msg.sender in owners else "incoming",
            sender_entities={r.entity for r in resolved.get(msg.sender or "", [])},
            recipient_entities={r.entity for a in _recipients(msg) for r in resolved.get(a, [])},
        )
        decision = ruleset.evaluate(facts)
        seen = _Seen(
            owners=owners,
            resolved=resolved,
            rule=store.rule_regarding(decision),
            folder_record=store.record_exists(tracked.regarding) if tracked and tracked.regarding else None,
            correlation=store.correlation(msg, cfg.correlation),
            planned=store.planned(cfg, ruleset, mb, folder, msg, owners, decision) if mb is not None else None,
        )
    data = decision.to_dict()
    data["regarding_text"] = decision.regarding.describe() if decision.regarding else None
    trace = data.pop("trace")
    auto = None if tracked is not None or mb is None else _auto_tracking(cfg, mb, folder, msg, decision, facts, seen)
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
        "store": store.note,
        "rules": {"files": [str(p) for p in ruleset.sources], "count": len(ruleset.rules)},
        "decision": data,
        "summary": _rules_summary(tracked, decision),
        "correlation": seen.correlation,
        "auto_tracking": auto,
        "verdict": _verdict(mb, tracked, seen, auto),
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


def _tracked_folder(mb: Any, folder: str | None) -> Any:
    if mb is None or folder is None:
        return None
    return next((tf for tf in mb.tracked_folders if tf.folder == folder), None)


def _recipients(msg: Any) -> list[str]:
    return [a.address for role in ("to", "cc", "bcc") for a in msg.addresses.get(role, [])]


def _all_addresses(msg: Any) -> list[str]:
    """Every address of the message, the sender first."""
    found = [a.address for a in msg.addresses.get("from", [])] + _recipients(msg)
    return list(dict.fromkeys(found))


def _rules_summary(tracked: Any, decision: Any) -> str:
    """What the rules alone say; the verdict weighs it with the folder and the policy."""
    if tracked is not None and tracked.regarding:
        return f"the tracked folder's regarding {tracked.regarding} wins over any rule"
    if decision.action is not None:
        return f"{decision.action} (rule {decision.rule})"
    return "nothing about tracking: the folder and the mailbox's policy decide"


# -- the store, read-only ------------------------------------------------------------


@dataclass
class _RuleRegarding:
    """The regarding a rule gives once its record is looked up: ``ref`` None
    when the record does not exist and the rule may not create it."""

    ref: str | None
    rule: str
    note: str = ""


@dataclass
class _Seen:
    """What the store says about the message (empty when it was not read)."""

    owners: frozenset[str]
    resolved: dict[str, list[Any]]
    rule: _RuleRegarding | None
    #: whether the tracked folder's regarding record exists; None: not asked or unknown
    folder_record: bool | None
    correlation: dict[str, Any]
    #: (regarding, method) as the daemon's planner decides them; None: the store was not read
    planned: tuple[str | None, str | None] | None = None


def _no_store(cfg: Config) -> Path | None:
    """The SQLite file the config names when it does not exist yet (else None)."""
    from mailfiler.config.loader import sqlite_path

    path = sqlite_path(cfg.database)
    if cfg.database.startswith("sqlite:///") and (path is None or not path.exists()):
        return path or Path(cfg.database.removeprefix("sqlite:///"))
    return None


def _connect_existing(cfg: Config) -> peewee.Database:
    """Connect to the store the config names, never creating one."""
    from mailfiler.store import db as storedb
    from mailfiler.util.secrets import read_secret

    missing = _no_store(cfg)
    if missing is not None:
        raise StoreUnavailable(
            f"there is no store at {missing} yet: nothing is tracked (`mailfiler run` or `mailfiler once` creates it)",
            url=cfg.database,
        )
    password = (
        read_secret(cfg.database_password_file, what="database_password_file") if cfg.database_password_file else None
    )
    return storedb.connect(cfg.database, password=password)


def _schema_problem(db: peewee.Database) -> MailfilerError | None:
    """Why the store cannot be read without migrating it, or None."""
    from mailfiler.store.migrations import LATEST, current_version

    version = current_version(db)
    if version > LATEST:
        return SchemaTooNew(f"the store's schema is version {version}; this mailfiler knows up to {LATEST}")
    if version < LATEST:
        return UserError(
            f"the store's schema is version {version}; this mailfiler needs {LATEST}:"
            " run `mailfiler once` or restart the daemon to migrate it first"
        )
    return None


def _store_errors() -> tuple[type[Exception], ...]:
    """What reading the store may raise that means "not readable", not a bug."""
    import peewee  # imported late, as every command does: `mailfiler --help` stays fast

    return (MailfilerError, peewee.PeeweeException)


class _StoreReader:
    """The store, read-only, for one ``rules test``.

    Never creates or migrates a store: a missing SQLite file, an older schema
    or an unreachable server leave ``problem`` saying why, and every question
    gets the answer "nothing known".  On close the models are bound again to
    whatever they were bound to before (a caller in the same process keeps
    its own store)."""

    def __init__(self, cfg: Config | None) -> None:
        self.cfg = cfg
        #: why the store was not (or no longer) read; None while it is
        self.problem: str | None = "the store was not read"
        self.db: peewee.Database | None = None
        self._previous: Any = None

    @property
    def note(self) -> str:
        """What happened to the store, for the ``store`` line of the output."""
        if self.problem is None:
            return "read"
        return "not read" if self.cfg is None else f"{self.problem}: addresses not resolved"

    def __enter__(self) -> _StoreReader:
        if self.cfg is not None:
            self._open(self.cfg)
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _open(self, cfg: Config) -> None:
        from mailfiler.store.models import database_proxy

        if _no_store(cfg) is not None:
            self.problem = "no store yet"
            return
        self._previous = database_proxy.obj
        try:
            self.db = _connect_existing(cfg)
            if _schema_problem(self.db) is not None:
                self._close()
                self.problem = "the store's schema is not current"
                return
        except _store_errors() as exc:
            self._fail(exc)
            return
        self.problem = None

    def _close(self) -> None:
        from mailfiler.store.models import database_proxy

        if self.db is not None:
            self.db.close()
            self.db = None
            if self._previous is not None:
                database_proxy.initialize(self._previous)

    def _fail(self, exc: Exception) -> None:
        self._close()
        self.problem = f"store unavailable ({exc})"

    def _ask(self, question: Callable[[], T], default: T) -> T:
        if self.db is None:
            return default
        try:
            return question()
        except _store_errors() as exc:
            self._fail(exc)
            return default

    # -- the questions -------------------------------------------------------------

    def owner_addresses(self, owner: str) -> frozenset[str]:
        """The owner and the addresses of the owner's user record (what makes mail outgoing)."""
        from mailfiler.store.models import Record, RecordAddress

        def ask() -> frozenset[str]:
            rows = (
                RecordAddress.select(RecordAddress.value)
                .join(Record)
                .where((Record.entity == "user") & (Record.key == owner) & (RecordAddress.kind == "email"))
            )
            return frozenset({owner, *(r.value for r in rows)})

        return self._ask(ask, frozenset({owner}))

    def resolve(self, cfg: Config, addresses: list[str]) -> dict[str, list[Any]]:
        from mailfiler.service.runtime import precedence
        from mailfiler.store.records import resolve_addresses

        def ask() -> dict[str, list[Any]]:
            return resolve_addresses(addresses, precedence=precedence(cfg), ambiguous=cfg.tracking.ambiguous_addresses)

        return self._ask(ask, {})

    def record_exists(self, ref: str) -> bool | None:
        from mailfiler.store.records import get_by_ref

        return self._ask(lambda: get_by_ref(ref) is not None, None)

    def rule_regarding(self, decision: Any) -> _RuleRegarding | None:
        """The rule's regarding as the tracker would resolve it, writing nothing."""
        from mailfiler.store.records import get_by_ref
        from mailfiler.tracking.reapply import planned_ref
        from mailfiler.tracking.regarding import find

        spec, rule = decision.regarding, str(decision.rule)
        if spec is None:
            return None
        if self.db is None:
            return _RuleRegarding(spec.ref or spec.describe(), rule, "records not looked up: the store was not read")

        def ask() -> _RuleRegarding:
            record = find(spec) or (get_by_ref(planned_ref(spec)) if spec.create else None)
            if record is not None:
                return _RuleRegarding(record.ref, rule)
            if spec.create:
                ref = planned_ref(spec)
                return _RuleRegarding(ref, rule, f"rule {rule} would create {ref}")
            return _RuleRegarding(None, rule, f"rule {rule} names {spec.describe()}, which does not exist")

        return self._ask(ask, _RuleRegarding(spec.ref or spec.describe(), rule))

    def planned(
        self, cfg: Config, ruleset: Any, mb: Any, folder: str | None, msg: Any, owners: frozenset[str], decision: Any
    ) -> tuple[str | None, str | None] | None:
        """(regarding, method) of the message as new mail, from the daemon's own
        planner (:class:`~mailfiler.tracking.plan.Planner`), writing nothing: a
        record a rule would create is named, not created."""
        from mailfiler.service.runtime import precedence
        from mailfiler.store.models import Mailbox, TrackedFolder
        from mailfiler.store.records import get_by_ref
        from mailfiler.tracking.context import FolderContext, MailboxContext
        from mailfiler.tracking.plan import Judgement, Planner
        from mailfiler.tracking.reapply import planned_ref

        if self.db is None:
            return None
        db = self.db

        def ask() -> tuple[str | None, str | None]:
            planner = Planner(
                db,
                precedence=precedence(cfg),
                ambiguous=cfg.tracking.ambiguous_addresses,
                correlation=cfg.correlation,
                rules=ruleset,
            )
            row = Mailbox.get_or_none(Mailbox.name == mb.name) or Mailbox(name=mb.name, owner=mb.owner)
            ctx = MailboxContext(row=row, owner_addresses=owners)
            tracked = _tracked_folder(mb, folder)
            if tracked is not None:
                # unsaved: the planner reads its name and regarding, never its id
                frow = TrackedFolder(mailbox=row, folder=tracked.folder, regarding_ref=tracked.regarding)
                record = get_by_ref(tracked.regarding) if tracked.regarding else None
                fctx = FolderContext(row=frow, regarding=record)
            else:
                fctx = FolderContext(row=None, path=folder or "INBOX")
            # the rules' decision as shown above (the same facts), so the two cannot differ
            reg = planner.plan_new(ctx, fctx, msg, Judgement(decision=decision)).regarding
            ref = reg.record.ref if reg.record is not None else planned_ref(reg.create) if reg.create else None
            return ref, reg.method if ref is not None else None

        return self._ask(ask, None)

    def correlation(self, msg: Any, settings: Any) -> dict[str, Any]:
        """What correlation finds: the method and the activity, or nulls."""
        from mailfiler.tracking.correlate import correlate

        def ask() -> dict[str, Any]:
            match = correlate(msg, settings)
            if match is None:
                return {"method": None, "activity": None, "note": None}
            act = match.activity
            regarding = act.regarding.ref if act.regarding_id is not None else None
            found = {"id": act.id, "message_id": act.message_id, "subject": act.subject, "regarding": regarding}
            return {"method": match.method, "activity": found, "note": None}

        answer = self._ask(ask, None)
        if answer is None:
            return {"method": None, "activity": None, "note": f"not tried: {self.problem}"}
        return answer


# -- the final answer -------------------------------------------------------------------


def _decided(seen: _Seen) -> tuple[str | None, str | None]:
    """(regarding, method) when the folder's record does not decide: the daemon's
    planner's answer when the store was read, else what the rules alone say."""
    return seen.planned if seen.planned is not None else _by_rule_or_thread(seen)


def _by_rule_or_thread(seen: _Seen) -> tuple[str | None, str | None]:
    """(regarding, method) when no folder decides: the rule's, else the thread's."""
    if seen.rule is not None and seen.rule.ref is not None:
        return seen.rule.ref, f"rule:{seen.rule.rule}"
    parent = seen.correlation["activity"]
    # as the tracker stores it: a thread without a regarding gives no method either
    if parent is not None and parent["regarding"] is not None:
        return parent["regarding"], seen.correlation["method"]
    return None, None


def _auto_tracking(
    cfg: Config, mb: Any, folder: str | None, msg: Any, decision: Any, facts: Any, seen: _Seen
) -> dict[str, Any]:
    """The auto-tracking verdict for mail outside tracked folders, with its inputs."""
    from mailfiler.rules import auto_submitted_reason
    from mailfiler.tracking.autotrack import FolderFilter, NeverTrack, auto_verdict

    where = folder or "INBOX"
    info: dict[str, Any] = {"folder": where, "watched": FolderFilter(mb.auto_track)(where)}
    info["policy"] = mb.auto_track.policy
    info["never_track"] = (NeverTrack(mb.never_track) | NeverTrack(cfg.tracking.never_track)).blocks(
        msg.sender, _all_addresses(msg), seen.owners
    )
    if not info["watched"]:
        info.update(track=False, reason=f"auto-tracking does not watch {where} (auto_track.folders and exclude)")
        return info
    verdict = auto_verdict(
        decision=decision,
        policy=mb.auto_track.policy,
        never=info["never_track"],
        auto_reply=auto_submitted_reason(facts),
        correlated=lambda: seen.correlation["method"],
        known=lambda: _known(msg, seen),
    )
    info.update(track=verdict.track, reason=verdict.reason)
    return info


def _known(msg: Any, seen: _Seen) -> str | None:
    """An address, not the owner's, that is a CRM record other than a user:
    the first in address order, as the tracker names it."""
    for address in sorted(set(_all_addresses(msg)) - seen.owners):
        if any(r.entity != "user" for r in seen.resolved.get(address, [])):
            return address
    return None


def _verdict(mb: Any, tracked: Any, seen: _Seen, auto: dict[str, Any] | None) -> dict[str, Any]:
    """Tracked or not, the regarding and its method (the activity's ``correlation``), and why."""
    notes = [seen.rule.note] if seen.rule is not None and seen.rule.note else []
    if mb is None:
        return _answer(False, None, None, "the config has no mailbox", notes)
    if tracked is None:
        assert auto is not None  # computed for every message outside tracked folders
        if not auto["track"]:
            return _answer(False, None, None, auto["reason"], [])
        return _answer(True, *_decided(seen), auto["reason"], notes)
    reason = f"{tracked.folder} is a tracked folder: mail filed there is always tracked"
    if tracked.regarding and seen.folder_record is not False:
        return _answer(True, tracked.regarding, "folder", reason, [])
    if tracked.regarding:
        notes.insert(0, f"the folder's record {tracked.regarding} does not exist yet: the rules and the thread decide")
    return _answer(True, *_decided(seen), reason, notes)


def _answer(tracked: bool, regarding: str | None, method: str | None, reason: str, notes: list[str]) -> dict[str, Any]:
    return {"tracked": tracked, "regarding": regarding, "correlation": method, "reason": reason, "notes": notes}


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
    db = _connect_existing(cfg)
    try:
        if dry_run:
            problem = _schema_problem(db)
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
