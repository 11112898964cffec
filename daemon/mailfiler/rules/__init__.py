"""The rule engine: YAML rules that decide what is tracked and what it is regarding.

Self-contained: it reads rule files and evaluates them against
:class:`Facts` the caller builds; it never touches the store.  The
language is documented in ``rules/README.md`` at the top of the repository.

Typical use::

    ruleset = load_rules(config.rules, known_entities=config.entity_types())
    facts = Facts.from_parsed(msg, raw_headers, mailbox=..., folder=..., direction=...,
                              sender_entities=..., recipient_entities=...)
    decision = ruleset.evaluate(facts)
"""

from __future__ import annotations

from mailfiler.rules.actions import CreateContactSpec, RecordFields, RegardingSpec
from mailfiler.rules.autoreply import auto_submitted_reason, is_auto_submitted
from mailfiler.rules.evaluate import Decision, Rule, RuleSet, TraceStep
from mailfiler.rules.facts import Address, Facts, direction_of, header_pairs
from mailfiler.rules.loader import check_rules, load_rules, rule_files
from mailfiler.rules.names import split_display_name
from mailfiler.rules.templates import slug

__all__ = [
    "Address",
    "CreateContactSpec",
    "Decision",
    "Facts",
    "RecordFields",
    "RegardingSpec",
    "Rule",
    "RuleSet",
    "TraceStep",
    "auto_submitted_reason",
    "check_rules",
    "direction_of",
    "header_pairs",
    "is_auto_submitted",
    "load_rules",
    "rule_files",
    "slug",
    "split_display_name",
]
