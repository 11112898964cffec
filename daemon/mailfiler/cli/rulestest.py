"""What ``rules test`` answers, as data: the rules' decision and trace, what the
store says (read-only: the store is never created, migrated or written), and
the final verdict, whose regarding comes from the daemon's own planner
(:class:`~mailfiler.tracking.plan.Planner`).  The command itself and its text
output are in :mod:`mailfiler.cli.rules`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mailfiler.config.schema import Config
from mailfiler.errors import (
    MailfilerError,
    MessageError,
    NotFound,
    SchemaTooNew,
    StoreUnavailable,
    UserError,
)

if TYPE_CHECKING:
    import peewee

T = TypeVar("T")


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


def connect_existing(cfg: Config) -> peewee.Database:
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


def schema_problem(db: peewee.Database) -> MailfilerError | None:
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
            self.db = connect_existing(cfg)
            if schema_problem(self.db) is not None:
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
            regarding = rec.ref if (rec := act.regarding) is not None else None
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
