"""Read the rules out of a Sieve script: each ``if``/``elsif``/``else`` branch
(and each run of unconditional actions) is one rule, with its conditions and
actions in the backend-neutral terms of :mod:`mailfiler.sources.inboxrules`.

A rule is named by a ``# rule:[NAME]`` comment just before it (the convention
of Roundcube's managesieve plugin, which mailfiler also writes), otherwise
``SCRIPT #N``.  Nested ``if``s become rules of their own whose conditions
include their parents'.  Commands this module does not know are kept as
``other`` actions or tests, with their text, so nothing is hidden.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mailfiler.sources.inboxrules import Action, Condition, ServerRule
from mailfiler.sources.sieve.sieveparse import Arg, Command, Tag, Test, parse

#: tags that take the next argument as their value (across the RFC 5228 core and
#: the extensions in common use: relational, index, date, imap4flags, vacation,
#: enotify, mailbox, special-use, mime)
_TAGS_WITH_ARG = {
    "comparator", "value", "count", "index", "zone", "flags", "specialuse", "from", "days", "seconds",
    "subject", "addresses", "handle", "importance", "options", "message", "type", "subtype", "param",
}  # fmt: skip
_MATCH_TYPES = ("is", "contains", "matches", "regex", "value", "count", "list")
_ADDRESS_PARTS = ("all", "localpart", "domain", "user", "detail")
_RULE_NAME = re.compile(r"^rule:\[(.*)\]\s*$")

#: maps a folder name as the server writes it (its own separator) to the config's "/" form
FolderMap = Callable[[str], str]


def _split(args: list[Arg]) -> tuple[dict[str, Arg | None], list[Arg]]:
    """(tags with their values, positional arguments)."""
    tags: dict[str, Arg | None] = {}
    positional: list[Arg] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if isinstance(arg, Tag):
            if arg.name in _TAGS_WITH_ARG and i + 1 < len(args) and not isinstance(args[i + 1], Tag):
                tags[arg.name] = args[i + 1]
                i += 2
                continue
            tags[arg.name] = None
        else:
            positional.append(arg)
        i += 1
    return tags, positional


def _strings(arg: Arg | None) -> tuple[str, ...]:
    if isinstance(arg, tuple):
        return arg
    if isinstance(arg, int):
        return (str(arg),)
    return ()


def _render_values(values: tuple[str, ...]) -> str:
    shown = [f'"{v}"' for v in values[:5]]
    if len(values) > 5:
        shown.append(f"(+{len(values) - 5} more)")
    return " or ".join(shown)


def _render_args(args: list[Arg]) -> str:
    parts = []
    for arg in args:
        if isinstance(arg, Tag):
            parts.append(f":{arg.name}")
        elif isinstance(arg, int):
            parts.append(str(arg))
        else:
            parts.append(_render_values(arg))
    return " ".join(parts)


def condition(test: Test) -> Condition:
    """A Sieve test as a Condition (any test, known or not)."""
    name = test.name
    if name in ("allof", "anyof"):
        children = tuple(condition(t) for t in test.tests)
        joiner = " and " if name == "allof" else " or "
        text = joiner.join(f"({c.text})" if c.op in ("allof", "anyof") else c.text for c in children)
        return Condition(op=name, children=children, text=text)
    if name == "not":
        child = condition(test.tests[0]) if test.tests else Condition(op="true", text="true")
        return Condition(op="not", children=(child,), text=f"not ({child.text})")
    if name in ("true", "false"):
        return Condition(op=name, text=name)
    tags, positional = _split(test.args)
    match = next((m for m in _MATCH_TYPES if m in tags), "is")
    if match in ("value", "count"):
        match = f"{match} {' '.join(_strings(tags[match]))}".strip()
    part = next((p for p in _ADDRESS_PARTS if p in tags), None)
    if name in ("address", "header", "envelope") and len(positional) >= 2:
        fields = tuple(f.lower() for f in _strings(positional[-2]))
        if name == "envelope":
            fields = tuple(f"envelope:{f}" for f in fields)
            part = part or "all"
        elif name == "address":
            part = part or "all"
        values = _strings(positional[-1])
        shown_part = f" {part}" if part and part != "all" else ""
        text = f"{' or '.join(fields)}{shown_part} {match} {_render_values(values)}"
        return Condition(fields=fields, match=match, values=values, part=part, text=text)
    if name == "exists" and positional:
        fields = tuple(f.lower() for f in _strings(positional[-1]))
        return Condition(fields=fields, match="exists", text=f"{' and '.join(fields)} exists")
    if name == "size":
        over = "over" if "over" in tags else "under"
        limit = _strings(positional[-1])[0] if positional else "?"
        return Condition(fields=("size",), match=over, values=(limit,), text=f"size {over} {limit} bytes")
    if name == "body" and positional:
        values = _strings(positional[-1])
        return Condition(fields=("body",), match=match, values=values, text=f"body {match} {_render_values(values)}")
    return Condition(fields=(name,), match="other", text=f"{name} {_render_args(test.args)}".strip())


def action(cmd: Command, folder_map: FolderMap) -> Action:
    tags, positional = _split(cmd.args)
    first = _strings(positional[0])[0] if positional and _strings(positional[0]) else None
    name = cmd.name
    if name == "fileinto" and first is not None:
        folder = folder_map(first)
        if "copy" in tags:
            return Action("copy", folder, f"copy into {folder}")
        return Action("move", folder, f"move into {folder}")
    if name == "redirect" and first is not None:
        if "copy" in tags:
            return Action("forward", first.lower(), f"forward a copy to {first}")
        return Action("redirect", first.lower(), f"redirect to {first}")
    if name == "discard":
        return Action("delete", None, "discard")
    if name in ("reject", "ereject"):
        return Action("reject", None, f"{name} {_render_values(_strings(positional[0]))}" if positional else name)
    if name == "keep":
        return Action("keep", None, "keep")
    if name == "stop":
        return Action("stop", None, "stop")
    if name in ("addflag", "setflag", "removeflag"):
        flags = _strings(positional[-1]) if positional else ()
        return Action("flag", None, f"{name} {' '.join(flags)}")
    if name == "vacation":
        return Action("reply", None, "vacation reply")
    if name == "notify":
        return Action("notify", first, f"notify {first or ''}".strip())
    if name == "include" and positional:
        script = _strings(positional[-1])[0]
        where = "global" if "global" in tags else "personal"
        return Action("include", script, f"include the {where} script {script}")
    return Action("other", None, f"{name} {_render_args(cmd.args)}".strip())


def _rule_name(cmd: Command) -> str | None:
    for comment in reversed(cmd.comments):
        for line in reversed(comment.splitlines()):
            m = _RULE_NAME.match(line.strip().lstrip("#").strip())
            if m:
                return m.group(1).strip()
    return None


def _allof(conds: list[Condition]) -> Condition | None:
    if not conds:
        return None
    if len(conds) == 1:
        return conds[0]
    return condition_allof(conds)


def condition_allof(conds: list[Condition]) -> Condition:
    text = " and ".join(f"({c.text})" if c.op in ("allof", "anyof") else c.text for c in conds)
    return Condition(op="allof", children=tuple(conds), text=text)


def _negate(cond: Condition) -> Condition:
    return Condition(op="not", children=(cond,), text=f"not ({cond.text})")


def _enabled(conds: list[Condition]) -> bool:
    # a rule whose condition is plain `false` never runs (Roundcube disables rules that way)
    return not any(c.op == "false" for c in conds)


class _Reader:
    def __init__(self, script: str, owned: bool, folder_map: FolderMap) -> None:
        self.script = script
        self.owned = owned
        self.folder_map = folder_map
        self.rules: list[ServerRule] = []
        self.counter = 0

    def _add(self, name: str | None, line: int, conds: list[Condition], actions: list[Action]) -> None:
        self.counter += 1
        self.rules.append(
            ServerRule(
                name=name or f"{self.script} #{self.counter}",
                where=f"{self.script}:{line}",
                conditions=_allof(conds),
                actions=actions,
                enabled=_enabled(conds),
                owned=self.owned,
            )
        )

    def walk(self, cmds: list[Command], prefix: list[Condition], parent_name: str | None) -> None:
        run: list[Action] = []
        run_line = 0
        chain: list[Condition] = []  # the tests of the if/elsif chain so far
        for cmd in cmds:
            if cmd.name == "require":
                continue
            if cmd.name in ("if", "elsif", "else"):
                if run:
                    self._add(parent_name, run_line, prefix, run)
                    run = []
                if cmd.name == "if":
                    chain = []
                tests = [condition(t) for t in cmd.tests]
                conds = [*prefix, *(_negate(c) for c in chain), *tests]
                chain.extend(tests)
                name = _rule_name(cmd) or (f"{parent_name} ({cmd.name}, line {cmd.line})" if parent_name else None)
                self._branch(cmd, conds, name)
                continue
            chain = []
            if not run:
                run_line = cmd.line
            run.append(action(cmd, self.folder_map))
        if run:
            self._add(parent_name, run_line, prefix, run)

    def _branch(self, cmd: Command, conds: list[Condition], name: str | None) -> None:
        block = cmd.block or []
        direct = [c for c in block if c.name not in ("if", "elsif", "else", "require")]
        nested = any(c.name in ("if", "elsif", "else") for c in block)
        if not nested:
            self._add(name, cmd.line, conds, [action(c, self.folder_map) for c in direct])
            return
        # actions and nested ifs in one block: the walk keeps their order as separate
        # rules, named after this branch (its would-be number when it has no name)
        self.walk(block, conds, name or f"{self.script} #{self.counter + 1}")


def read_rules(script: str, text: str, *, owned: bool = False, folder_map: FolderMap = lambda f: f) -> list[ServerRule]:
    """The rules of one script; raises SieveSyntaxError when it cannot be parsed."""
    reader = _Reader(script, owned, folder_map)
    reader.walk(parse(text), [], None)
    return reader.rules


def includes(text: str) -> list[tuple[str, bool]]:
    """(script name, is global) for every include in a script, in order (nested ones too)."""
    found: list[tuple[str, bool]] = []

    def visit(cmds: list[Command]) -> None:
        for cmd in cmds:
            if cmd.name == "include":
                tags, positional = _split(cmd.args)
                if positional and _strings(positional[-1]):
                    found.append((_strings(positional[-1])[0], "global" in tags))
            if cmd.block:
                visit(cmd.block)

    visit(parse(text))
    return found


__all__ = ["action", "condition", "includes", "read_rules"]
