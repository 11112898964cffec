"""Evaluate a rule set against one message: the :class:`Decision` and its trace.

Rules are tried in order (files in the order listed, rules in file order).
A rule that matches applies its actions, each only if no earlier rule set
it already (the first rule to set a thing wins it; categories add up):

- ``skip`` / ``track`` set the action;
- ``regarding`` sets the regarding, and the action to ``track`` if no earlier
  rule set one (naming a record means "track it regarding this");
- ``create_contact`` and ``owner`` are set once; ``categories`` accumulate.

A matching rule that sets the action or the regarding *decides*: evaluation
ends after it unless it says ``continue: true``.  A matching rule that only
adds categories, an owner or a contact goes on to the next rule unless it
says ``stop: true``.  Evaluation never raises: a failure inside one rule
(a bug, never the mail) is logged and that rule counts as not matching.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailfiler.rules.actions import Actions, CreateContactSpec, RegardingSpec, template_values
from mailfiler.rules.conditions import Condition, View
from mailfiler.rules.facts import Facts

__all__ = ["Decision", "Rule", "RuleSet", "TraceStep"]

log = logging.getLogger("mailfiler.rules")


@dataclass(frozen=True)
class Rule:
    name: str
    #: None: the rule has no ``when:`` and matches every message
    when: Condition | None
    then: Actions
    #: ``continue: true``: go on after this rule even when it decides
    cont: bool = False
    enabled: bool = True
    description: str = ""
    #: ``FILE:LINE`` where the rule starts
    source: str = ""


@dataclass(frozen=True)
class TraceStep:
    """One rule tried: whether it matched, its captures, and why (not)."""

    rule: str
    matched: bool
    captures: dict[str, str]
    why: str
    #: what the rule set: "track", "skip", "regarding", "create_contact", "categories", "owner"
    applied: tuple[str, ...] = ()
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    """What the rules decided about one message.

    ``action`` None means the rules said nothing about tracking: the
    mailbox's auto-tracking policy decides.  ``rule`` names the rule that set
    the regarding, or else the one that set the action (for the
    ``rule:NAME`` correlation).  All templates are already substituted.
    """

    action: Literal["track", "skip"] | None = None
    regarding: RegardingSpec | None = None
    rule: str | None = None
    create_contact: CreateContactSpec | None = None
    categories: tuple[str, ...] = ()
    owner: str | None = None
    trace: list[TraceStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "regarding": self.regarding.to_dict() if self.regarding else None,
            "rule": self.rule,
            "create_contact": self.create_contact.to_dict() if self.create_contact else None,
            "categories": list(self.categories),
            "owner": self.owner,
            "trace": [t.to_dict() for t in self.trace],
        }


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    #: the rule files read, in order
    sources: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rules)

    def evaluate(self, facts: Facts) -> Decision:
        """The decision for one message; never raises on any input."""
        decision = Decision()
        try:
            self._evaluate(facts, decision)
        except Exception as exc:  # a bug must not stop tracking; the trace says what happened
            log.exception("rule evaluation failed", extra={"event": "rules-failed"})
            decision.trace.append(TraceStep("(rules)", False, {}, f"internal error: {type(exc).__name__}: {exc}"))
        return decision

    def _evaluate(self, facts: Facts, d: Decision) -> None:
        view = View(facts)
        action_rule: str | None = None
        categories: list[str] = []
        for rule in self.rules:
            if not rule.enabled:
                d.trace.append(TraceStep(rule.name, False, {}, "disabled", source=rule.source))
                continue
            try:
                step, stop = self._try(rule, view, d, categories)
            except Exception as exc:  # one broken rule must not hide the others
                log.exception("rule %s failed", rule.name, extra={"event": "rule-failed", "rule": rule.name})
                step, stop = TraceStep(rule.name, False, {}, f"internal error: {type(exc).__name__}"), False
            d.trace.append(step)
            if "track" in step.applied or "skip" in step.applied:
                action_rule = rule.name
            if stop:
                break
        d.categories = tuple(categories)
        if d.rule is None:
            d.rule = action_rule

    def _try(self, rule: Rule, view: View, d: Decision, categories: list[str]) -> tuple[TraceStep, bool]:
        out = rule.when.test(view) if rule.when is not None else {}
        if isinstance(out, str):
            return TraceStep(rule.name, False, {}, out, source=rule.source), False
        then = rule.then
        values = template_values(view, out)
        # Render the regarding even when an earlier rule set one: whether a
        # rule matches must not depend on the rules before it.
        regarding = then.regarding.render(values) if then.regarding is not None else None
        if isinstance(regarding, str):
            return TraceStep(rule.name, False, dict(out), regarding, source=rule.source), False

        applied: list[str] = []
        if then.action is not None and d.action is None:
            d.action = then.action  # type: ignore[assignment]
            applied.append(then.action)
        if regarding is not None and d.regarding is None:
            d.regarding = regarding
            d.rule = rule.name
            applied.append("regarding")
            if d.action is None:
                d.action = "track"
                applied.append("track")
        if then.create_contact is not None and d.create_contact is None:
            spec = then.create_contact.render(view)
            if spec is not None:
                d.create_contact = spec
                applied.append("create_contact")
        added = False
        for t in then.categories:
            cat = t.render(values).strip()
            if cat and cat not in categories:
                categories.append(cat)
                added = True
        if added:
            applied.append("categories")
        if then.owner is not None and d.owner is None:
            owner = then.owner.render(values).strip().lower()
            if owner:
                d.owner = owner
                applied.append("owner")

        stop = then.stop or (then.decides and not rule.cont)
        why = "matched; " + ("evaluation ends here" if stop else "going on")
        return TraceStep(rule.name, True, dict(out), why, tuple(applied), rule.source), stop
