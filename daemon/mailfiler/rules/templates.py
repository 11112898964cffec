"""Templates: ``{name}`` substitution in rule actions, and nothing more.

A template is text with ``{name}`` or ``{name|filter}`` placeholders; ``{{``
and ``}}`` stand for literal braces.  Names are the condition's captures
and the built-in names below.  There are no expressions, attribute access
or format specs: rules cannot run code, and a template never evaluates
anything from the message (``str.format`` on admin input could reach
object attributes).  Which names a template uses is known when the rules
load, so a name the condition cannot produce is a rule problem, never a
surprise while mail is tracked.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["BUILTIN_NAMES", "FILTERS", "Template", "TemplateError", "slug"]

#: names every template can use, filled from the message (see rules/README.md)
BUILTIN_NAMES = (
    "subject",
    "mailbox",
    "folder",
    "direction",
    "from.address",
    "from.name",
    "from.domain",
    "from.local",
    "from.first",
    "from.last",
)

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[a-z]+)?$")


def slug(value: str) -> str:
    """``Åkesson AB`` -> ``akesson-ab``: lower case, accents dropped, runs of
    anything but letters and digits made one ``-``."""
    text = unicodedata.normalize("NFKD", value)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return re.sub(r"[\W_]+", "-", text).strip("-")


FILTERS: dict[str, Callable[[str], str]] = {"lower": str.lower, "upper": str.upper, "slug": slug}


class TemplateError(ValueError):
    """A template that cannot be parsed; ``str()`` is the message."""


@dataclass(frozen=True)
class _Slot:
    name: str
    filters: tuple[str, ...]


@dataclass(frozen=True)
class Template:
    source: str
    parts: tuple[str | _Slot, ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        parts: list[str | _Slot] = []
        pos = 0
        for m in _TOKEN.finditer(source):
            if m.start() > pos:
                parts.append(source[pos : m.start()])
            pos = m.end()
            token = m.group(0)
            if token in ("{{", "}}"):
                parts.append(token[0])
            elif token in ("{", "}"):
                raise TemplateError(
                    f"template {source!r}: unbalanced {token!r} (write {token}{token} for a literal brace)"
                )
            else:
                name, *filters = (p.strip() for p in (m.group(1) or "").split("|"))
                if not name:
                    raise TemplateError(f"template {source!r}: empty {{}} (name a capture, as in {{number}})")
                if not _NAME.match(name):
                    raise TemplateError(
                        f"template {source!r}: {{{m.group(1)}}} is not a name"
                        " (templates substitute names only; no expressions)"
                    )
                for f in filters:
                    if f not in FILTERS:
                        raise TemplateError(f"template {source!r}: unknown filter {f!r} (known: {', '.join(FILTERS)})")
                parts.append(_Slot(name, tuple(filters)))
        if pos < len(source):
            parts.append(source[pos:])
        return cls(source, tuple(parts))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parts if isinstance(p, _Slot))

    def render(self, values: Mapping[str, str]) -> str:
        """Substitute; a name missing from *values* (checked away at load
        time) renders empty rather than raising."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values.get(part.name, "")
            for f in part.filters:
                value = FILTERS[f](value)
            out.append(value)
        return "".join(out)
