"""Read rule files: every problem at once, each as ``FILE:LINE:COL: message``.

The YAML is read with the config loader's position-tracking builder
(:mod:`mailfiler.config.yamlpos`), then checked by hand rather than with
pydantic: conditions nest (``all``/``any``/``not``), and each problem (an
unknown key, a regex RE2 rejects, a template naming a capture the
condition cannot produce) must point at its own line and column.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from mailfiler.config.yamlpos import MAP, Builder, KeyPath, Problem, compose, describe_value, fmt_path, is_empty
from mailfiler.errors import ConfigError
from mailfiler.rules import conditions as c
from mailfiler.rules.actions import LOOKUP_FIELDS, Actions, CreateContactAction, RegardingAction
from mailfiler.rules.evaluate import Rule, RuleSet
from mailfiler.rules.patterns import PatternError, compile_folder, compile_regex, parse_domain, parse_size
from mailfiler.rules.templates import BUILTIN_NAMES, Template, TemplateError

__all__ = ["check_rules", "load_rules", "rule_files"]

RULE_KEYS = ("name", "description", "enabled", "when", "then", "continue")
THEN_KEYS = ("skip", "track", "regarding", "create_contact", "categories", "owner", "stop", "continue")
THEN_WORDS = ("skip", "track", "stop")
REGARDING_KEYS = ("entity", "key", "name", "field", "value", "create", "fields")
FIELDS_KEYS = ("name", "parent", "emails", "domains")
CONTACT_ENTITIES = ("contact", "lead")
#: built-in template names a capture must not shadow
_RESERVED = frozenset(n for n in BUILTIN_NAMES if "." not in n)
_RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except ":"
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


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"expected one of: {', '.join(choices)}"


class _Checker:
    """Turns the built data of one file into rules, recording problems."""

    def __init__(self, file: str, built: Builder, known: list[str]) -> None:
        self.file = file
        self.b = built
        self.known = known
        self.names: dict[int, str] = {}  # rule index -> name, for messages
        #: capture names anywhere in the current rule's condition (for messages)
        self.mentioned: frozenset[str] = frozenset()
        self.captures_known = True

    # -- reporting -----------------------------------------------------------

    def err(self, path: KeyPath, message: str, *, at_key: bool = False, label: KeyPath | None = None) -> None:
        """A problem at *path* (its value, or its key), its message prefixed with
        where it is (*label*; by default *path*, or the mapping holding the key)."""
        if any(path[:i] in self.b.poisoned for i in range(len(path) + 1)):
            return  # the YAML problem there is already reported
        line, col = self.b.key_pos(path) if at_key else self.b.pos(path)
        if label is None:
            label = path[:-1] if at_key else path
        self.b.problems.append(Problem(self.file, line, col, self._label(label) + message))

    def _label(self, path: KeyPath) -> str:
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int) and path[1] in self.names:
            rest = fmt_path(path[2:])
            head = f"rule {self.names[path[1]]!r}"
            return f"{head}: {rest}: " if rest else f"{head}: "
        return f"{fmt_path(path)}: " if path else ""

    def keys(self, path: KeyPath, data: dict[str, Any], allowed: Sequence[str]) -> None:
        for key in data:
            if key not in allowed:
                msg = f"unknown key {key!r} ({_did_you_mean(key, allowed)})"
                self.err((*path, key), msg, at_key=True)

    # -- plain values -----------------------------------------------------------

    def mapping(self, path: KeyPath, value: Any, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.err(path, f"expected {what} (key: value lines), found {describe_value(value)}")
        return None

    def string(self, path: KeyPath, value: Any, what: str = "a string", *, empty: bool = False) -> str | None:
        if isinstance(value, str) and (empty or value.strip()):
            return value
        found = "an empty string" if isinstance(value, str) else describe_value(value)
        if isinstance(value, bool):
            found += " (YAML reads a bare yes, no, on or off as true or false: quote it)"
        self.err(path, f"expected {what}, found {found}")
        return None

    def boolean(self, path: KeyPath, value: Any) -> bool | None:
        if isinstance(value, bool):
            return value
        self.err(path, f"expected true or false, found {describe_value(value)}")
        return None

    def strings(self, path: KeyPath, value: Any, what: str, *, empty: bool = False) -> list[tuple[KeyPath, str]] | None:
        """A string or a non-empty list of strings, each with its path."""
        if isinstance(value, str):
            return [(path, value)] if self.string(path, value, what, empty=empty) is not None else None
        if not isinstance(value, list) or not value:
            self.err(path, f"expected {what} or a list of them, found {describe_value(value)}")
            return None
        out: list[tuple[KeyPath, str]] = []
        ok = True
        for i, item in enumerate(value):
            if self.string((*path, i), item, what, empty=empty) is None:
                ok = False
            else:
                out.append(((*path, i), item))
        return out if ok else None

    def entity(self, path: KeyPath, value: Any) -> str | None:
        name = self.string(path, value, "an entity type")
        if name is None:
            return None
        name = name.strip()
        if name not in self.known:
            hint = _did_you_mean(name, self.known).replace("expected one of", "known")
            self.err(path, f"unknown entity type {name!r} ({hint})")
            return None
        return name

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

    # -- conditions ----------------------------------------------------------------

    def condition(self, path: KeyPath, value: Any) -> c.Condition | None:
        data = self.mapping(path, value, "a mapping of conditions")
        if data is None:
            return None
        if not data:
            self.err(path, "no conditions (write at least one, such as subject: or folder:)")
            return None
        parts: list[c.Condition] = []
        ok = True
        for key, val in data.items():
            parse = self._CONDITIONS.get(key)
            if parse is None:
                self.err(
                    (*path, key),
                    f"unknown condition {key!r} ({_did_you_mean(key, list(self._CONDITIONS))})",
                    at_key=True,
                    label=path,
                )
                ok = False
                continue
            part = parse(self, (*path, key), val, key)
            if part is None:
                ok = False
            else:
                parts.append(part)
        return c.all_of(parts) if ok else None

    def _combinator(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        if not isinstance(value, list) or not value:
            self.err(
                path, f"{key}: expects a list of conditions (lines starting with '- '), found {describe_value(value)}"
            )
            return None
        parts = [self.condition((*path, i), item) for i, item in enumerate(value)]
        if any(p is None for p in parts):
            return None
        done = tuple(p for p in parts if p is not None)
        return c.AllOf(done) if key == "all" else c.AnyOf(done)

    def _not(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        part = self.condition(path, value)
        return c.Not(part) if part is not None else None

    def _folder(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        items = self.strings(path, value, "a folder pattern")
        if items is None:
            return None
        patterns = []
        for p, text in items:
            try:
                pattern = compile_folder(text)
            except PatternError as exc:
                self.err(p, str(exc))
                return None
            if not self._no_reserved(p, pattern.names):
                return None
            patterns.append(pattern)
        return c.FolderCond(tuple(patterns))

    def _mailbox(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        items = self.strings(path, value, "a mailbox name")
        return c.MailboxCond(frozenset(t.strip().lower() for _, t in items)) if items else None

    def _direction(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        if value in ("incoming", "outgoing"):
            return c.DirectionCond(value)
        self.err(path, f"direction must be incoming or outgoing, found {describe_value(value)}")
        return None

    def _addresses(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        items = self.strings(path, value, "an e-mail address")
        if items is None:
            return None
        out = set()
        for p, text in items:
            addr = text.strip().lower()
            local, at, domain = addr.rpartition("@")
            if not at or not local or not domain or " " in addr:
                hint = f" (for a whole domain use {key}_domain:)" if addr.startswith("@") or not at else ""
                self.err(p, f"{text!r} is not an e-mail address{hint}")
                return None
            out.add(addr)
        return c.AddressCond(key, frozenset(out))

    def _domains(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        items = self.strings(path, value, "a domain")
        if items is None:
            return None
        exact, suffixes = set(), set()
        for p, text in items:
            try:
                domain, sub = parse_domain(text)
            except PatternError as exc:
                self.err(p, str(exc))
                return None
            if sub:
                suffixes.add("." + domain)
            else:
                exact.add(domain)
        return c.DomainCond(key.removesuffix("_domain"), frozenset(exact), tuple(sorted(suffixes)))

    def _regexes(self, path: KeyPath, value: Any) -> tuple[Any, ...] | None:
        # '' is a regex too: it matches any value, so header: {X-Foo: ''} means "has X-Foo"
        items = self.strings(path, value, "a regular expression", empty=True)
        if items is None:
            return None
        out = []
        for p, text in items:
            try:
                regex = compile_regex(text)
            except PatternError as exc:
                self.err(p, str(exc))
                return None
            if not self._no_reserved(p, regex.names):
                return None
            out.append(regex)
        return tuple(out)

    def _text(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        regexes = self._regexes(path, value)
        return c.TextCond(key, regexes) if regexes else None

    def _header(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        data = self.mapping(path, value, "a mapping of header names to regular expressions")
        if data is None:
            return None
        if not data:
            self.err(path, "no headers (write NAME: REGEX lines, such as X-Priority: '^1')")
            return None
        parts: list[c.Condition] = []
        ok = True
        for name, pattern in data.items():
            if not _HEADER_NAME.match(name):
                self.err((*path, name), f"{name!r} is not a header name", at_key=True)
                ok = False
                continue
            regexes = self._regexes((*path, name), pattern)
            if regexes is None:
                ok = False
            else:
                parts.append(c.HeaderCond(name.lower(), regexes))
        return c.all_of(parts) if ok else None

    def _bool(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        got = self.boolean(path, value)
        if got is None:
            return None
        return c.BoolCond(got) if key == "has_attachment" else c.AutoSubmittedCond(got)

    def _size(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        data = self.mapping(path, value, "min: and/or max: sizes")
        if data is None:
            return None
        self.keys(path, data, ("min", "max"))
        if not data.keys() & {"min", "max"}:
            self.err(path, "give min:, max: or both (bytes, or a string such as '10MB')")
            return None
        bounds: dict[str, int] = {}
        for bound in ("min", "max"):
            if bound in data:
                try:
                    bounds[bound] = parse_size(data[bound])
                except PatternError as exc:
                    self.err((*path, bound), str(exc))
                    return None
        if set(data) - {"min", "max"}:
            return None
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            self.err(path, f"min ({bounds['min']} bytes) is larger than max ({bounds['max']} bytes)")
            return None
        return c.SizeCond(bounds.get("min"), bounds.get("max"))

    def _entity_is(self, path: KeyPath, value: Any, key: str) -> c.Condition | None:
        role = key.removesuffix("_is")
        if value in ("any", "none"):
            return c.EntityCond(role, frozenset(), value)
        items = self.strings(path, value, "an entity type, any or none")
        if items is None:
            return None
        entities = [self.entity(p, t) for p, t in items]
        if any(e is None for e in entities):
            return None
        return c.EntityCond(role, frozenset(e for e in entities if e), "of")

    def _no_reserved(self, path: KeyPath, names: frozenset[str]) -> bool:
        clash = sorted(names & _RESERVED)
        if clash:
            self.err(path, f"capture name {clash[0]!r} is a built-in template name; choose another")
            return False
        return True

    _CONDITIONS: dict[str, Callable[[_Checker, KeyPath, Any, str], c.Condition | None]] = {
        "all": _combinator,
        "any": _combinator,
        "not": _not,
        "folder": _folder,
        "mailbox": _mailbox,
        "direction": _direction,
        "from": _addresses,
        "to": _addresses,
        "cc": _addresses,
        "recipient": _addresses,
        "from_domain": _domains,
        "to_domain": _domains,
        "cc_domain": _domains,
        "recipient_domain": _domains,
        "subject": _text,
        "body": _text,
        "header": _header,
        "has_attachment": _bool,
        "auto_submitted": _bool,
        "size": _size,
        "sender_is": _entity_is,
        "recipient_is": _entity_is,
    }

    # -- actions -----------------------------------------------------------------------

    def template(
        self, path: KeyPath, value: Any, captures: frozenset[str], what: str, *, shown: str | None = None
    ) -> Template | None:
        """A template whose names the condition produces; *shown* is the text
        to quote in messages (the whole value, when the template is part of it)."""
        text = self.string(path, value, what)
        if text is None:
            return None
        try:
            template = Template.parse(text)
        except TemplateError as exc:
            self.err(path, str(exc))
            return None
        missing = sorted(template.names - captures - set(BUILTIN_NAMES))
        if missing and self.captures_known:
            have = ", ".join(sorted(captures)) or "none"
            if missing[0] in self.mentioned:
                why = "under any: a name counts only when every branch captures it; under not: never"
            else:
                why = "built-in names: " + ", ".join(BUILTIN_NAMES)
            self.err(
                path,
                f"template {(shown or text)!r} names {{{missing[0]}}}, which the condition cannot produce"
                f" (it captures: {have}; {why})",
            )
            return None
        return template

    def then(
        self, path: KeyPath, value: Any, captures: frozenset[str], *, rule_continue: bool
    ) -> tuple[Actions, bool] | None:
        if isinstance(value, str):
            word = value.strip()
            if word not in THEN_WORDS:
                self.err(path, f"unknown action {word!r} ({_did_you_mean(word, THEN_WORDS)}; or a mapping of actions)")
                return None
            if word == "stop":
                return Actions(stop=True), False
            return Actions(action=word), False
        data = self.mapping(path, value, "an action (skip, track) or a mapping of actions")
        if data is None:
            return None
        self.keys(path, data, THEN_KEYS)
        ok = not (set(data) - set(THEN_KEYS))
        flags: dict[str, bool] = {}
        for flag in ("skip", "track", "stop", "continue"):
            if flag in data:
                got = self.boolean((*path, flag), data[flag])
                ok &= got is not None
                flags[flag] = bool(got)
        regarding = None
        if "regarding" in data:
            regarding = self.regarding((*path, "regarding"), data["regarding"], captures)
            ok &= regarding is not None
        contact = None
        if "create_contact" in data:
            contact = self.create_contact((*path, "create_contact"), data["create_contact"])
            ok &= contact is not False
        categories: list[Template] = []
        if "categories" in data:
            items = self.strings((*path, "categories"), data["categories"], "a category")
            ok &= items is not None
            for p, text in items or ():
                t = self.template(p, text, captures, "a category")
                ok &= t is not None
                if t is not None:
                    categories.append(t)
        owner = None
        if "owner" in data:
            owner = self.template((*path, "owner"), data["owner"], captures, "an e-mail address")
            ok &= owner is not None
            if owner is not None and not owner.names and "@" not in owner.source:
                self.err((*path, "owner"), f"owner {owner.source!r} is not an e-mail address")
                ok = False
        if not ok:
            return None

        action = "skip" if flags.get("skip") else ("track" if flags.get("track") else None)
        if flags.get("skip") and flags.get("track"):
            self.err(path, "skip and track contradict each other")
            return None
        if action == "skip" and (regarding is not None or contact):
            what = "regarding" if regarding is not None else "create_contact"
            self.err((*path, "skip"), f"a skipped message is never tracked, so {what}: would never be used")
            return None
        then_continue = flags.get("continue", False)
        if then_continue and rule_continue:
            self.err((*path, "continue"), "continue: is already set on the rule; say it once", at_key=True)
            return None
        if flags.get("stop") and (then_continue or rule_continue):
            self.err((*path, "stop"), "stop and continue contradict each other", at_key=True)
            return None
        actions = Actions(
            action=action,
            regarding=regarding,
            create_contact=contact or None,
            categories=tuple(categories),
            owner=owner,
            stop=flags.get("stop", False),
        )
        if not (actions.decides or actions.create_contact or actions.categories or actions.owner or actions.stop):
            self.err(path, "does nothing (give skip, track, regarding:, categories:, owner: ...)")
            return None
        return actions, then_continue

    def regarding(self, path: KeyPath, value: Any, captures: frozenset[str]) -> RegardingAction | None:
        if isinstance(value, str):
            entity_text, sep, key = value.partition(":")
            if not sep or not entity_text.strip() or not key.strip():
                self.err(path, f"expected ENTITY:KEY such as account:contoso, or a mapping; found {value!r}")
                return None
            entity = self.entity(path, entity_text.strip())
            key_t = self.template(path, key.strip(), captures, "a record key", shown=value)
            return RegardingAction(entity, key=key_t) if entity and key_t else None
        data = self.mapping(path, value, "ENTITY:KEY or a mapping with entity: and key:, name: or field:")
        if data is None:
            return None
        self.keys(path, data, REGARDING_KEYS)
        ok = not (set(data) - set(REGARDING_KEYS))
        if "entity" not in data:
            self.err(path, "missing required key 'entity'")
            return None
        entity = self.entity((*path, "entity"), data["entity"])
        ok &= entity is not None
        lookups = [k for k in ("key", "name", "field") if k in data]
        if len(lookups) != 1:
            found = " and ".join(lookups) if lookups else "none"
            self.err(path, f"give exactly one of key:, name: or field: (with value:); found {found}")
            return None
        templates: dict[str, Template | None] = {}
        for k in ("key", "name", "value"):
            if k in data:
                templates[k] = self.template((*path, k), data[k], captures, f"a record {k}")
                ok &= templates[k] is not None
        lookup_field = None
        if "field" in data:
            lookup_field = data["field"]
            if lookup_field not in LOOKUP_FIELDS:
                self.err(
                    (*path, "field"),
                    f"field must be one of {', '.join(LOOKUP_FIELDS)}, found {describe_value(lookup_field)}",
                )
                ok = False
            if "value" not in data:
                self.err(path, "field: needs value: (what to look up, e.g. '{from.address}')")
                ok = False
        elif "value" in data:
            self.err((*path, "value"), "value: goes with field: (use key: or name: otherwise)", at_key=True)
            ok = False
        create = False
        if "create" in data:
            got = self.boolean((*path, "create"), data["create"])
            ok &= got is not None
            create = bool(got)
        fields: dict[str, Any] = {}
        if "fields" in data:
            if not create:
                self.err((*path, "fields"), "fields: is used only with create: true", at_key=True)
                ok = False
            got_fields = self.fields((*path, "fields"), data["fields"], captures)
            ok &= got_fields is not None
            fields = got_fields or {}
        if not ok or entity is None:
            return None
        return RegardingAction(
            entity,
            key=templates.get("key"),
            name=templates.get("name"),
            field=lookup_field,
            value=templates.get("value"),
            create=create,
            **fields,
        )

    def fields(self, path: KeyPath, value: Any, captures: frozenset[str]) -> dict[str, Any] | None:
        data = self.mapping(path, value, "a mapping of record fields (name, parent, emails, domains)")
        if data is None:
            return None
        self.keys(path, data, FIELDS_KEYS)
        ok = not (set(data) - set(FIELDS_KEYS))
        out: dict[str, Any] = {}
        if "name" in data:
            out["fields_name"] = self.template((*path, "name"), data["name"], captures, "a record name")
            ok &= out["fields_name"] is not None
        if "parent" in data:
            t = self.template((*path, "parent"), data["parent"], captures, "ENTITY:KEY of the parent")
            ok &= t is not None
            if t is not None:
                entity, sep, _ = t.source.partition(":")
                if not sep:
                    self.err(
                        (*path, "parent"), f"expected ENTITY:KEY such as account:{{account|slug}}, found {t.source!r}"
                    )
                    ok = False
                elif "{" not in entity:
                    ok &= self.entity((*path, "parent"), entity.strip()) is not None
            out["fields_parent"] = t
        for k in ("emails", "domains"):
            if k in data:
                items = self.strings((*path, k), data[k], "an e-mail address" if k == "emails" else "a domain")
                ok &= items is not None
                got = [self.template(p, text, captures, k[:-1]) for p, text in items or ()]
                ok &= all(t is not None for t in got)
                out[f"fields_{k}"] = tuple(t for t in got if t is not None)
        return out if ok else None

    def create_contact(self, path: KeyPath, value: Any) -> CreateContactAction | Literal[False] | None:
        """The action, None for ``false``, False for a problem."""
        if isinstance(value, bool):
            return CreateContactAction() if value else None
        data = self.mapping(path, value, "true or a mapping with entity: and parent_by_domain:")
        if data is None:
            return False
        self.keys(path, data, ("entity", "parent_by_domain"))
        if set(data) - {"entity", "parent_by_domain"}:
            return False
        entity = "contact"
        if "entity" in data:
            entity = data["entity"]
            if entity not in CONTACT_ENTITIES:
                self.err((*path, "entity"), f"create_contact creates a contact or a lead, not {describe_value(entity)}")
                return False
            if entity not in self.known:
                self.err((*path, "entity"), f"unknown entity type {entity!r}")
                return False
        parent_by_domain = True
        if "parent_by_domain" in data:
            got = self.boolean((*path, "parent_by_domain"), data["parent_by_domain"])
            if got is None:
                return False
            parent_by_domain = got
        return CreateContactAction(entity, parent_by_domain)
