"""YAML to plain Python values, remembering where every value came from.

Shared by the config loader and the rule loader: both report every problem
as ``FILE:LINE:COL: message``, so both compose the YAML node tree
themselves and build plain values from it while recording the position of
every value and every key (:class:`Builder`).  Only plain YAML is accepted:
strings, numbers, booleans, null, lists and mappings; other tags, merge
keys, duplicate keys and self-referencing aliases are problems.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "MAP",
    "NULL",
    "Builder",
    "KeyPath",
    "Pos",
    "Problem",
    "SafeLoader",
    "compose",
    "describe_value",
    "fmt_path",
    "is_empty",
    "node_pos",
    "offset_to_pos",
    "path_prefix",
]

# YAML tags we build values for; anything else (!!binary, !!set, !!omap,
# custom !tags, ...) would construct objects the schemas never expect.
_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
# A plain 2024-01-01 resolves to a timestamp; the schemas have no dates, so
# keep the text rather than hand over a datetime nobody expects.
_TIMESTAMP = _TAG + "timestamp"
_SEQ, MAP, _MERGE = _TAG + "seq", _TAG + "map", _TAG + "merge"

#: a position in the file: 1-based (line, column)
Pos = tuple[int, int]
#: a key path into the data: mapping keys and list indices
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One problem in a file, printable as ``FILE:LINE:COL: message``."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


def offset_to_pos(raw: bytes, offset: int) -> Pos:
    """(line, column) of a byte offset; the column counts characters."""
    before = raw[:offset]
    line = before.count(b"\n") + 1
    col = len(before.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")) + 1
    return line, col


def compose(raw: bytes, file: str) -> tuple[yaml.Node | None, Problem | None]:
    """Decode *raw* as UTF-8 and compose its YAML node tree.

    Returns (root node, None), with None as the root of an empty document,
    or (None, the problem) when the bytes are not UTF-8 or not YAML.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = offset_to_pos(raw, exc.start)
        return None, Problem(file, line, col, "the file is not valid UTF-8 text")
    try:
        return yaml.compose(text, Loader=SafeLoader), None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        # PyYAML splits "while parsing X" / "expected Y, but found Z" into context and problem.
        what = ", ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        return None, Problem(file, line, col, f"YAML syntax error: {what}")
    except yaml.reader.ReaderError as exc:
        # position is an index into the decoded text
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        msg = f"the file holds a character YAML does not allow: {exc.reason}"
        return None, Problem(file, line, col, msg)
    except yaml.YAMLError as exc:  # any other YAML failure: no position known
        return None, Problem(file, 1, 1, f"YAML error: {exc}")


def is_empty(root: yaml.Node | None) -> bool:
    """Nothing, or a bare ``---``."""
    return root is None or (isinstance(root, yaml.ScalarNode) and root.tag == NULL)


class SafeLoader(yaml.SafeLoader):
    """SafeLoader whose aliases are reported where the alias is written.

    PyYAML's composer returns the anchored node itself for ``*alias``, so a
    problem in an aliased value would point at the anchor.  A shallow copy
    with the alias's start mark keeps the content and moves the position.
    """

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            alias = copy.copy(super().compose_node(parent, index))
            if alias is not None:  # always: an alias names a node
                alias.start_mark = mark
            return alias
        return super().compose_node(parent, index)


def node_pos(node: yaml.Node) -> Pos:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


@dataclass
class Builder:
    """Builds plain values from a node tree, noting every value's and key's position."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    #: path -> position of the value node
    values: dict[KeyPath, Pos] = field(default_factory=dict)
    #: path -> position of the key node naming that value
    keys: dict[KeyPath, Pos] = field(default_factory=dict)
    #: paths whose value could not be built; schema errors under them are noise
    poisoned: set[KeyPath] = field(default_factory=set)
    #: ids of the child lists of the collections being built (to catch cycles)
    _active: set[int] = field(default_factory=set)
    _constructor: yaml.constructor.SafeConstructor = field(default_factory=yaml.constructor.SafeConstructor)

    def problem(self, pos: Pos, message: str, path: KeyPath | None = None) -> None:
        self.problems.append(Problem(self.file, pos[0], pos[1], message))
        if path is not None:
            self.poisoned.add(path)

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.values[path] = node_pos(node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        # An alias to an enclosing collection would recurse for ever.  Alias
        # nodes are copies (see SafeLoader), so compare the shared child list.
        if id(node.value) in self._active:
            self.problem(node_pos(node), f"{path_prefix(path)}an alias refers to a node that contains it", path)
            return None
        self._active.add(id(node.value))
        try:
            if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode) and node.tag == MAP:
                return self._mapping(node, path)
            self.problem(node_pos(node), f"{path_prefix(path)}unsupported YAML tag {_short_tag(node.tag)}", path)
            return None
        finally:
            self._active.discard(id(node.value))

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        tag = node.tag
        if tag in (_STR, _TIMESTAMP):
            return node.value
        build = {
            _INT: self._constructor.construct_yaml_int,
            _FLOAT: self._constructor.construct_yaml_float,
            _BOOL: self._constructor.construct_yaml_bool,
            NULL: self._constructor.construct_yaml_null,
        }.get(tag)
        if build is None:
            self.problem(node_pos(node), f"{path_prefix(path)}unsupported YAML tag {_short_tag(tag)}", path)
            return None
        try:
            return build(node)
        except (ValueError, KeyError):  # e.g. !!int "abc", !!bool "maybe"
            self.problem(node_pos(node), f"{path_prefix(path)}{node.value!r} is not a valid {_short_tag(tag)}", path)
            return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        out: dict[str, Any] = {}
        where = path_prefix(path)
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(node_pos(key_node), f"{where}a key must be a plain word, not a list or mapping")
                continue
            if key_node.tag == _MERGE:
                self.problem(node_pos(key_node), f"{where}merge keys (<<) are not supported")
                continue
            # Keys are taken as written: 'yes:' or '1:' are keys named yes and 1,
            # which the schema then reports as unknown instead of True or 1.
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                first_line = self.keys[child][0]
                self.problem(node_pos(key_node), f"{where}duplicate key {key!r} (first on line {first_line})")
            self.keys[child] = node_pos(key_node)
            out[key] = self.build(value_node, child)
        return out

    def pos(self, path: Sequence[str | int]) -> Pos:
        """Position of the deepest recorded prefix of *path* (the value, or the file start)."""
        return self.values.get(self.known(path), (1, 1))

    def key_pos(self, path: Sequence[str | int]) -> Pos:
        """Position of the key naming *path*, else of its value."""
        return self.keys.get(tuple(path)) or self.pos(path)

    def known(self, path: Sequence[str | int]) -> KeyPath:
        """The longest prefix of *path* that names a value in the file."""
        loc = tuple(path)
        while loc and loc not in self.values:
            loc = loc[:-1]
        return loc


def describe_value(value: Any) -> str:
    """A value as a problem message names it: "a mapping", "a list", 'x'."""
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def fmt_path(path: Sequence[str | int]) -> str:
    """``mailboxes[0].tracked_folders[1].regarding``, as an admin would name it."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def path_prefix(path: Sequence[str | int]) -> str:
    """``"path: "`` to start a message, or nothing at the top level."""
    return f"{fmt_path(path)}: " if path else ""
