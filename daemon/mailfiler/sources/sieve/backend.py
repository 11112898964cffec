"""The Sieve backend: a mailbox's rules over ManageSieve (Dovecot/Pigeonhole,
Cyrus, Stalwart...).

Reading lists the rules of the active script, with the scripts it includes
in place, and notes every other script.  Writing touches two things only:
mailfiler's own script (created, rewritten, deleted) and, once, the active
script, to which it adds ``require "include"`` and an include of its own
script.  A script that does not parse, that the server's CHECKSCRIPT refuses,
or that takes mailfiler's script name without being its own is reported
(:class:`~mailfiler.errors.ServerRulesBroken`) and never written over.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from mailfiler.errors import ServerRulesBroken, ServerRulesChanged, ServerRulesError, ServerRulesUnsupported
from mailfiler.sources.inboxrules import Change, Plan, Route, RulesSnapshot, ServerRule
from mailfiler.sources.sieve import sievewrite as w
from mailfiler.sources.sieve.managesieve import ManageSieve, SieveNo, SieveSettings
from mailfiler.sources.sieve.sieveparse import SieveSyntaxError
from mailfiler.sources.sieve.sieveread import includes, read_rules

log = logging.getLogger("mailfiler.serverrules")

#: more scripts than this are not read (bounded time and memory)
MAX_SCRIPTS = 100
#: nor scripts larger than this all together (bounded memory)
MAX_TOTAL_CHARS = 16 * 1024 * 1024
#: the name of the active script mailfiler makes when a mailbox has none
MAIN_SCRIPT = "main"


@dataclass
class _State:
    """The scripts on the server, as read in one session."""

    texts: dict[str, str]
    active: str | None
    #: script -> why it is broken (syntax, or the server's CHECKSCRIPT)
    broken: dict[str, str] = field(default_factory=dict)

    def digest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.texts):
            h.update(f"{name}\0{name == self.active}\0{self.texts[name]}\0".encode())
        return h.hexdigest()


class SieveBackend:
    name = "sieve"

    def __init__(self, settings: SieveSettings, *, script: str = "mailfiler", separator: str | None = "/") -> None:
        self.settings = settings
        self.script = script
        self.separator = separator or "/"
        #: CHECKSCRIPT verdicts by script digest: a re-read asks only about changed scripts
        self._checked: dict[str, str | None] = {}

    # -- folder names -------------------------------------------------------------------

    def to_server(self, folder: str) -> str:
        return folder if self.separator == "/" else folder.replace("/", self.separator)

    def from_server(self, name: str) -> str:
        return name if self.separator == "/" else name.replace(self.separator, "/")

    # -- reading ------------------------------------------------------------------------

    async def _state(self, ms: ManageSieve) -> _State:
        listed = await ms.list_scripts()
        if len(listed) > MAX_SCRIPTS:
            raise ServerRulesError(
                f"{self.settings.where()}: {len(listed)} scripts; mailfiler reads at most {MAX_SCRIPTS}"
            )
        texts: dict[str, str] = {}
        total = 0
        for name, _ in listed:
            texts[name] = await ms.get_script(name)
            total += len(texts[name])
            if total > MAX_TOTAL_CHARS:
                raise ServerRulesError(
                    f"{self.settings.where()}: the scripts hold over {MAX_TOTAL_CHARS} characters; mailfiler reads less"
                )
        active = next((name for name, on in listed if on), None)
        state = _State(texts, active)
        for name, text in texts.items():
            why = await self._check(ms, text)
            if why:
                state.broken[name] = why
        return state

    async def _check(self, ms: ManageSieve, text: str) -> str | None:
        """Why a script is broken, or None: our parser first, then the server's verdict."""
        key = hashlib.sha256(text.encode()).hexdigest()
        if key in self._checked:
            return self._checked[key]
        why: str | None = None
        try:
            read_rules("-", text)
        except SieveSyntaxError as exc:
            why = str(exc)
        if why is None:
            try:
                await ms.check_script(text)
            except SieveNo as exc:
                why = " ".join((exc.text or str(exc)).split())
        if len(self._checked) > 4 * MAX_SCRIPTS:
            self._checked.clear()
        self._checked[key] = why
        return why

    async def read(self) -> RulesSnapshot:
        async with ManageSieve(self.settings) as ms:
            state = await self._state(ms)
            return self._snapshot(state, ms.sieve_extensions)

    def _snapshot(self, state: _State, extensions: set[str]) -> RulesSnapshot:
        rules: list[ServerRule] = []
        problems: list[str] = []
        used: dict[str, str] = {}
        if state.active is None:
            problems.append("no script is active: the server runs no rules")
        else:
            self._follow(state, state.active, rules, problems, used, depth=0)
        for name, why in state.broken.items():
            problems.append(f"script {name} is broken: {why}")
        scripts = [
            {
                "name": name,
                "state": used.get(name, "inactive"),
                "owned": name == self.script and w.is_ours(text),
                "broken": state.broken.get(name),
                "size": len(text.encode()),
            }
            for name, text in sorted(state.texts.items())
        ]
        if state.active and self.script in state.texts and self.script not in used and self.script != state.active:
            problems.append(f"mailfiler's script {self.script} is not included from the active script {state.active}")
        return RulesSnapshot(backend=self.name, rules=rules, scripts=scripts, problems=problems, digest=state.digest())

    def _follow(
        self, state: _State, name: str, rules: list[ServerRule], problems: list[str], used: dict[str, str], depth: int
    ) -> None:
        used[name] = "active" if depth == 0 else "included"
        text = state.texts.get(name, "")
        owned = name == self.script and w.is_ours(text)
        try:
            found = read_rules(name, text, owned=owned, folder_map=self.from_server)
        except SieveSyntaxError:
            return  # listed under problems as broken
        for rule in found:
            rules.append(rule)
            for act in rule.actions:
                if act.kind != "include" or not act.target:
                    continue
                if "global" in act.text:
                    problems.append(f"{rule.where}: the global script {act.target} cannot be read over ManageSieve")
                elif act.target in used:
                    continue  # included already (RFC 6609 :once, or a loop the server refuses)
                elif act.target not in state.texts:
                    if act.target != self.script:
                        problems.append(f"{rule.where}: the included script {act.target} does not exist")
                elif depth < 10:
                    self._follow(state, act.target, rules, problems, used, depth + 1)

    # -- writing ------------------------------------------------------------------------

    async def plan(self, routes: list[Route]) -> Plan:
        async with ManageSieve(self.settings) as ms:
            state = await self._state(ms)
            return await self._plan(ms, state, routes)

    def _check_ours(self, state: _State) -> str | None:
        """mailfiler's script as it is on the server, if it is there; raises when it must not be touched."""
        text = state.texts.get(self.script)
        if text is None:
            return None
        where = f"{self.settings.where()} script {self.script}"
        if not w.is_ours(text):
            raise ServerRulesBroken(
                f"{where} was not written by mailfiler; mailfiler leaves it alone."
                " Rename it, or give mailfiler another script name (server_rules.script)"
            )
        if self.script in state.broken:
            raise ServerRulesBroken(f"{where} is broken ({state.broken[self.script]}); it was not overwritten")
        strangers = [n for n in w.rule_blocks(text) if not n.startswith(w.OWN_PREFIX)]
        if strangers:
            raise ServerRulesBroken(
                f"{where} holds rules mailfiler did not write ({', '.join(strangers)}); move them to another"
                " script, then apply again. Nothing was overwritten"
            )
        return text

    async def _plan(self, ms: ManageSieve, state: _State, routes: list[Route]) -> Plan:
        current = self._check_ours(state)
        plan = Plan(mailbox="", backend=self.name, changes=[])
        have = w.rule_blocks(current) if current is not None else {}
        want = {r.rule_name: w.rule_block(r, self.to_server(r.folder)) for r in routes}
        for name, block in want.items():
            if name not in have:
                plan.changes.append(Change("create", name, block))
            elif have[name] != block:
                plan.changes.append(Change("update", name, block))
        plan.changes.extend(Change("delete", name) for name in have if name not in want)
        payload: dict[str, Any] = {"base": current}
        if not routes:
            if current is not None:
                plan.changes.append(Change("delete", self.script, "mailfiler's script, now empty"))
                payload["delete"] = True
            plan.payload = payload
            return plan
        if "include" not in ms.sieve_extensions:
            raise ServerRulesUnsupported(
                f"{self.settings.where()}: the server's Sieve has no include (RFC 6609), so mailfiler cannot keep"
                " its rules in a script of their own; it writes none"
            )
        new_text = w.script_text(list(want.values()))
        if new_text != current:
            if not plan.changes:
                plan.changes.append(Change("update", self.script, "rewritten in the config's order"))
            await self._server_accepts(ms, new_text, self.script)
            payload["script"] = new_text
        self._plan_include(state, plan, payload)
        if "active_new" in payload:
            await self._server_accepts(ms, payload["active_new"], payload["active"])
        plan.payload = payload
        return plan

    def _plan_include(self, state: _State, plan: Plan, payload: dict[str, Any]) -> None:
        active = state.active
        if active == self.script:
            plan.warnings.append(
                f"mailfiler's script {self.script} is the active one: the server runs none of your other scripts"
            )
            return
        if active is None:
            name = MAIN_SCRIPT
            n = 1
            while name in state.texts:
                n += 1
                name = f"{MAIN_SCRIPT}-{n}"
            payload.update(main=name, main_text=w.main_script(self.script))
            plan.changes.append(Change("activate", name, f"a new active script that includes {self.script}"))
            return
        text = state.texts[active]
        try:
            if (self.script, False) in includes(text):
                return  # included already: nothing to write there, broken or not
        except SieveSyntaxError:
            pass  # broken: said just below
        if active in state.broken:
            raise ServerRulesBroken(
                f"{self.settings.where()}: the active script {active} is broken ({state.broken[active]});"
                " mailfiler does not write to it. Fix it, then apply again"
            )
        edit = w.add_include(text, self.script)
        payload.update(active=active, active_base=text, active_new=edit.text)
        plan.changes.append(Change("include", active, edit.added.strip()))

    async def _server_accepts(self, ms: ManageSieve, text: str, name: str) -> None:
        try:
            await ms.check_script(text)
        except SieveNo as exc:
            raise ServerRulesError(
                f"{self.settings.where()}: the server refuses the script {name} mailfiler would write: {exc.text}"
            ) from None

    async def apply(self, plan: Plan) -> None:
        if not plan.changes:
            return
        p = plan.payload
        async with ManageSieve(self.settings) as ms:
            listed = dict(await ms.list_scripts())
            now = await ms.get_script(self.script) if self.script in listed else None
            if now != p.get("base"):
                raise ServerRulesChanged(f"{self.settings.where()}: the script {self.script} changed since the plan")
            if p.get("delete"):
                if self.script in listed:
                    await ms.delete_script(self.script)
                return
            if "script" in p:
                for warning in await ms.put_script(self.script, p["script"]):
                    log.info("server warning for %s: %s", self.script, warning, extra={"event": "server-rules-warning"})
            if "active" in p:
                name = p["active"]
                if not listed.get(name) or await ms.get_script(name) != p["active_base"]:
                    raise ServerRulesChanged(
                        f"{self.settings.where()}: the active script {name} changed since the plan; not written"
                    )
                await ms.put_script(name, p["active_new"])
            if "main" in p:
                if any(listed.values()):
                    raise ServerRulesChanged(f"{self.settings.where()}: a script became active since the plan")
                await ms.put_script(p["main"], p["main_text"])
                await ms.set_active(p["main"])


__all__ = ["MAIN_SCRIPT", "SieveBackend"]
