"""Rule actions (``then:``): skip, track, regarding, create_contact,
categories, owner; templates checked against the captures the condition can
produce."""

from __future__ import annotations

from typing import Any, Literal

from mailfiler.config.yamlpos import KeyPath, describe_value
from mailfiler.rules.actions import LOOKUP_FIELDS, Actions, CreateContactAction, RegardingAction
from mailfiler.rules.checkbase import CheckerBase, did_you_mean
from mailfiler.rules.templates import BUILTIN_NAMES, Template, TemplateError

THEN_KEYS = ("skip", "track", "regarding", "create_contact", "categories", "owner", "stop", "continue")
THEN_WORDS = ("skip", "track", "stop")
REGARDING_KEYS = ("entity", "key", "name", "field", "value", "create", "fields")
FIELDS_KEYS = ("name", "parent", "emails", "domains")
CONTACT_ENTITIES = ("contact", "lead")


class ThenChecker(CheckerBase):
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
                self.err(path, f"unknown action {word!r} ({did_you_mean(word, THEN_WORDS)}; or a mapping of actions)")
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
