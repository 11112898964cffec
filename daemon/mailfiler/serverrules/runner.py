"""From the config to server rules: the backend of each mailbox, one survey
(read the rules, list the folders, mark the rules), plans and applies, and
the daemon's loop that re-reads the rules on an interval, logs what changed,
and keeps mailfiler's own rules in step with the config.

The daemon's last reading of each mailbox is kept in the store's
``daemon_state`` table (key ``server-rules:MAILBOX``) for ``mailfiler status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailfiler.backends import backend_of, make_source
from mailfiler.config.loader import LoadedConfig
from mailfiler.config.schema import Mailbox as MailboxConfig
from mailfiler.config.schema import RecordSeed
from mailfiler.config.schema import ServerRules as ServerRulesConfig
from mailfiler.errors import MailfilerError, ServerRulesUnsupported
from mailfiler.rules.patterns import compile_folder
from mailfiler.serverrules import analyze
from mailfiler.sources.inboxrules import Plan, Route, RulesBackend, RulesSnapshot, ServerRule
from mailfiler.store.models import DaemonState, RecordAddress, utcnow
from mailfiler.store.records import get_by_ref
from mailfiler.util.text import plural

log = logging.getLogger("mailfiler.serverrules")

STATE_PREFIX = "server-rules:"


# -- from the config ---------------------------------------------------------------------


def routes_of(mb: MailboxConfig) -> list[Route]:
    return [
        Route(
            folder=tf.folder,
            from_domains=tuple(tf.route.from_domains),
            from_addresses=tuple(tf.route.from_addresses),
            subject_contains=tuple(tf.route.subject_contains),
            to_addresses=tuple(tf.route.to_addresses),
        )
        for tf in mb.tracked_folders
        if tf.route is not None
    ]


def settings_of(mb: MailboxConfig) -> ServerRulesConfig:
    return mb.server_rules or ServerRulesConfig()


def watched(mb: MailboxConfig) -> bool:
    """Whether the daemon reads this mailbox's server rules: asked for, or needed for a route."""
    return backend_of(mb).server_rules is not None and (
        mb.server_rules is not None or any(tf.route for tf in mb.tracked_folders)
    )


def backend_for(mb: MailboxConfig, separator: str | None = "/") -> RulesBackend:
    """The mailbox's rules backend, as its backend's registry entry makes it (``Backend.server_rules``)."""
    make = backend_of(mb).server_rules
    if make is None:
        raise ServerRulesUnsupported(f"mailbox {mb.name} ({mb.backend}:) has no rules on a server")
    return make(mb, separator)


def owners_of(mb: MailboxConfig, seeds: list[RecordSeed] | None = None, *, store: bool = True) -> list[analyze.Owner]:
    """The records of the mailbox's tracked folders with their domains and addresses:
    a record's own, and its direct children's addresses (an account's contacts).
    Read from the store (``store``) and from the config's ``records:`` (``seeds``),
    which the daemon imports at start: a first ``rules server`` sees them too."""
    owners = []
    for tf in mb.tracked_folders:
        if not tf.regarding:
            continue
        domains: set[str] = set()
        addresses: set[str] = set()
        for seed in seeds or []:
            if f"{seed.entity}:{seed.key}" == tf.regarding:
                domains.update(d.lower() for d in seed.domains)
                addresses.update(e.lower() for e in seed.emails)
            elif seed.parent == tf.regarding:
                addresses.update(e.lower() for e in seed.emails)
        record = get_by_ref(tf.regarding) if store else None
        if record is not None:
            children = [c.id for c in record.children]
            mine = RecordAddress.record == record
            if children:
                mine = mine | (RecordAddress.record.in_(children) & (RecordAddress.kind == "email"))
            for row in RecordAddress.select().where(mine):
                (domains if row.kind == "domain" else addresses).add(row.value.lower())
        if domains or addresses:
            owners.append(analyze.Owner(tf.regarding, tf.folder, frozenset(domains), frozenset(addresses)))
    return owners


def _trash(mb: MailboxConfig) -> Callable[[str], bool]:
    patterns = [compile_folder(p) for p in mb.auto_track.exclude]

    def trash(folder: str) -> bool:
        parts = folder.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(p.match(prefix) is not None for p in patterns for prefix in prefixes)

    return trash


async def _folders(mb: MailboxConfig) -> tuple[set[str], str | None]:
    """The folders on the server and their hierarchy separator (an IMAP server's; None elsewhere)."""
    source = make_source(mb)
    await source.open()
    try:
        present = set(await source.list_folders())
        return present, getattr(source, "separator", None)
    finally:
        await source.close()


# -- one survey ----------------------------------------------------------------------------


@dataclass
class Survey:
    mailbox: str
    backend: str
    snapshot: RulesSnapshot
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the IMAP server's hierarchy separator, as found
    separator: str | None = "/"

    def to_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "backend": self.backend,
            "scripts": self.snapshot.scripts,
            "rules": [r.to_json() for r in self.snapshot.rules],
            "problems": self.snapshot.problems,
            "warnings": self.warnings,
            "notes": self.notes,
        }


async def survey(mb: MailboxConfig, seeds: list[RecordSeed] | None = None, *, with_store: bool = True) -> Survey:
    """Read the mailbox's rules and mark them against the records of the store
    (``with_store``: it is open) and of the config (``seeds``)."""
    present, separator = await _folders(mb)
    backend = backend_for(mb, separator)
    snapshot = await backend.read()
    notes = []
    owners = owners_of(mb, seeds, store=with_store)
    if not with_store:
        notes.append("the store was not read: only the config's records: were used for the past-tracking marks")
    ctx = analyze.Context(
        tracked={tf.folder: tf.regarding for tf in mb.tracked_folders},
        present=present,
        owners=owners,
        trash=_trash(mb),
    )
    analyze.mark(snapshot.rules, ctx)
    return Survey(mb.name, backend.name, snapshot, analyze.warnings(snapshot.rules), notes, separator)


async def plan(mb: MailboxConfig, *, separator: str | None = None) -> tuple[RulesBackend, Plan]:
    if separator is None:
        _, separator = await _folders(mb)
    backend = backend_for(mb, separator)
    result = await backend.plan(routes_of(mb))
    result.mailbox = mb.name
    return backend, result


# -- status --------------------------------------------------------------------------------


def summary(s: Survey | None, *, error: str | None = None, applied: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"read_at": utcnow().isoformat() + "Z", "error": error}
    if s is not None:
        rules = s.snapshot.rules
        data.update(
            mailbox=s.mailbox,
            backend=s.backend,
            rules=len(rules),
            owned=sum(1 for r in rules if r.owned),
            into_tracked=sum(1 for r in rules if any(m["kind"] == "tracked" for m in r.marks)),
            warnings=s.warnings + s.snapshot.problems,
        )
    if applied:
        data["applied"] = applied
    return data


def save_summary(mailbox: str, data: dict[str, Any]) -> None:
    value = json.dumps({"mailbox": mailbox, **data})
    DaemonState.insert(key=STATE_PREFIX + mailbox, value=value, updated_at=utcnow()).on_conflict(
        conflict_target=[DaemonState.key], update={DaemonState.value: value, DaemonState.updated_at: utcnow()}
    ).execute()


def status() -> list[dict[str, Any]]:
    """The daemon's last reading of each mailbox's server rules."""
    out = []
    rows = DaemonState.select().where(DaemonState.key.startswith(STATE_PREFIX)).order_by(DaemonState.key)
    for row in rows:
        try:
            out.append(json.loads(row.value))
        except ValueError:
            continue
    return out


# -- the daemon's loop -----------------------------------------------------------------------


def _rule_key(rule: ServerRule) -> str:
    cond = rule.conditions.text if rule.conditions else "always"
    return f"{cond} -> {'; '.join(a.text for a in rule.actions)}{'' if rule.enabled else ' (disabled)'}"


def changes_between(old: list[ServerRule], new: list[ServerRule]) -> dict[str, list[str]]:
    before = {r.name: _rule_key(r) for r in old}
    after = {r.name: _rule_key(r) for r in new}
    return {
        "added": [n for n in after if n not in before],
        "removed": [n for n in before if n not in after],
        "changed": [n for n in after if n in before and before[n] != after[n]],
    }


@dataclass
class _Watch:
    rules: list[ServerRule] | None = None
    error: str | None = None
    config_sha: str = ""
    #: the digest of the scripts when mailfiler's rules were last found in step
    in_step: str = ""
    next_at: float = 0.0


class ServerRulesWatcher:
    """Per mailbox: read on the interval (and when the config changes), log
    what changed, write mailfiler's rules when they are out of step."""

    def __init__(self, get_loaded: Callable[[], LoadedConfig]) -> None:
        self.get_loaded = get_loaded
        self.state: dict[str, _Watch] = {}
        #: mailboxes found without mailfiler's rules under the current config
        self._none_left: set[str] = set()
        self._config_sha = ""

    async def tick(self) -> None:
        loaded = self.get_loaded()
        if loaded.text_sha256 != self._config_sha:
            self._config_sha = loaded.text_sha256
            self._none_left.clear()
        # a mailbox whose last route went still has mailfiler's rules on the server
        # until a pass deletes them: it stays watched while its last reading had some
        wanted = {
            mb.name: mb
            for mb in loaded.config.mailboxes
            if watched(mb) or (backend_of(mb).server_rules is not None and self._has_own_rules(mb.name))
        }
        for name in list(self.state):
            if name not in wanted:
                del self.state[name]
        now = time.monotonic()
        for name, mb in wanted.items():
            st = self.state.setdefault(name, _Watch())
            config_changed = st.config_sha != loaded.text_sha256
            if not config_changed and now < st.next_at:
                continue
            st.config_sha = loaded.text_sha256
            st.next_at = now + settings_of(mb).interval
            if config_changed:
                st.in_step = ""
            await self.pass_once(mb, st, list(loaded.config.records))

    def _has_own_rules(self, name: str) -> bool:
        st = self.state.get(name)
        if st is not None and st.rules is not None:
            return any(r.owned for r in st.rules)
        if name in self._none_left:
            return False
        try:
            row = DaemonState.get_or_none(DaemonState.key == STATE_PREFIX + name)
            owned = row is not None and json.loads(row.value).get("owned", 0) > 0
        except Exception:  # noqa: BLE001 - the store may be busy; the next tick asks again
            return False
        if not owned:
            self._none_left.add(name)  # asked once per config
        return owned

    async def pass_once(self, mb: MailboxConfig, st: _Watch, seeds: list[RecordSeed]) -> None:
        applied: list[str] = []
        try:
            s = await survey(mb, seeds)
            mine = routes_of(mb) or any(r.owned for r in s.snapshot.rules)
            # a plan costs a session: only when the config or the scripts changed since the last one
            if mine and s.snapshot.digest != st.in_step:
                applied = await self._keep_in_step(mb, s.separator)
                if applied:
                    s = await survey(mb, seeds)
                st.in_step = s.snapshot.digest
        except MailfilerError as exc:
            self._failed(mb.name, st, str(exc))
            return
        except Exception as exc:
            log.exception("server rules of %s: unexpected error", mb.name, extra={"event": "server-rules-error"})
            self._failed(mb.name, st, f"{type(exc).__name__}: {exc}")
            return
        if st.error is not None:
            log.info(
                "server rules of %s: readable again", mb.name, extra={"event": "server-rules-ok", "mailbox": mb.name}
            )
            st.error = None
        self._log_changes(mb.name, st.rules, s)
        st.rules = s.snapshot.rules
        try:
            save_summary(mb.name, summary(s, applied=applied))
        except Exception:
            log.debug("could not save the server rules summary", exc_info=True)

    async def _keep_in_step(self, mb: MailboxConfig, separator: str | None) -> list[str]:
        backend, p = await plan(mb, separator=separator)
        if not p.changes:
            return []
        await backend.apply(p)
        done = [f"{c.op} {c.name}" for c in p.changes]
        log.info(
            "server rules of %s: mailfiler's rules brought in step with the config: %s",
            mb.name,
            "; ".join(done),
            extra={"event": "server-rules-applied", "mailbox": mb.name, "changes": "; ".join(done)},
        )
        return done

    def _failed(self, name: str, st: _Watch, message: str) -> None:
        if message != st.error:  # said once, not at every interval
            log.error("server rules of %s: %s", name, message, extra={"event": "server-rules-error", "mailbox": name})
        st.error = message
        try:
            save_summary(name, summary(None, error=message))
        except Exception:
            log.debug("could not save the server rules summary", exc_info=True)

    def _log_changes(self, name: str, old: list[ServerRule] | None, s: Survey) -> None:
        new = s.snapshot.rules
        if old is None:
            log.info(
                "server rules of %s: %s, %d into tracked folders, %s",
                name,
                plural(len(new), "rule"),
                sum(1 for r in new if any(m["kind"] == "tracked" for m in r.marks)),
                plural(len(s.warnings) + len(s.snapshot.problems), "warning"),
                extra={"event": "server-rules-read", "mailbox": name, "rules": len(new)},
            )
            for warning in s.warnings + s.snapshot.problems:
                log.warning("server rules of %s: %s", name, warning, extra={"event": "server-rules-warning"})
            return
        diff = changes_between(old, new)
        if any(diff.values()):
            text = "; ".join(f"{k} {', '.join(v)}" for k, v in diff.items() if v)
            log.info(
                "server rules of %s changed: %s",
                name,
                text,
                extra={"event": "server-rules-changed", "mailbox": name, **{k: ", ".join(v) for k, v in diff.items()}},
            )
            for warning in s.warnings:
                log.warning("server rules of %s: %s", name, warning, extra={"event": "server-rules-warning"})


async def server_rules_loop(get_loaded: Callable[[], LoadedConfig], stop: asyncio.Event, *, step: float = 1.0) -> None:
    """The daemon's task: each mailbox on its interval, and at once after a config change."""
    watcher = ServerRulesWatcher(get_loaded)
    while not stop.is_set():
        await watcher.tick()
        try:
            await asyncio.wait_for(stop.wait(), timeout=step)
        except TimeoutError:
            pass


__all__ = ["Survey", "backend_for", "plan", "routes_of", "server_rules_loop", "status", "survey", "watched"]
