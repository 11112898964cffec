"""IMAP wire helpers without I/O: mailbox-name quoting, response parsing, UID sets.

aioimaplib sends arguments verbatim and hands back raw response lines, so
everything about the syntax of RFC 3501 section 9 that mailfiler relies on
lives here, where it can be unit-tested without a server:

* mailbox names are encoded in modified UTF-7 (section 5.1.3) and always sent
  as quoted strings (``create("My Folder")`` in bare aioimaplib creates "My");
* responses are tokenised into atoms, strings, literals and lists, with
  aioimaplib's split of a response around its literals undone first;
* UID sets are compressed into ranges and cut into batches for FETCH (aioimaplib
  2.0.3 recurses once per response line: issue 118 upstream).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from mailfiler.util import mutf7

INBOX = "INBOX"
#: at most this many UIDs in one UID FETCH (libs.md: about 400-500 is safe)
FETCH_BATCH = 400

Token = bytes | None | list["Token"]


class ParseError(ValueError):
    """A server response that does not follow the IMAP grammar."""


# -- mailbox names ------------------------------------------------------------------


def quote(text: str) -> str:
    """An IMAP quoted string (backslash and double quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def is_inbox(folder: str) -> bool:
    return folder.upper() == INBOX


def folder_to_wire(folder: str, separator: str | None) -> str:
    """mailfiler's "/"-separated folder name -> the server's name in modified UTF-7.

    INBOX is case-insensitive in IMAP and always sent as ``INBOX``."""
    if is_inbox(folder):
        return INBOX
    parts = folder.split("/")
    sep = separator or "/"
    if sep != "/" and any(sep in part for part in parts):
        raise ValueError(f"folder {folder!r} contains the server's hierarchy separator {sep!r}")
    return mutf7.encode(sep.join(parts))


def folder_from_wire(name: str, separator: str | None) -> str:
    """The server's modified UTF-7 name -> mailfiler's "/"-separated folder name.

    A name that is not valid modified UTF-7 is kept as it is (some servers,
    and Dovecot's NOTIFY STATUS pushes, send UTF-8)."""
    if is_inbox(name):
        return INBOX
    try:
        decoded = mutf7.decode(name)
    except ValueError:
        decoded = name
    if separator and separator != "/":
        decoded = "/".join(decoded.split(separator))
    return decoded


def quoted_mailbox(folder: str, separator: str | None) -> str:
    return quote(folder_to_wire(folder, separator))


# -- responses: undo aioimaplib's split around literals ----------------------------------

_LITERAL_END = re.compile(rb"\{(\d+)\+?\}$")


def join_literals(lines: Sequence[bytes | bytearray]) -> list[bytes]:
    """aioimaplib's response lines -> one bytes object per response, literals inline.

    aioimaplib stores a line ending in ``{n}``, then the literal's n bytes as a
    separate ``bytearray``, then the rest of the line (if any) as another item.
    A rest starts with a space or ")" (RFC 3501: after a literal comes SP, ")" or
    CRLF); anything else is the next response."""
    return list(iter_responses(list(lines)))


def iter_responses(lines: list[bytes | bytearray], end: int | None = None) -> Iterator[bytes]:
    """:func:`join_literals`, one response at a time, for ``lines[:end]``; each line
    is dropped from ``lines`` once joined, so that a batch of large messages
    is not held twice (the caller parses and drops one response after another).
    Each response is joined in one copy, however many literals it has."""
    stop = len(lines) if end is None else max(0, len(lines) + end) if end < 0 else min(end, len(lines))
    i = 0
    while i < stop:
        parts: list[bytes | bytearray] = [lines[i]]
        lines[i] = b""
        i += 1
        while True:
            m = _LITERAL_END.search(parts[-1])
            if not m or i >= stop or not isinstance(lines[i], bytearray):
                break
            parts += (b"\r\n", lines[i])
            lines[i] = b""
            i += 1
            if i < stop and isinstance(lines[i], bytes) and lines[i][:1] in (b" ", b")"):
                parts.append(lines[i])
                lines[i] = b""
                i += 1
            else:
                break
        joined = parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts)
        del parts  # the literals' bytearrays go before the caller parses this one
        yield joined
        del joined


# -- tokenizer -----------------------------------------------------------------------

_ATOM_END = b' ()[]{"\r\n'


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def skip_spaces(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] == 0x20:
            self.pos += 1

    def token(self) -> Token:
        self.skip_spaces()
        c = self.peek()
        if c is None:
            raise ParseError("unexpected end of response")
        if c == ord("("):
            return self.parenthesized()
        if c == ord('"'):
            return self.quoted()
        if c == ord("{") or (c == ord("~") and self.data[self.pos + 1 : self.pos + 2] == b"{"):
            return self.literal()
        return self.atom()

    def parenthesized(self) -> list[Token]:
        self.pos += 1
        items: list[Token] = []
        while True:
            self.skip_spaces()
            c = self.peek()
            if c is None:
                raise ParseError("unterminated parenthesized list")
            if c == ord(")"):
                self.pos += 1
                return items
            items.append(self.token())

    def quoted(self) -> bytes:
        self.pos += 1
        out = bytearray()
        while True:
            c = self.peek()
            if c is None:
                raise ParseError("unterminated quoted string")
            self.pos += 1
            if c == ord("\\"):
                nxt = self.peek()
                if nxt is None:
                    raise ParseError("unterminated quoted string")
                out.append(nxt)
                self.pos += 1
            elif c == ord('"'):
                return bytes(out)
            else:
                out.append(c)

    def literal(self) -> bytes:
        if self.peek() == ord("~"):
            self.pos += 1
        end = self.data.find(b"}", self.pos)
        if end < 0:
            raise ParseError("unterminated literal size")
        size = int(self.data[self.pos + 1 : end].rstrip(b"+"))
        start = end + 1
        if self.data[start : start + 2] == b"\r\n":
            start += 2
        if start + size > len(self.data):
            raise ParseError("literal shorter than announced")
        self.pos = start + size
        return self.data[start : start + size]

    def atom(self) -> bytes | None:
        """An atom; a ``[...]`` section (which may hold spaces and parens, as in
        ``BODY[HEADER.FIELDS (A B)]``) and a ``<n>`` origin belong to it."""
        start = self.pos
        while self.pos < len(self.data):
            c = self.data[self.pos]
            if c == ord("["):
                end = self.data.find(b"]", self.pos)
                if end < 0:
                    raise ParseError("unterminated [ in atom")
                self.pos = end + 1
                continue
            if c in _ATOM_END:
                break
            self.pos += 1
        if self.pos == start:
            raise ParseError(f"unexpected byte {bytes([self.data[self.pos]])!r} at {self.pos}")
        word = self.data[start : self.pos]
        return None if word.upper() == b"NIL" else word


def tokenize(data: bytes) -> list[Token]:
    """Every token of one response (without the leading ``* ``)."""
    reader = _Reader(data)
    out: list[Token] = []
    while True:
        reader.skip_spaces()
        if reader.peek() is None or reader.peek() in (0x0D, 0x0A):
            return out
        out.append(reader.token())


def as_str(token: Token) -> str:
    if isinstance(token, bytes):
        return token.decode("utf-8", "surrogateescape")
    raise ParseError(f"expected a string, got {token!r}")


# -- typed responses ---------------------------------------------------------------


@dataclass(frozen=True)
class ListEntry:
    flags: frozenset[str]
    separator: str | None
    name: str  # on the wire: modified UTF-7, unquoted

    @property
    def selectable(self) -> bool:
        return not ({"\\noselect", "\\nonexistent"} & {f.lower() for f in self.flags})


def parse_list(line: bytes) -> ListEntry:
    """``(flags) "sep" name`` (the text after ``LIST``)."""
    tokens = tokenize(line)
    if len(tokens) < 3 or not isinstance(tokens[0], list):
        raise ParseError(f"bad LIST response {line!r}")
    flags = frozenset(as_str(f) for f in tokens[0] if isinstance(f, bytes))
    sep = as_str(tokens[1]) if tokens[1] is not None else None
    return ListEntry(flags, sep, as_str(tokens[2]))


def parse_status(line: bytes) -> tuple[str, dict[str, int]]:
    """``name (MESSAGES 1 UIDNEXT 2 ...)`` -> (wire name, {item: value})."""
    tokens = tokenize(line)
    if len(tokens) < 2 or not isinstance(tokens[-1], list):
        raise ParseError(f"bad STATUS response {line!r}")
    items = tokens[-1]
    values = {as_str(items[i]).upper(): int(as_str(items[i + 1])) for i in range(0, len(items) - 1, 2)}
    return as_str(tokens[0]), values


_FETCH_HEAD = re.compile(rb"(\d+) FETCH \(")
#: one item of the common shapes: a name without spaces, then a number, NIL or a literal
_FETCH_ITEM = re.compile(rb"([A-Za-z0-9.\[\]<>]+) (?:(\d+)|(NIL)|\{(\d+)\}\r\n)")


def _fetch_fast(line: bytes) -> tuple[int, dict[str, Token]] | None:
    """The items of a FETCH response of the shapes a scan asks for (UID, RFC822.SIZE,
    BODY[]...: numbers, NIL, literals), without the byte-by-byte tokenizer; None for
    anything else (lists such as FLAGS, quoted strings), which the tokenizer reads."""
    head = _FETCH_HEAD.match(line)
    if head is None:
        return None
    data: dict[str, Token] = {}
    pos = head.end()
    while True:
        item = _FETCH_ITEM.match(line, pos)
        if item is None:
            return None
        name, number, nil, size = item.groups()
        pos = item.end()
        if size is not None:
            end = pos + int(size)
            if end > len(line):
                return None
            data[name.decode("ascii").upper()] = line[pos:end]
            pos = end
        else:
            data[name.decode("ascii").upper()] = None if nil else number
        if line.startswith(b")", pos):
            # a trailing CRLF or nothing: anything else is not this simple shape
            return (int(head.group(1)), data) if pos + 1 == len(line) or line[pos + 1 :] == b"\r\n" else None
        if not line.startswith(b" ", pos):
            return None
        pos += 1


def parse_fetch(line: bytes) -> tuple[int, dict[str, Token]]:
    """``n FETCH (UID 5 RFC822.SIZE 10 ...)`` -> (sequence number, {ITEM: value})."""
    fast = _fetch_fast(line)
    if fast is not None:
        return fast
    tokens = tokenize(line)
    if (
        len(tokens) < 3
        or not isinstance(tokens[1], bytes)  # a list there is as bad a reply as a wrong word
        or tokens[1].upper() != b"FETCH"
        or not isinstance(tokens[2], list)
    ):
        raise ParseError(f"bad FETCH response {line[:200]!r}")
    items = tokens[2]
    data: dict[str, Token] = {}
    for i in range(0, len(items) - 1, 2):
        key = as_str(items[i]).upper()
        data[key] = items[i + 1]
    return int(as_str(tokens[0])), data


def fetch_uid(data: dict[str, Token]) -> int | None:
    uid = data.get("UID")
    return int(uid) if isinstance(uid, bytes) else None


def body_of(data: dict[str, Token], section: str = "") -> bytes | None:
    """The ``BODY[section]`` (or ``BODY[section]<n>``) item of a FETCH response;
    None without one, or when it is NIL: Dovecot answers ``BODY[] NIL`` (and a
    tagged ``OK [EXPUNGEISSUED]``) for a message another session expunged, which
    is gone, not empty."""
    name = f"BODY[{section}]"
    for key, value in data.items():
        if key.upper() == name or key.upper().startswith(name + "<"):
            return value if isinstance(value, bytes) else None
    return None


def parse_search(lines: Iterable[bytes], *, esearch: bool = False) -> set[int]:
    """UIDs from the lines of a UID SEARCH, as aioimaplib hands them over: without
    the leading ``SEARCH``/``ESEARCH`` word (``1 2 3``, or ``(TAG "x") UID ALL 1:3,7``
    for ``RETURN (ALL)``)."""
    uids: set[int] = set()
    for line in lines:
        if line[:7].upper() == b"SEARCH " or line.upper() == b"SEARCH":
            line = line[7:]
        elif line[:8].upper() == b"ESEARCH ":
            line = line[8:]
        if not esearch:
            uids.update(int(x) for x in line.split() if x.isdigit())
            continue
        tokens = tokenize(line)
        for i, tok in enumerate(tokens):
            if isinstance(tok, bytes) and tok.upper() == b"ALL" and i + 1 < len(tokens):
                uids.update(parse_uid_set(as_str(tokens[i + 1])))
    return uids


def parse_uid_set(text: str) -> Iterator[int]:
    """``1:3,7`` -> 1, 2, 3, 7 (no ``*``: servers send concrete numbers)."""
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a, b = int(lo), int(hi or lo)
        yield from range(min(a, b), max(a, b) + 1)


def parse_uid_ranges(text: str) -> list[range]:
    """``1:3,7`` -> [range(1, 4), range(7, 8)], without expanding (VANISHED can
    name a million UIDs)."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        if not lo.isdigit() or not (hi or lo).isdigit():
            raise ParseError(f"bad UID set {text!r}")
        a, b = int(lo), int(hi or lo)
        out.append(range(min(a, b), max(a, b) + 1))
    return out


def parse_vanished(lines: Iterable[bytes | bytearray]) -> list[range]:
    """The UIDs of ``VANISHED (EARLIER) 1:3,7`` lines (QRESYNC, RFC 7162 3.2.10)."""
    out: list[range] = []
    for line in lines:
        if not isinstance(line, bytes) or line[:9].upper() != b"VANISHED ":
            continue
        rest = line[9:].strip()
        if rest[:9].upper() == b"(EARLIER)":
            rest = rest[9:].strip()
        try:
            out.extend(parse_uid_ranges(rest.decode("ascii")))
        except (ParseError, UnicodeDecodeError):
            continue
    return out


def parse_flag_list(text: str) -> frozenset[str]:
    """``(\\Seen $Tracked \\*)`` -> its flags, as given (flags are case-insensitive)."""
    return frozenset(text.strip().strip("()").split())


def keyword_allowed(permanent_flags: frozenset[str] | None, keyword: str) -> bool:
    """May a keyword be stored for good in this folder (RFC 3501 7.1: ``\\*`` in
    PERMANENTFLAGS allows new keywords)?"""
    if not permanent_flags:
        return False
    upper = {f.upper() for f in permanent_flags}
    return "\\*" in upper or keyword.upper() in upper


_KEYWORD = re.compile(r"^[!-~]+$")
_ATOM_SPECIALS = frozenset('(){%*"\\]')


def is_keyword(text: str) -> bool:
    """An IMAP flag keyword: a printable ASCII atom, not a system flag (no backslash)."""
    return bool(_KEYWORD.match(text)) and not _ATOM_SPECIALS.intersection(text)


_CODE = re.compile(rb"\[([A-Z-]+)(?: ([^\]]*))?\]")


def response_codes(lines: Iterable[bytes | bytearray]) -> dict[str, str]:
    """``[UIDVALIDITY 5]``-style response codes in status lines -> {code: argument}."""
    codes: dict[str, str] = {}
    for line in lines:
        if isinstance(line, bytearray):
            continue
        for m in _CODE.finditer(line):
            codes[m.group(1).decode()] = (m.group(2) or b"").decode("ascii", "replace")
    return codes


def untagged_number(lines: Iterable[bytes | bytearray], word: bytes) -> int | None:
    """n from an ``n EXISTS``-style line."""
    for line in lines:
        if isinstance(line, bytes):
            num, _, rest = line.partition(b" ")
            if rest.upper() == word and num.isdigit():
                return int(num)
    return None


# -- UID sets --------------------------------------------------------------------------


def uid_set(uids: Iterable[int]) -> str:
    """Sorted UIDs -> a compact set such as ``1:3,7``."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty UID set")
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if prev != start else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if prev != start else str(start))
    return ",".join(parts)


def batches(uids: Sequence[int], size: int = FETCH_BATCH) -> Iterator[list[int]]:
    for i in range(0, len(uids), size):
        yield list(uids[i : i + size])


# -- source ids ---------------------------------------------------------------------


def make_source_id(uidvalidity: int, uid: int) -> str:
    return f"{uidvalidity}:{uid}"


def split_source_id(source_id: str) -> tuple[int, int] | None:
    """``"uidvalidity:uid"`` -> (uidvalidity, uid); None if it is not one."""
    uv, sep, uid = source_id.partition(":")
    if not sep or not uv.isdigit() or not uid.isdigit():
        return None
    return int(uv), int(uid)
