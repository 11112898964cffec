"""Read rule files: every problem at once, each as ``FILE:LINE:COL: message``.

The YAML is read with the config loader's position-tracking builder
(:mod:`mailfiler.config.yamlpos`), then checked by hand rather than with
pydantic: conditions nest (``all``/``any``/``not``), and each problem (an
unknown key, a regex RE2 rejects, a template naming a capture the
condition cannot produce) must point at its own line and column.  The
checker is three parts: the groundwork (:mod:`~mailfiler.rules.checkbase`),
conditions (:mod:`~mailfiler.rules.checkwhen`) and actions
(:mod:`~mailfiler.rules.checkthen`); here are the files and the rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from mailfiler.config.yamlpos import MAP, Builder, KeyPath, Problem, compose, describe_value, is_empty
from mailfiler.errors import ConfigError
from mailfiler.rules import conditions as c
from mailfiler.rules.checkthen import ThenChecker
from mailfiler.rules.checkwhen import WhenChecker
from mailfiler.rules.evaluate import Rule, RuleSet

__all__ = ["check_rules", "load_rules", "rule_files"]

RULE_KEYS = ("name", "description", "enabled", "when", "then", "continue")
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RULE_FILE_SUFFIXES = (".yaml", ".yml")


def load_rules(paths: Sequence[Path], *, known_entities: Iterable[str]) -> RuleSet:
    """Load the rules from *paths* (files, or folders whose ``*.yaml`` and
    ``*.yml`` files load in name order).  Raises :class:`ConfigError` with
    every problem in ``.problems``."""
    ruleset, problems = check_rules(paths, known_entities=known_entities)
    if problems:
        n = len(problems)
        files = sorted({p.file for p in problems})
        where = files[0] if len(files) == 1 else f"{len(files)} rule files"
        raise ConfigError(f"{n} problem{'s' if n != 1 else ''} in {where}", problems=problems)
    return ruleset


def rule_files(paths: Sequence[Path]) -> tuple[list[Path], list[Problem]]:
    """The files *paths* name, in load order, and problems with the paths."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            try:
                found = sorted(
                    (p for p in path.iterdir() if p.suffix in _RULE_FILE_SUFFIXES and not p.name.startswith(".")),
                    key=lambda p: p.name,
                )
            except OSError as exc:
                problems.append(Problem(str(path), 1, 1, f"cannot list the rule folder: {exc.strerror or exc}"))
                continue
            files += [p for p in found if p.is_file()]
        elif path.exists():
            files.append(path)
        else:
            problems.append(Problem(str(path), 1, 1, "no such rule file or folder"))
    return files, problems


def check_rules(paths: Sequence[Path], *, known_entities: Iterable[str]) -> tuple[RuleSet, list[Problem]]:
    """(the rules that loaded, every problem); problems sorted by file, line, column."""
    known = list(dict.fromkeys(e.lower() for e in known_entities))
    files, problems = rule_files(paths)
    ruleset = RuleSet(sources=list(files))
    first_seen: dict[str, str] = {}  # name -> FILE:LINE
    for path in files:
        loaded, named, file_problems = _load_file(path, known)
        for name, (line, col) in named:
            if name in first_seen:
                msg = f"rule name {name!r} is already used at {first_seen[name]}"
                file_problems.append(Problem(str(path), line, col, msg))
            else:
                first_seen[name] = f"{path}:{line}"
        ruleset.rules += loaded
        problems += sorted(file_problems, key=lambda p: (p.line, p.col))
    return ruleset, problems


def _load_file(path: Path, known: list[str]) -> tuple[list[Rule], list[tuple[str, tuple[int, int]]], list[Problem]]:
    """(valid rules, (name, position) of every named rule, problems) of one file."""
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [], [], [Problem(file, 1, 1, f"cannot read the rule file: {exc.strerror or exc}")]
    root, problem = compose(raw, file)
    if problem is not None:
        return [], [], [problem]
    if is_empty(root):
        return [], [], []  # a file of comments only: no rules
    if not isinstance(root, yaml.MappingNode) or root.tag != MAP:
        return [], [], [Problem(file, 1, 1, "a rule file must be a mapping with a rules: list")]
    built = Builder(file)
    data = built.build(root, ())
    checker = _Checker(file, built, known)
    rules = checker.file_rules(data)
    return rules, checker.named(), built.problems


class _Checker(WhenChecker, ThenChecker):
    """Turns the built data of one file into rules, recording problems."""

    # -- the file ------------------------------------------------------------------

    def file_rules(self, data: Any) -> list[Rule]:
        self.keys((), data, ("rules",))
        rules = data.get("rules")
        if rules is None:
            if "rules" not in data:
                self.err((), "a rule file must have a rules: list")
            return []
        if not isinstance(rules, list):
            self.err(("rules",), f"expected a list of rules (lines starting with '- '), found {describe_value(rules)}")
            return []
        out = []
        for i, item in enumerate(rules):
            rule = self.rule(("rules", i), i, item)
            if rule is not None:
                out.append(rule)
        return out

    def named(self) -> list[tuple[str, tuple[int, int]]]:
        """(name, position) of every rule with a valid name, valid rule or not."""
        return [(name, self.b.pos(("rules", i, "name"))) for i, name in sorted(self.names.items())]

    def rule(self, path: KeyPath, index: int, item: Any) -> Rule | None:
        if not isinstance(item, dict):
            self.err(path, f"each rule must be a mapping with name:, when: and then:, found {describe_value(item)}")
            return None
        raw_name = item.get("name")
        name = None
        if "name" not in item:
            self.err(path, "missing required key 'name'")
        elif (name := self.string((*path, "name"), raw_name, "a rule name")) is not None:
            name = name.strip()
            if not _RULE_NAME.match(name):
                self.err((*path, "name"), f"rule name {name!r} may hold letters, digits, '.', '_' and '-' only")
                name = None
            else:
                self.names[index] = name
        self.keys(path, item, RULE_KEYS)
        ok = name is not None

        description = ""
        if "description" in item:
            description = self.string((*path, "description"), item["description"], "a description") or ""
        enabled = True
        if "enabled" in item:
            got = self.boolean((*path, "enabled"), item["enabled"])
            ok &= got is not None
            enabled = bool(got) if got is not None else True
        cont = False
        if "continue" in item:
            got = self.boolean((*path, "continue"), item["continue"])
            ok &= got is not None
            cont = bool(got)

        when: c.Condition | None = None
        if "when" in item:
            if item["when"] is None:
                self.err((*path, "when"), "when: is empty (leave it out to match every message)")
                ok = False
            else:
                when = self.condition((*path, "when"), item["when"])
                ok &= when is not None
        captures = when.captures if when is not None else frozenset()
        self.mentioned = when.mentioned if when is not None else frozenset()
        # a broken condition's captures are unknown: do not blame the templates for them
        self.captures_known = when is not None or "when" not in item

        if "then" not in item:
            self.err(path, "missing required key 'then' (what to do: skip, track, regarding: ...)")
            return None
        got_then = self.then((*path, "then"), item["then"], captures, rule_continue=cont)
        if got_then is None or not ok:
            return None
        then, then_cont = got_then
        line = self.b.pos(path)[0]
        return Rule(name or "", when, then, cont or then_cont, enabled, description, f"{self.file}:{line}")
