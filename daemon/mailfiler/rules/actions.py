"""What a rule's ``then:`` compiles to, and the specs a decision hands on.

Templates are stored unrendered (:class:`Template`) and rendered with the
condition's captures when the rule matches.  The rendered results are plain
frozen dataclasses (:class:`RegardingSpec`, :class:`CreateContactSpec`):
the tracking pipeline looks records up and creates them; the rule engine
never touches the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from mailfiler.rules.conditions import View
from mailfiler.rules.names import split_display_name
from mailfiler.rules.templates import Template

__all__ = [
    "LOOKUP_FIELDS",
    "Actions",
    "CreateContactAction",
    "CreateContactSpec",
    "RecordFields",
    "RegardingAction",
    "RegardingSpec",
    "template_values",
]

#: record fields a regarding can be looked up by (``field:``)
LOOKUP_FIELDS = ("email", "domain")


@dataclass(frozen=True)
class RecordFields:
    """Fields for a record that ``create: true`` creates (rendered)."""

    name: str | None = None
    #: ENTITY:KEY of the parent record
    parent: str | None = None
    emails: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegardingSpec:
    """The record a message is regarding, with every template substituted.

    Exactly one of: ``key`` (the record's key), ``name`` (the record's
    display name, matched case-insensitively), or ``field`` + ``value``
    (``email``: a record with that e-mail address; ``domain``: a record with
    that domain).  With ``create``, the record is created when the lookup
    finds none, with ``fields`` (its name defaults to the name, key or
    value looked up; its key, when not given, is derived by the store).
    """

    entity: str
    key: str | None = None
    name: str | None = None
    field: str | None = None
    value: str | None = None
    create: bool = False
    fields: RecordFields = dataclasses.field(default_factory=RecordFields)

    @property
    def ref(self) -> str | None:
        """``ENTITY:KEY`` when looked up by key."""
        return f"{self.entity}:{self.key}" if self.key is not None else None

    def describe(self) -> str:
        if self.key is not None:
            text = f"{self.entity}:{self.key}"
        elif self.name is not None:
            text = f"{self.entity} named {self.name!r}"
        else:
            text = f"{self.entity} with {self.field} {self.value!r}"
        return text + (" (created if missing)" if self.create else "")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class CreateContactSpec:
    """Create a contact (or lead) for the sender when no record has its address.

    The name comes from the From display name (or the address) through
    :func:`mailfiler.rules.split_display_name`; with ``parent_by_domain``
    the new record's parent is the record the sender's domain resolves to.
    """

    entity: str
    parent_by_domain: bool
    address: str
    display_name: str
    first: str
    last: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class RegardingAction:
    entity: str
    key: Template | None = None
    name: Template | None = None
    field: str | None = None
    value: Template | None = None
    create: bool = False
    fields_name: Template | None = None
    fields_parent: Template | None = None
    fields_emails: tuple[Template, ...] = ()
    fields_domains: tuple[Template, ...] = ()

    def render(self, values: Mapping[str, str]) -> RegardingSpec | str:
        """The spec, or why it cannot be made (a lookup template came out empty)."""

        def one(t: Template | None) -> str | None:
            return None if t is None else t.render(values).strip()

        key, name, value = one(self.key), one(self.name), one(self.value)
        for what, t, got in (("key", self.key, key), ("name", self.name, name), ("value", self.value, value)):
            if t is not None and not got:
                return f"regarding {what} {t.source!r} came out empty"
        if self.field in ("email", "domain") and value is not None:
            value = value.lower()
        parent = one(self.fields_parent)
        if parent is not None:
            entity, sep, pkey = parent.partition(":")
            parent = parent if sep and entity and pkey.strip() else None
        fields = RecordFields(
            name=one(self.fields_name) or None,
            parent=parent,
            emails=tuple(x for t in self.fields_emails if (x := t.render(values).strip().lower())),
            domains=tuple(x for t in self.fields_domains if (x := t.render(values).strip().lower())),
        )
        return RegardingSpec(self.entity, key, name, self.field, value, self.create, fields)


@dataclass(frozen=True)
class CreateContactAction:
    entity: str = "contact"
    parent_by_domain: bool = True

    def render(self, v: View) -> CreateContactSpec | None:
        if not v.facts.from_:
            return None
        sender = v.facts.from_[0]
        first, last = split_display_name(sender.name, sender.address)
        return CreateContactSpec(self.entity, self.parent_by_domain, sender.address.lower(), sender.name, first, last)


@dataclass(frozen=True)
class Actions:
    action: str | None = None  # track | skip
    regarding: RegardingAction | None = None
    create_contact: CreateContactAction | None = None
    categories: tuple[Template, ...] = ()
    owner: Template | None = None
    #: end evaluation after this rule even if it decides nothing
    stop: bool = False

    @property
    def decides(self) -> bool:
        """Whether the rule decides tracking or the regarding (and so ends
        evaluation when it matches, unless it says ``continue: true``)."""
        return self.action is not None or self.regarding is not None


def template_values(v: View, captures: Mapping[str, str]) -> dict[str, str]:
    """The built-in template names for this message, plus the captures."""
    sender = v.facts.from_[0] if v.facts.from_ else None
    address = sender.address.lower() if sender else ""
    first, last = split_display_name(sender.name, sender.address) if sender else ("", "")
    values = {
        "subject": v.subject,
        "mailbox": v.facts.mailbox or "",
        "folder": v.folder or "",
        "direction": v.direction,
        "from.address": address,
        "from.name": sender.name if sender else "",
        "from.domain": address.rpartition("@")[2],
        "from.local": address.rpartition("@")[0],
        "from.first": first,
        "from.last": last,
    }
    values.update(captures)
    return values
