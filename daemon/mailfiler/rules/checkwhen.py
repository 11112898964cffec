"""Rule conditions (``when:``): each key checked at its own line and column,
nesting with ``all``/``any``/``not``; regexes compiled with RE2."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from mailfiler.config.yamlpos import KeyPath, describe_value
from mailfiler.rules import conditions as c
from mailfiler.rules.checkbase import CheckerBase, did_you_mean
from mailfiler.rules.patterns import PatternError, compile_folder, compile_regex, parse_domain, parse_size

_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # printable ASCII except ":"


class WhenChecker(CheckerBase):
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
                    f"unknown condition {key!r} ({did_you_mean(key, list(self._CONDITIONS))})",
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

    _CONDITIONS: dict[str, Callable[[WhenChecker, KeyPath, Any, str], c.Condition | None]] = {
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
