"""Build rule sets from YAML text and facts from keywords."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from mailfiler.config.schema import BUILTIN_ENTITIES
from mailfiler.rules import Address, Decision, Facts, RuleSet, check_rules, load_rules
from mailfiler.rules.evaluate import TraceStep

ENTITIES = (*BUILTIN_ENTITIES, "project")


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def ruleset(tmp_path: Path, text: str) -> RuleSet:
    return load_rules([write(tmp_path, text)], known_entities=ENTITIES)


def problems(tmp_path: Path, text: str) -> list[str]:
    """Problems as ``LINE:COL: message`` (the file name stripped)."""
    path = write(tmp_path, text)
    _, found = check_rules([path], known_entities=ENTITIES)
    return [str(p).removeprefix(f"{path}:") for p in found]


def one_rule(tmp_path: Path, when: str, then: str = "track") -> RuleSet:
    """A rule set of one rule named r with the given when: (YAML flow) and then:."""
    return ruleset(tmp_path, f"rules:\n  - name: r\n    when: {when}\n    then: {then}\n")


def addrs(*specs: str) -> tuple[Address, ...]:
    """``"Bob Smith <bob@x.com>"`` or ``"bob@x.com"`` to Address tuples."""
    out = []
    for spec in specs:
        if "<" in spec:
            name, _, rest = spec.partition("<")
            out.append(Address(rest.rstrip(">").strip().lower(), name.strip()))
        else:
            out.append(Address(spec.lower(), ""))
    return tuple(out)


def facts(**kw: Any) -> Facts:
    for role in ("from_", "to", "cc", "bcc"):
        if role in kw and isinstance(kw[role], str):
            kw[role] = addrs(kw[role])
        elif role in kw and isinstance(kw[role], list):
            kw[role] = addrs(*kw[role])
    if "headers" in kw and isinstance(kw["headers"], dict):
        kw["headers"] = tuple(kw["headers"].items())
    for key in ("sender_entities", "recipient_entities"):
        if key in kw:
            kw[key] = frozenset(kw[key])
    kw.setdefault("mailbox", "alice")
    return Facts(**kw)


def matches(rs: RuleSet, f: Facts) -> bool:
    """Whether the first rule matched."""
    return rs.evaluate(f).trace[0].matched


def step(d: Decision, name: str) -> TraceStep:
    return next(t for t in d.trace if t.rule == name)
