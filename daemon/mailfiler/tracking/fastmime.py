"""Split ordinary, well-formed mail into its MIME parts without the feed parser.

``split_message`` gives the tree that ``email.message_from_bytes(raw,
policy=compat32-like)`` builds (the header values as the feed parser stores
them, each leaf's undecoded payload) for the common shapes: a header block,
then a single body or multipart/* parts with boundaries, nested or not.  It
works on the bytes, line by line only where a line can matter (headers and
boundary candidates), which is what makes it several times cheaper.

It declines (returns None) whenever the feed parser would see anything
irregular, i.e. would register a defect, and on shapes it does not model
(message/* parts, multipart/digest, bare CR line endings, a Unix "From "
line, NUL bytes...).  The caller then parses with the feed parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.policy import Policy

_MULTIPART_CTES = ("7bit", "8bit", "binary")
#: deeper nesting is rare in real mail; the feed parser handles it
MAX_DEPTH = 8


class Declined(Exception):
    """The input is not of a shape the fast path is sure about."""


class HeaderMessage(Message):
    """A Message holding headers only, with get() answered from an index:
    the same value Message.get() finds (the first of that name), without a
    scan of the header list per lookup."""

    def __init__(self, policy: Policy, headers: list[tuple[str, str]]) -> None:
        super().__init__(policy)
        self._headers = headers  # what the feed parser's set_raw builds
        self._index: dict[str, list[tuple[str, str]]] | None = None  # built on first use

    # Message.get's contract; the stubs spell it as overloads on the header type
    def get(self, name: str, failobj: object = None) -> object:  # type: ignore[override]
        found = self.named(name.lower())
        return self.policy.header_fetch_parse(*found[0]) if found else failobj

    def named(self, lname: str) -> list[tuple[str, str]]:
        """The headers called ``lname`` (lower case), in order."""
        if self._index is None:
            self._index = {}
            for name, value in self._headers:
                self._index.setdefault(name.lower(), []).append((name, value))
        return self._index.get(lname, [])


#: the headers a part's type, disposition, file name, charset and transfer
#: encoding are read from
MIME_HEADERS = frozenset(("content-type", "content-disposition", "content-transfer-encoding"))
MimeKey = tuple[tuple[str, str], ...]
_CTYPES: dict[MimeKey, str] = {}


@dataclass(slots=True)
class Entity:
    """One node of the MIME tree.  ``msg`` carries the headers only."""

    msg: HeaderMessage
    #: the part's MIME headers: what its type and parameters depend on
    mime_key: MimeKey
    content_type: str
    #: a leaf's payload, still transfer-encoded, as the feed parser stores it: a view
    #: into the message, not a copy (a large attachment would cost its size again)
    body: bytes | memoryview = b""
    children: list[Entity] = field(default_factory=list)

    def leaves(self) -> list[Entity]:
        """The non-multipart parts, in Message.walk() order."""
        if not self.children:
            return [self]
        return [leaf for child in self.children for leaf in child.leaves()]


def split_message(raw: bytes, policy: Policy) -> Entity | None:
    """The MIME tree of ``raw``, or None where the feed parser must decide."""
    if b"\x00" in raw or (b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n")):
        return None  # NUL, or a bare CR: the feed parser splits lines at those too
    try:
        root, _end = _entity(raw, 0, (), policy)
    except Declined:
        return None
    return root


# --------------------------------------------------------------------------- lines


def _line_end(raw: bytes, pos: int) -> int:
    """The offset after the line starting at ``pos`` (its line ending included)."""
    eol = raw.find(b"\n", pos)
    return len(raw) if eol < 0 else eol + 1


#: what may follow a delimiter on its line, by kind: the common spellings
_DELIMITER_TAILS = {b"": "sep", b"\n": "sep", b"\r\n": "sep", b"--": "close", b"--\n": "close", b"--\r\n": "close"}


def _boundary_kind(raw: bytes, pos: int, end: int, sep: bytes) -> str | None:
    """'sep' or 'close' if the line raw[pos:end] is the delimiter ``sep``
    (``--boundary``), else None.  The feed parser's boundaryre: the delimiter,
    an optional '--', blanks and tabs, an optional line ending."""
    if not raw.startswith(sep, pos, end):
        return None
    rest = raw[pos + len(sep) : end]
    kind = _DELIMITER_TAILS.get(rest)
    if kind is not None:
        return kind
    close = rest.startswith(b"--")
    if close:
        rest = rest[2:]
    if rest.endswith(b"\n"):
        rest = rest[:-2] if rest.endswith(b"\r\n") else rest[:-1]
    if rest.strip(b" \t"):
        return None
    return "close" if close else "sep"


def _is_stop(raw: bytes, pos: int, end: int, stops: tuple[bytes, ...]) -> bool:
    for sep in stops:  # noqa: SIM110 - no generator: this runs for every candidate line
        if _boundary_kind(raw, pos, end, sep):
            return True
    return False


def _find_stop(raw: bytes, pos: int, stops: tuple[bytes, ...]) -> int:
    """The start of the first line at or after ``pos`` that is a delimiter of
    one of ``stops`` (the enclosing multiparts), or len(raw)."""
    end = len(raw)
    for sep in stops:
        end = _first_delimiter(raw, pos, sep, end)
    return end


def _first_delimiter(raw: bytes, pos: int, sep: bytes, limit: int) -> int:
    """The start of the first line in [pos, limit) that is the delimiter
    ``sep``, or ``limit``.  Searching for the whole delimiter is several times
    faster than looking at every line that starts with '--'."""
    needle = b"\n" + sep
    line = pos
    while line < limit:
        if raw.startswith(sep, line) and _boundary_kind(raw, line, _line_end(raw, line), sep):
            return line
        found = raw.find(needle, line, limit + len(needle))
        if found < 0:
            break
        line = found + 1
    return limit


# --------------------------------------------------------------------------- headers


def _read_headers(raw: bytes, pos: int) -> tuple[list[tuple[str, str]], int]:
    """The (name, raw value) pairs of the header block at ``pos`` and where
    the body starts (after the empty line, or at the end of input)."""
    if raw.startswith((b"\n", b"\r\n"), pos):
        return [], _line_end(raw, pos)  # no headers at all
    end = raw.find(b"\n\n", pos)
    crlf = raw.find(b"\n\r\n", pos, None if end < 0 else end)
    if crlf >= 0:
        end, body = crlf + 1, crlf + 3
    elif end >= 0:
        end, body = end + 1, end + 2
    else:
        end = body = len(raw)
    block = raw[pos:end]
    if block.startswith(b"--") or b"\n--" in block:
        # possibly a delimiter of an enclosing multipart: the header block would
        # end there; and never a plausible header
        raise Declined("a line starting with '--' in a header block")
    return _headers(block if block.endswith(b"\n") else block + b"\n"), body


#: one header: name, colon, the first line's value with leading blanks
#: stripped, continuation lines (starting with a blank); as the feed parser's
#: headerRE and compat32's header_source_parse split them
_ONE_HEADER = r"([\x21-\x39\x3b-\x7e]+):[ \t]*+([^\n]*\n(?:[ \t][^\n]*\n)*)"
_HEADER = re.compile(_ONE_HEADER)
#: atomic: a header splits one way only, so a failure never backtracks into
#: the headers before it
_HEADER_BLOCK = re.compile(f"(?>{_ONE_HEADER})*")


def _headers(block: bytes) -> list[tuple[str, str]]:
    """The headers of a header block (every line ending in a line feed)."""
    text = block.decode("ascii", "surrogateescape")  # as the feed parser decodes
    if not _HEADER_BLOCK.fullmatch(text):
        # a line that is no header, a Unix "From " line or a continuation line
        # without a header: each is a defect for the feed parser
        raise Declined("a line in the header block that is no header")
    # the value keeps its folding line endings, not its last one
    return [(name, value.rstrip("\r\n")) for name, value in _HEADER.findall(text)]


# --------------------------------------------------------------------------- parts


def _entity(raw: bytes, pos: int, stops: tuple[bytes, ...], policy: Policy) -> tuple[Entity, int]:
    """The part starting at ``pos`` and the offset where it ends: the first
    delimiter line of an enclosing multipart (``stops``), or the end of input."""
    if len(stops) > MAX_DEPTH:
        raise Declined("nested too deep")
    headers, pos = _read_headers(raw, pos)
    msg = HeaderMessage(policy, headers)
    key = tuple([header for header in headers if header[0].lower() in MIME_HEADERS])
    ctype = _content_type(msg, key)
    maintype = ctype.partition("/")[0]
    if maintype == "message" or ctype == "multipart/digest":
        raise Declined("message/* parts and digests are parsed as nested messages")
    entity = Entity(msg, key, ctype)
    if maintype != "multipart":
        end = _find_stop(raw, pos, stops)
        entity.body = memoryview(raw)[pos:end]
        return entity, end
    return entity, _multipart_body(raw, pos, stops, entity, policy)


def _content_type(msg: Message, key: MimeKey) -> str:
    # most parts' MIME headers recur across messages; a multipart's do not
    # (its boundary is unique), so those are not kept
    ctype = _CTYPES.get(key)
    if ctype is None:
        ctype = msg.get_content_type()
        if not ctype.startswith("multipart/"):
            if len(_CTYPES) >= 4096:
                _CTYPES.clear()
            _CTYPES[key] = ctype
    return ctype


#: Content-Type values whose boundary parameter get_boundary() returns as
#: written: one parameter, quoted, of boundary characters (RFC 2046) none of
#: which the parameter parsing unquotes or unescapes, no trailing blank
_SIMPLE_BOUNDARY = re.compile(r"[^;\"]*; boundary=\"([0-9A-Za-z'()+_,./:=? -]*[0-9A-Za-z'()+_,./:=?-])\"")


def _boundary(entity: Entity) -> bytes:
    msg = entity.msg
    simple = _SIMPLE_BOUNDARY.fullmatch(str(msg.get("content-type")))
    boundary = simple.group(1) if simple else msg.get_boundary()
    if not boundary or not boundary.isascii() or not boundary.isprintable():
        raise Declined("no boundary, or one the feed parser matches against decoded text")
    if str(msg.get("content-transfer-encoding", "8bit")).lower() not in _MULTIPART_CTES:
        raise Declined("a multipart with a transfer encoding is a defect")
    return b"--" + boundary.encode("ascii")


def _multipart_body(raw: bytes, pos: int, stops: tuple[bytes, ...], entity: Entity, policy: Policy) -> int:
    """Parse the parts of a multipart into ``entity.children``; return where
    its epilogue ends."""
    sep = _boundary(entity)
    inner = (*stops, sep)
    line = _find_stop(raw, pos, inner)  # the preamble ends at the first delimiter
    while True:
        if line == len(raw) or _is_stop(raw, line, _line_end(raw, line), stops):
            raise Declined("the multipart is not closed (or never opened)")
        end = _line_end(raw, line)
        kind = _boundary_kind(raw, line, end, sep)
        if kind == "close":
            if not entity.children:
                raise Declined("a multipart without parts")
            break
        if end == len(raw) or _is_stop(raw, end, _line_end(raw, end), inner):
            raise Declined("an empty part: the feed parser skips repeated delimiters")
        child, line = _entity(raw, end, inner, policy)
        if not child.children:
            # the line ending before a delimiter belongs to the delimiter
            child.body = _strip_eol(child.body)
        entity.children.append(child)
    return _find_stop(raw, end, stops)  # the epilogue runs to the enclosing delimiter


def _strip_eol(body: bytes | memoryview) -> bytes | memoryview:
    if body[-2:] == b"\r\n":
        return body[:-2]
    if body[-1:] == b"\n":
        return body[:-1]
    return body


__all__ = ["MIME_HEADERS", "Declined", "Entity", "HeaderMessage", "MimeKey", "split_message"]
