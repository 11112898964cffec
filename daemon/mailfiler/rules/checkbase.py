"""The rule checker's groundwork: where a problem is (FILE:LINE:COL and the
rule's name) and the plain values every key takes (strings, lists of them,
booleans, entity types).  :mod:`~mailfiler.rules.checkwhen` and
:mod:`~mailfiler.rules.checkthen` build on it; :mod:`~mailfiler.rules.loader`
puts the three together."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from mailfiler.config.yamlpos import Builder, KeyPath, Problem, describe_value, fmt_path
from mailfiler.rules.templates import BUILTIN_NAMES

#: template names a capture may not take
RESERVED = frozenset(n for n in BUILTIN_NAMES if "." not in n)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"expected one of: {', '.join(choices)}"


class CheckerBase:
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
                msg = f"unknown key {key!r} ({did_you_mean(key, allowed)})"
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
            hint = did_you_mean(name, self.known).replace("expected one of", "known")
            self.err(path, f"unknown entity type {name!r} ({hint})")
            return None
        return name

    def _no_reserved(self, path: KeyPath, names: frozenset[str]) -> bool:
        clash = sorted(names & RESERVED)
        if clash:
            self.err(path, f"capture name {clash[0]!r} is a built-in template name; choose another")
            return False
        return True
