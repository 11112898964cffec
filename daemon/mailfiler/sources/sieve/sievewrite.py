"""mailfiler's own Sieve script, and the one line it adds to the active script.

mailfiler's rules live in a script of their own (``mailfiler`` by default),
one ``if`` per tracked folder with a route, each named the Roundcube way
(``# rule:[mailfiler: FOLDER]``) so that webmail shows the names.  The active
script runs it through ``include :personal :optional`` (RFC 6609), added
after the active script's ``require`` lines; the user's own rules are never
rewritten.  ``:optional`` keeps the active script valid when mailfiler's
script is deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailfiler.sources.inboxrules import Route
from mailfiler.sources.sieve.sieveparse import parse, quote, string_list

#: the first line of every script mailfiler writes: how it knows the script is its own
MARKER = "# mailfiler: rules written by mailfiler from the route: of its tracked folders."
_HEADER = (
    MARKER
    + "\n# Changes made here are replaced at the next `mailfiler rules server apply`;"
    + "\n# keep your own rules in your other scripts.\n"
)
_RULE_LINE = re.compile(r"^# rule:\[(.*)\][ \t]*$", re.MULTILINE)
OWN_PREFIX = "mailfiler: "


def _sender(route: Route) -> str | None:
    tests = []
    if route.from_domains:
        domains = list(route.from_domains)
        tests.append(f'address :domain :is "from" {string_list(domains)}')
        # subdomains too, as never_track and the records' domains count them
        tests.append(f'address :domain :matches "from" {string_list(["*." + d for d in domains])}')
    if route.from_addresses:
        tests.append(f'address :all :is "from" {string_list(list(route.from_addresses))}')
    if not tests:
        return None
    return tests[0] if len(tests) == 1 else "anyof (" + ",\n        ".join(tests) + ")"


def route_test(route: Route) -> str:
    """The Sieve test of a route: who sent it (any of the senders), and every other list given."""
    tests = []
    sender = _sender(route)
    if sender:
        tests.append(sender)
    if route.to_addresses:
        tests.append(f'address :all :is ["to", "cc"] {string_list(list(route.to_addresses))}')
    if route.subject_contains:
        tests.append(f'header :contains "subject" {string_list(list(route.subject_contains))}')
    if len(tests) == 1:
        return tests[0]
    return "allof (" + ",\n      ".join(tests) + ")"


def rule_block(route: Route, server_folder: str) -> str:
    """One named rule: the lines from ``# rule:[...]`` to its closing brace."""
    return f"# rule:[{route.rule_name}]\nif {route_test(route)} {{\n    fileinto {quote(server_folder)};\n}}\n"


def script_text(blocks: list[str]) -> str:
    return _HEADER + 'require ["fileinto"];\n' + "".join("\n" + b for b in blocks)


def is_ours(text: str) -> bool:
    return text.startswith(MARKER)


def rule_blocks(text: str) -> dict[str, str]:
    """The named rules of a script, name -> text of its block (for comparing with what is wanted)."""
    found: dict[str, str] = {}
    marks = list(_RULE_LINE.finditer(text))
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        found[m.group(1).strip()] = text[m.start() : end].strip() + "\n"
    return found


@dataclass(frozen=True)
class IncludeEdit:
    """The active script with mailfiler's include added."""

    text: str
    #: the lines added, to show in a plan
    added: str


def include_line(script: str) -> str:
    return f"include :personal :optional {quote(script)};"


def add_include(active_text: str, script: str) -> IncludeEdit:
    """Add ``require "include"`` and the include of ``script`` after the
    leading ``require`` commands of the active script (RFC 5228 3.2: no
    require may follow another command).  The rest is left byte for byte."""
    commands = parse(active_text)
    insert_at = 0
    for cmd in commands:
        if cmd.name != "require":
            break
        insert_at = cmd.end
    added = f'require "include";\n{include_line(script)}\n'
    if insert_at == 0:
        return IncludeEdit(added + active_text, added)
    before, after = active_text[:insert_at], active_text[insert_at:]
    # the rest of the require's line (blanks, a comment) stays with it
    newline = after.find("\n")
    rest = after[:newline].strip() if newline >= 0 else None
    if rest is not None and (not rest or rest.startswith("#")):
        before, after = before + after[: newline + 1], after[newline + 1 :]
    else:
        before += "\n"
    return IncludeEdit(before + added + after, added)


def main_script(script: str) -> str:
    """A new active script for a mailbox that has none: it only includes mailfiler's."""
    return (
        "# The active script.  mailfiler's rules are in the script "
        + quote(script)
        + "; add your own rules here.\n"
        + f'require "include";\n{include_line(script)}\n'
    )


__all__ = ["MARKER", "OWN_PREFIX", "IncludeEdit", "add_include", "include_line", "is_ours", "main_script",
           "route_test", "rule_block", "rule_blocks", "script_text"]  # fmt: skip
