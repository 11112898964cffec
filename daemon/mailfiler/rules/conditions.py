"""Condition nodes: what a rule's ``when:`` compiles to, and how each is tested.

:meth:`Condition.test` returns the captures (a dict, maybe empty) when the
condition holds, or a short text saying why not, for the trace.  Each node
also knows statically which capture names it produces when it holds
(``captures``), which is what templates are checked against: ``all``
produces the union of its parts, ``any`` only the names every branch
produces, ``not`` none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from mailfiler.rules.autoreply import auto_submitted_reason
from mailfiler.rules.facts import Facts
from mailfiler.rules.patterns import BODY_CAP, HEADER_CAP, FolderPattern, Regex, safe_text

__all__ = [
    "AddressCond",
    "AllOf",
    "AnyOf",
    "AutoSubmittedCond",
    "BoolCond",
    "Condition",
    "DirectionCond",
    "DomainCond",
    "EntityCond",
    "FolderCond",
    "HeaderCond",
    "MailboxCond",
    "Not",
    "Outcome",
    "SizeCond",
    "TextCond",
    "View",
]

#: captures when a condition holds, or why it does not
Outcome = dict[str, str] | str

ROLES = ("from", "to", "cc", "recipient")


class View:
    """Facts prepared once per message for every rule: lower-cased
    addresses, texts capped and made safe for RE2, headers by name.  The
    body and headers are prepared only when a rule first needs them."""

    def __init__(self, facts: Facts) -> None:
        self.facts = facts
        self.mailbox = (facts.mailbox or "").lower()
        self.folder = facts.folder
        self.direction = (facts.direction or "").lower()
        self.subject = safe_text(facts.subject or "")
        recipients = (*facts.to, *facts.cc, *facts.bcc)
        self.addresses: dict[str, list[str]] = {
            "from": [a.address.lower() for a in facts.from_],
            "to": [a.address.lower() for a in facts.to],
            "cc": [a.address.lower() for a in facts.cc],
            "recipient": [a.address.lower() for a in recipients],
        }
        self.sender_entities = frozenset(e.lower() for e in facts.sender_entities)
        self.recipient_entities = frozenset(e.lower() for e in facts.recipient_entities)
        self._domains: dict[str, list[str]] = {}

    @cached_property
    def body(self) -> str:
        return safe_text((self.facts.body or "")[:BODY_CAP])

    @cached_property
    def headers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, value in self.facts.headers:
            out.setdefault(str(name).lower(), []).append(safe_text(str(value)[:HEADER_CAP]))
        return out

    @cached_property
    def auto_submitted(self) -> str | None:
        return auto_submitted_reason(self.facts)

    def domains(self, role: str) -> list[str]:
        found = self._domains.get(role)
        if found is None:  # once per message and role, not once per rule
            found = self._domains[role] = [a.rpartition("@")[2] for a in self.addresses[role]]
        return found


@dataclass(frozen=True)
class Condition:
    #: evaluation order inside all: cheap tests first (captures still merge in written order)
    cost = 0

    @property
    def captures(self) -> frozenset[str]:
        return frozenset()

    @property
    def mentioned(self) -> frozenset[str]:
        """Every capture name anywhere inside, produced or not (for messages)."""
        return self.captures

    def test(self, v: View) -> Outcome:
        raise NotImplementedError


@dataclass(frozen=True)
class _Alternatives(Condition):
    """A condition that holds when any one of its patterns matches: a capture is
    produced only when every pattern has it; any pattern's names are mentioned."""

    @property
    def alternatives(self) -> tuple[FolderPattern | Regex, ...]:
        raise NotImplementedError

    @property
    def captures(self) -> frozenset[str]:
        return frozenset.intersection(*(a.names for a in self.alternatives))

    @property
    def mentioned(self) -> frozenset[str]:
        return frozenset().union(*(a.names for a in self.alternatives))


# --- combinators ---------------------------------------------------------------


@dataclass(frozen=True)
class _Combinator(Condition):
    """Conditions over several parts: as costly as the costliest part."""

    parts: tuple[Condition, ...]

    @property
    def cost(self) -> int:  # type: ignore[override]
        return max((p.cost for p in self.parts), default=0)

    @property
    def mentioned(self) -> frozenset[str]:
        return frozenset().union(*(p.mentioned for p in self.parts))


@dataclass(frozen=True)
class AllOf(_Combinator):
    @property
    def captures(self) -> frozenset[str]:
        return frozenset().union(*(p.captures for p in self.parts))

    def test(self, v: View) -> Outcome:
        results: dict[int, dict[str, str]] = {}
        for i in sorted(range(len(self.parts)), key=lambda i: self.parts[i].cost):
            out = self.parts[i].test(v)
            if isinstance(out, str):
                return out
            results[i] = out
        merged: dict[str, str] = {}
        for i in range(len(self.parts)):  # the first condition written wins a name
            for k, val in results[i].items():
                merged.setdefault(k, val)
        return merged


@dataclass(frozen=True)
class AnyOf(_Combinator):
    @property
    def captures(self) -> frozenset[str]:
        sets = [p.captures for p in self.parts]
        return frozenset.intersection(*sets) if sets else frozenset()

    def test(self, v: View) -> Outcome:
        whys = []
        for part in self.parts:
            out = part.test(v)
            if not isinstance(out, str):
                return out
            whys.append(out)
        return "any: none held (" + "; ".join(whys) + ")"


@dataclass(frozen=True)
class Not(Condition):
    part: Condition

    @property
    def cost(self) -> int:  # type: ignore[override]
        return self.part.cost

    @property
    def mentioned(self) -> frozenset[str]:
        return self.part.mentioned

    def test(self, v: View) -> Outcome:
        out = self.part.test(v)
        if isinstance(out, str):
            return {}
        return "not: the condition inside held"


# --- leaves --------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxCond(Condition):
    names: frozenset[str]

    def test(self, v: View) -> Outcome:
        return {} if v.mailbox in self.names else f"mailbox {v.facts.mailbox!r} is not listed"


@dataclass(frozen=True)
class DirectionCond(Condition):
    direction: str

    def test(self, v: View) -> Outcome:
        return {} if v.direction == self.direction else f"direction is {v.direction}"


@dataclass(frozen=True)
class FolderCond(_Alternatives):
    patterns: tuple[FolderPattern, ...]
    cost = 1

    @property
    def alternatives(self) -> tuple[FolderPattern | Regex, ...]:
        return self.patterns

    def test(self, v: View) -> Outcome:
        if v.folder is None:
            return "the message is in no folder"
        for p in self.patterns:
            found = p.match(safe_text(v.folder))
            if found is not None:
                return found
        return f"folder {v.folder!r} did not match"


@dataclass(frozen=True)
class AddressCond(Condition):
    role: str  # from, to, cc, recipient
    addresses: frozenset[str]
    cost = 1

    def test(self, v: View) -> Outcome:
        if any(a in self.addresses for a in v.addresses[self.role]):
            return {}
        return f"no {self.role} address is listed"


@dataclass(frozen=True)
class DomainCond(Condition):
    role: str
    exact: frozenset[str]
    #: ".contoso.com" for every subdomain of contoso.com
    suffixes: tuple[str, ...]
    cost = 1

    def test(self, v: View) -> Outcome:
        for d in v.domains(self.role):
            if d in self.exact or (self.suffixes and d.endswith(self.suffixes)):
                return {}
        return f"no {self.role} domain is listed"


@dataclass(frozen=True)
class TextCond(_Alternatives):
    """``subject`` or ``body``: any of the regexes matches."""

    what: str
    regexes: tuple[Regex, ...]

    @property
    def cost(self) -> int:  # type: ignore[override]
        return 3 if self.what == "body" else 2

    @property
    def alternatives(self) -> tuple[FolderPattern | Regex, ...]:
        return self.regexes

    def test(self, v: View) -> Outcome:
        text = v.body if self.what == "body" else v.subject
        for r in self.regexes:
            found = r.search(text)
            if found is not None:
                return found
        return f"{self.what} did not match"


@dataclass(frozen=True)
class HeaderCond(_Alternatives):
    """Some value of header *name* matches any of the regexes; a missing header never matches."""

    name: str  # lower-case
    regexes: tuple[Regex, ...]
    cost = 2

    @property
    def alternatives(self) -> tuple[FolderPattern | Regex, ...]:
        return self.regexes

    def test(self, v: View) -> Outcome:
        values = v.headers.get(self.name)
        if not values:
            return f"no {self.name} header"
        for value in values:
            for r in self.regexes:
                found = r.search(value)
                if found is not None:
                    return found
        return f"header {self.name} did not match"


@dataclass(frozen=True)
class BoolCond(Condition):
    """``has_attachment``."""

    want: bool

    def test(self, v: View) -> Outcome:
        have = bool(v.facts.has_attachment)
        return {} if have == self.want else ("has an attachment" if have else "has no attachment")


@dataclass(frozen=True)
class AutoSubmittedCond(Condition):
    want: bool
    cost = 1

    def test(self, v: View) -> Outcome:
        reason = v.auto_submitted
        if (reason is not None) == self.want:
            return {}
        return f"auto-submitted ({reason})" if reason else "not auto-submitted"


@dataclass(frozen=True)
class SizeCond(Condition):
    min: int | None = None
    max: int | None = None

    def test(self, v: View) -> Outcome:
        size = v.facts.size
        if self.min is not None and size < self.min:
            return f"size {size} is under {self.min}"
        if self.max is not None and size > self.max:
            return f"size {size} is over {self.max}"
        return {}


@dataclass(frozen=True)
class EntityCond(Condition):
    """``sender_is`` / ``recipient_is``: an entity type list, ``any`` or ``none``."""

    role: str  # sender | recipient
    entities: frozenset[str] = field(default_factory=frozenset)
    mode: str = "of"  # of | any | none

    def test(self, v: View) -> Outcome:
        have = v.sender_entities if self.role == "sender" else v.recipient_entities
        if self.mode == "any":
            return {} if have else f"the {self.role} resolves to no record"
        if self.mode == "none":
            return {} if not have else f"the {self.role} resolves to {', '.join(sorted(have))}"
        if have & self.entities:
            return {}
        return f"the {self.role} resolves to {', '.join(sorted(have)) or 'no record'}"


def all_of(parts: Sequence[Condition]) -> Condition:
    """One condition for a mapping's keys: the single part, or all of them."""
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))
