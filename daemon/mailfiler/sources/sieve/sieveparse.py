"""Sieve's generic grammar (RFC 5228 section 8) into a small syntax tree.

Every Sieve extension uses the same grammar, so this parser reads scripts
whatever extensions they require (``include``, ``duplicate``, Pigeonhole's
``vnd.dovecot.*``...): what the commands mean is left to
:mod:`mailfiler.sources.sieve.sieveread`.  sievelib's parser knows a fixed list
of commands and refuses the rest, which would show a valid user script as
broken.  Whether a script compiles is for the server to say (CHECKSCRIPT);
this parser only has to find the rules in it.

Comments are kept with the command they precede, so a rule's name written
the Roundcube way (``# rule:[name]``) can be read back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: a script larger than this is not parsed (bounded memory, and Dovecot's own
#: default sieve_max_script_size is 1 MiB)
MAX_SCRIPT_CHARS = 4 * 1024 * 1024
#: nesting deeper than this is refused (recursion bound)
MAX_DEPTH = 64


class SieveSyntaxError(ValueError):
    """A script that does not follow the Sieve grammar."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line = line
        self.column = column
        self.reason = message


@dataclass(frozen=True)
class Tag:
    """A tagged argument such as ``:contains`` (name without the colon, lower-cased)."""

    name: str


#: a string or a string list (a single string is a 1-tuple), a number, or a tag
Arg = tuple[str, ...] | int | Tag


@dataclass
class Test:
    name: str
    args: list[Arg] = field(default_factory=list)
    tests: list[Test] = field(default_factory=list)
    line: int = 0


@dataclass
class Command:
    name: str
    args: list[Arg] = field(default_factory=list)
    tests: list[Test] = field(default_factory=list)
    block: list[Command] | None = None
    line: int = 0
    #: the comments between the previous command and this one, without '#' or '/* */'
    comments: list[str] = field(default_factory=list)
    #: character offsets of the command in the script text (end: after its ';' or '}')
    start: int = 0
    end: int = 0


_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<hash>\#[^\n]*)
  | (?P<bracket>/\*.*?\*/)
  | (?P<multiline>text:[ \t]*(?:\#[^\n]*)?\r?\n)
  | (?P<tag>:[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>[0-9]+[KkMmGg]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<quoted>"(?:[^"\\]|\\.)*")
  | (?P<punct>[;,()\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)
_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


@dataclass
class _Tok:
    kind: str
    value: str | int
    line: int
    column: int
    offset: int
    end: int


def _unquote(text: str) -> str:
    # RFC 5228 2.4.2: a backslash escapes the next character, whatever it is
    return re.sub(r"\\(.)", r"\1", text[1:-1], flags=re.DOTALL)


def tokenize(text: str) -> list[_Tok]:
    if len(text) > MAX_SCRIPT_CHARS:
        raise SieveSyntaxError(f"the script is larger than {MAX_SCRIPT_CHARS} characters", 1, 1)
    toks: list[_Tok] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        column = pos - line_start + 1
        if m is None:
            if text.startswith("/*", pos):
                raise SieveSyntaxError("a /* comment is not closed", line, column)
            if text[pos] == '"':
                raise SieveSyntaxError("a quoted string is not closed", line, column)
            raise SieveSyntaxError(f"unexpected character {text[pos]!r}", line, column)
        kind = m.lastgroup or ""
        raw = m.group()
        end = m.end()
        value: str | int | None = None
        if kind == "multiline":
            # lines up to a line holding a single ".", with dot-stuffing undone
            close = re.compile(r"^\.\r?$", re.MULTILINE).search(text, end)
            if close is None:
                raise SieveSyntaxError("a text: block has no closing '.' line", line, column)
            body = text[end : close.start()]
            kind, value = "string", "\n".join(ln[1:] if ln.startswith("..") else ln for ln in body.split("\n"))
            end = close.end()
            raw = text[pos:end]
        elif kind == "hash":
            kind, value = "comment", raw[1:].strip()
        elif kind == "bracket":
            kind, value = "comment", raw[2:-2].strip()
        elif kind in ("tag", "ident"):
            value = raw.lstrip(":").lower()
        elif kind == "number":
            unit = _UNITS.get(raw[-1].lower(), 1)
            value = int(raw[:-1] if unit != 1 else raw) * unit
        elif kind == "quoted":
            kind, value = "string", _unquote(raw)
        elif kind == "punct":
            kind, value = raw, raw
        if value is not None:
            toks.append(_Tok(kind, value, line, column, pos, end))
        newlines = raw.count("\n")
        if newlines:
            line += newlines
            line_start = pos + raw.rindex("\n") + 1
        pos = end
    return toks


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.pos = 0
        self.comments: list[str] = []

    def _skip_comments(self) -> None:
        while self.pos < len(self.toks) and self.toks[self.pos].kind == "comment":
            self.comments.append(str(self.toks[self.pos].value))
            self.pos += 1

    def peek(self) -> _Tok | None:
        self._skip_comments()
        return self.toks[self.pos] if self.pos < len(self.toks) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            last = self.toks[-1] if self.toks else _Tok("", "", 1, 1, 0, 0)
            raise SieveSyntaxError("the script ends in the middle of a command", last.line, last.column)
        self.pos += 1
        return tok

    def expect(self, kind: str, what: str) -> _Tok:
        tok = self.take()
        if tok.kind != kind:
            raise SieveSyntaxError(f"expected {what}, found {_show(tok)}", tok.line, tok.column)
        return tok

    def commands(self, depth: int, *, in_block: bool) -> list[Command]:
        out: list[Command] = []
        while True:
            tok = self.peek()
            if tok is None:
                if in_block:
                    last = self.toks[-1]
                    raise SieveSyntaxError("a { block is not closed", last.line, last.column)
                return out
            if tok.kind == "}" and in_block:
                return out
            out.append(self.command(depth))

    def command(self, depth: int) -> Command:
        if depth > MAX_DEPTH:
            tok = self.take()
            raise SieveSyntaxError("commands are nested too deeply", tok.line, tok.column)
        self.peek()
        comments, self.comments = self.comments, []
        name = self.expect("ident", "a command name")
        cmd = Command(name=str(name.value), line=name.line, comments=comments, start=name.offset)
        cmd.args, cmd.tests = self.arguments(depth)
        tok = self.take()
        if tok.kind == ";":
            cmd.end = tok.end
            return cmd
        if tok.kind == "{":
            cmd.block = self.commands(depth + 1, in_block=True)
            cmd.end = self.take().end  # the "}"
            return cmd
        raise SieveSyntaxError(f"expected ';' or '{{' after {cmd.name}, found {_show(tok)}", tok.line, tok.column)

    def arguments(self, depth: int) -> tuple[list[Arg], list[Test]]:
        args: list[Arg] = []
        while True:
            tok = self.peek()
            if tok is None:
                return args, []
            if tok.kind == "string":
                self.take()
                args.append((str(tok.value),))
            elif tok.kind == "[":
                args.append(self.string_list())
            elif tok.kind == "number":
                self.take()
                args.append(int(tok.value))
            elif tok.kind == "tag":
                self.take()
                args.append(Tag(str(tok.value)))
            elif tok.kind == "ident":
                return args, [self.test(depth + 1)]
            elif tok.kind == "(":
                return args, self.test_list(depth + 1)
            else:
                return args, []

    def string_list(self) -> tuple[str, ...]:
        self.take()  # "["
        values = [str(self.expect("string", "a string in a [list]").value)]
        while True:
            tok = self.take()
            if tok.kind == "]":
                return tuple(values)
            if tok.kind != ",":
                raise SieveSyntaxError(
                    f"expected ',' or ']' in a string list, found {_show(tok)}", tok.line, tok.column
                )
            values.append(str(self.expect("string", "a string in a [list]").value))

    def test(self, depth: int) -> Test:
        if depth > MAX_DEPTH:
            tok = self.take()
            raise SieveSyntaxError("tests are nested too deeply", tok.line, tok.column)
        name = self.expect("ident", "a test")
        args, tests = self.arguments(depth)
        return Test(name=str(name.value), args=args, tests=tests, line=name.line)

    def test_list(self, depth: int) -> list[Test]:
        self.take()  # "("
        tests = [self.test(depth)]
        while True:
            tok = self.take()
            if tok.kind == ")":
                return tests
            if tok.kind != ",":
                raise SieveSyntaxError(f"expected ',' or ')' in a test list, found {_show(tok)}", tok.line, tok.column)
            tests.append(self.test(depth))


def _show(tok: _Tok) -> str:
    if tok.kind == "string":
        return "a string"
    if tok.kind == "number":
        return f"the number {tok.value}"
    if tok.kind == "tag":
        return f"the tag :{tok.value}"
    if tok.kind == "ident":
        return f"{tok.value!r}"
    return f"{tok.kind!r}"


def parse(text: str) -> list[Command]:
    """The script's top-level commands; raises SieveSyntaxError with a line and column."""
    parser = _Parser(tokenize(text))
    return parser.commands(0, in_block=False)


def quote(value: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2) for ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def string_list(values: list[str] | tuple[str, ...]) -> str:
    if len(values) == 1:
        return quote(values[0])
    return "[" + ", ".join(quote(v) for v in values) + "]"


__all__ = ["Arg", "Command", "SieveSyntaxError", "Tag", "Test", "parse", "quote", "string_list"]
