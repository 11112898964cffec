"""What every server-rules backend speaks: rules, routes, plans (issue 20).

A mailbox backend reads the mailbox's rules from its server (Sieve over
ManageSieve for IMAP, GetInboxRules for Exchange Server, ``messageRules`` for
Graph) into :class:`ServerRule` values, and turns the routes of the config
into a :class:`Plan` that changes only the rules mailfiler owns.

It lives here, below the backend registry, so that each backend brings its
own :class:`RulesBackend` from its own package (``Backend.server_rules``);
:mod:`mailfiler.serverrules` marks the rules and runs the plans, whatever the
backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

#: what an action does to the message, in terms any backend can map to
ActionKind = Literal[
    "move",  # files it into a folder; it no longer lands where it would have
    "copy",  # files a copy into a folder
    "redirect",  # sends it on to another address; it does not land here
    "forward",  # sends a copy to another address; it still lands here
    "delete",  # discards it (or moves it to Deleted Items)
    "reject",  # refuses it, back to the sender
    "keep",  # lands where it would have anyway
    "stop",  # no further rules run
    "flag",  # sets, adds or removes flags or categories
    "reply",  # an automatic reply (vacation)
    "notify",  # a notification elsewhere; the message is unchanged
    "include",  # runs the rules of another script
    "other",  # anything else; ``text`` says what
]

CONDITION_OPS = ("test", "allof", "anyof", "not", "true", "false")


@dataclass(frozen=True)
class Condition:
    """One condition, or a combination of them (``op`` allof/anyof/not).

    A ``test`` compares ``fields`` (header names such as ``from``, ``subject``;
    ``envelope:from``; ``body``; ``size``) by ``match`` (is, contains,
    matches, regex, over, under, exists...) against ``values``; ``part``
    narrows an address to its ``domain``, ``localpart`` or ``all``."""

    op: str = "test"
    fields: tuple[str, ...] = ()
    match: str = "is"
    values: tuple[str, ...] = ()
    part: str | None = None
    children: tuple[Condition, ...] = ()
    text: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": self.op, "text": self.text}
        if self.op == "test":
            data.update(fields=list(self.fields), match=self.match, values=list(self.values), part=self.part)
        if self.children:
            data["children"] = [c.to_json() for c in self.children]
        return data


@dataclass(frozen=True)
class Action:
    kind: str
    #: a folder ("/"-separated, as in the config), an address, or a script name
    target: str | None = None
    text: str = ""


@dataclass
class ServerRule:
    """One rule on the server, as the backend found it."""

    name: str
    #: where it is: a Sieve script and line, an EWS or Graph rule id
    where: str
    conditions: Condition | None
    actions: list[Action]
    enabled: bool = True
    #: written by mailfiler (in its own script, or found by its name)
    owned: bool = False
    #: filled in by analyze.mark(): tracked / missing-folder / past-tracking notes
    marks: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "where": self.where,
            "enabled": self.enabled,
            "owned": self.owned,
            "conditions": self.conditions.to_json() if self.conditions else None,
            "condition_text": self.conditions.text if self.conditions else "always",
            "actions": [asdict(a) for a in self.actions],
            "marks": list(self.marks),
        }


@dataclass
class RulesSnapshot:
    """Everything read from one mailbox's server in one pass."""

    backend: str
    rules: list[ServerRule]
    #: scripts (or rule sets) the server holds, with their state
    scripts: list[dict[str, Any]] = field(default_factory=list)
    #: things that keep the rules from being read or written as they should:
    #: a broken script, an include that cannot be followed
    problems: list[str] = field(default_factory=list)
    #: a digest of everything read, so that a re-read can tell whether anything changed
    digest: str = ""


@dataclass(frozen=True)
class Route:
    """Which mail a tracked folder's rule moves there (the config's ``route:``).

    Values within one list are alternatives; the lists given must all hold."""

    folder: str
    from_domains: tuple[str, ...] = ()
    from_addresses: tuple[str, ...] = ()
    subject_contains: tuple[str, ...] = ()
    to_addresses: tuple[str, ...] = ()

    @property
    def rule_name(self) -> str:
        """The rule's name on the server: how mailfiler finds its own rules again."""
        return f"mailfiler: {self.folder}"


@dataclass(frozen=True)
class Change:
    op: Literal["create", "update", "delete", "include", "activate"]
    #: the rule's name, or the script's for include/activate
    name: str
    detail: str = ""


@dataclass
class Plan:
    """What an apply would change; ``changes`` empty means in step already.

    ``payload`` is the backend's own: for Sieve, the scripts to write."""

    mailbox: str
    backend: str
    changes: list[Change]
    payload: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "backend": self.backend,
            "changes": [asdict(c) for c in self.changes],
            "warnings": list(self.warnings),
        }


class RulesBackend(Protocol):
    """A mailbox's rules on its server.

    Implementations: :class:`mailfiler.sources.sieve.backend.SieveBackend`,
    :class:`mailfiler.sources.ews.rules.EwsRules` (GetInboxRules and
    UpdateInboxRules, never removing Outlook client-side rules:
    RemoveOutlookRuleBlob false) and :class:`mailfiler.sources.graph.rules.GraphRules`
    (``messageRules``, only the rules whose displayName it wrote)."""

    name: str

    async def read(self) -> RulesSnapshot:
        """Every rule on the server, mailfiler's own marked ``owned``."""
        ...

    async def plan(self, routes: list[Route]) -> Plan:
        """The changes that bring mailfiler's rules in step with ``routes``.

        Raises ServerRulesBroken when a script it would have to write to is
        broken, and ServerRulesUnsupported when the server cannot hold them."""
        ...

    async def apply(self, plan: Plan) -> None:
        """Make the changes of a plan from :meth:`plan` (never the user's rules)."""
        ...


__all__ = ["Action", "Change", "Condition", "Plan", "Route", "RulesBackend", "RulesSnapshot", "ServerRule"]
