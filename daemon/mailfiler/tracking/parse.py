"""Turn raw message bytes into the fields an email activity needs.

Parsing uses the standard library (``email``), but every header and part
access is guarded: untrusted mail can make the header parser raise, and a
message must still be tracked with whatever can be read, its defects
recorded.  Only input that is not mail at all raises.

The results are those of ``policy.default`` (what this module used before),
at a fraction of its cost: see :mod:`~mailfiler.tracking.headervalues`.  Ordinary well-formed
mail does not even go through the feed parser: see "fast path" below.
"""

from __future__ import annotations

import binascii
import datetime as dt
import email
import email.policy
import email.utils
import hashlib
import io
import quopri
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import _encoded_words as _ew  # type: ignore[attr-defined]  # private: not in the stubs
from email.message import Message
from typing import cast

from mailfiler.errors import EmptyMessage, NotAMessage
from mailfiler.tracking.fastmime import Declined, Entity, HeaderMessage, MimeKey, split_message
from mailfiler.tracking.headervalues import POLICY, address_pairs
from mailfiler.tracking.htmltext import html_to_text
from mailfiler.util.mailvalues import Address, clean_text

#: headers of which a real message has at least one
_MAIL_HEADERS = {"from", "to", "cc", "subject", "date", "message-id", "received", "sender", "return-path"}
_MSGID_RE = re.compile(r"<[^<>\s]+>")
_ANGLE_ADDR_RE = re.compile(r"<([^<>\s@]{1,64}@[^<>\s@]{1,255})>")
ADDRESS_ROLES = ("from", "to", "cc", "bcc")


@dataclass
class AttachmentPart:
    filename: str
    content_type: str
    data: bytes

    def __post_init__(self) -> None:
        # Set once a large part is written to the blob store (BlobStore.put_part):
        # its bytes are then dropped from the message (data is b"") while it waits
        # for its commit, and ``nbytes`` keeps their size.  Not fields: what a
        # message parses to (its fields) does not depend on where it waits.
        self.sha256: str | None = None
        self.stored_size = 0

    @property
    def nbytes(self) -> int:
        return self.stored_size if self.sha256 is not None else len(self.data)


@dataclass
class ParsedMessage:
    message_id: str
    synthetic_id: bool
    subject: str
    sent_at: dt.datetime | None
    addresses: dict[str, list[Address]]
    in_reply_to: str | None
    references: list[str]
    body_text: str
    body_html: str | None
    attachments: list[AttachmentPart]
    size: int
    defects: list[str] = field(default_factory=list)
    #: every header as (name, unfolded cleaned value), capped, for rules
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sender(self) -> str | None:
        found = self.addresses.get("from") or []
        return found[0].address if found else None


def _raw_header(msg: Message, name: str) -> str | None:
    # the parsed header object can raise on hostile input; fall back to the
    # raw folded value stored by the feed parser
    for key, value in msg._headers:  # type: ignore[attr-defined]  # noqa: SLF001 - documented fallback path
        if key.lower() == name:
            return value if isinstance(value, str) else str(value)
    return None


#: limits on what rules see of the header block (untrusted input)
MAX_HEADERS = 500
MAX_HEADER_VALUE = 8192


def _raw_headers(msg: Message) -> list[tuple[str, str]]:
    out = []
    for name, value in msg._headers[:MAX_HEADERS]:  # type: ignore[attr-defined]  # noqa: SLF001 - raw values, no re-parsing
        text = " ".join(str(value).split())[:MAX_HEADER_VALUE]
        out.append((clean_text(str(name))[:200], clean_text(text)))
    return out


def _header(msg: Message, name: str, defects: list[str]) -> str | None:
    try:
        value = msg.get(name)
    except Exception as exc:  # noqa: BLE001 - any parser failure degrades to the raw value
        defects.append(f"header {name}: {type(exc).__name__}")
        value = _raw_header(msg, name)
    if value is None:
        return None
    text = " ".join(str(value).split())
    cleaned = clean_text(text)
    if cleaned != text or "\ufffd" in cleaned:
        defects.append(f"header {name}: undecodable 8-bit bytes")
    return cleaned


def _named(msg: Message, lname: str) -> list[tuple[str, str]]:
    if isinstance(msg, HeaderMessage):
        return msg.named(lname)  # the fast path's index
    return [(k, v) for k, v in msg._headers if k.lower() == lname]  # type: ignore[attr-defined]  # noqa: SLF001 - raw values


def _addresses(msg: Message, name: str, defects: list[str]) -> list[Address]:
    try:
        pairs = []
        for key, value in _named(msg, name):
            pairs.extend(address_pairs(key, str(value)))
    except Exception as exc:  # noqa: BLE001
        defects.append(f"header {name}: {type(exc).__name__}")
        raw = [v for k, v in msg._headers if k.lower() == name]  # type: ignore[attr-defined]  # noqa: SLF001
        pairs = email.utils.getaddresses([str(v) for v in raw])
    result = _valid_addresses(pairs)
    if not result:
        # the header parser can drop every address without raising (a stray
        # "(" in 8-bit garbage opens a comment); the lenient parser may still
        # find them
        raw = [str(v) for k, v in msg._headers if k.lower() == name]  # type: ignore[attr-defined]  # noqa: SLF001
        if any("@" in v for v in raw):
            result = _valid_addresses(email.utils.getaddresses(raw))
            if not result:
                # last resort: anything that looks like <local@domain>
                result = _valid_addresses([("", m) for v in raw for m in _ANGLE_ADDR_RE.findall(v)])
    return result


def _valid_addresses(pairs: list[tuple[str, str]]) -> list[Address]:
    result: list[Address] = []
    seen: set[str] = set()
    for display, spec in pairs:
        spec = clean_text(spec or "").strip().lower()
        if not spec or "@" not in spec or spec.startswith("@") or spec.endswith("@") or len(spec) > 320:
            continue
        if spec in seen:
            continue
        seen.add(spec)
        result.append(Address(spec, clean_text(display or "")[:500]))
    return result


def _message_ids(value: str | None) -> list[str]:
    return _MSGID_RE.findall(value or "")


def _date(msg: Message, defects: list[str]) -> dt.datetime | None:
    raw = _header(msg, "date", defects)
    if not raw:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append("unparseable Date")
        return None
    if parsed.tzinfo is None:
        return parsed
    try:
        return parsed.astimezone(dt.UTC).replace(tzinfo=None)
    except (OverflowError, ValueError):
        defects.append("Date out of range")
        return None


def _part_text(part: Message, defects: list[str]) -> str:
    try:
        # what policy.default's get_content() does with a text part
        # decode=True gives a leaf part's bytes; a charset given as an RFC 2231 tuple fails here, as it should
        content = cast(bytes, part.get_payload(decode=True)).decode(
            cast(str, part.get_param("charset", "ASCII")), errors="replace"
        )
        return clean_text(content)
    except Exception as exc:  # noqa: BLE001 - unknown charset, broken transfer encoding...
        defects.append(f"text part: {type(exc).__name__}")
        payload = cast("bytes | None", part.get_payload(decode=True)) or b""
        charset = part.get_content_charset() or "utf-8"
        try:
            return clean_text(payload.decode(charset, "replace"))
        except LookupError:
            return clean_text(payload.decode("utf-8", "replace"))


def _part_text_raw(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, str):
        return clean_text(payload.strip())
    return ""


def _filename(part: Message, defects: list[str]) -> str:
    try:
        return clean_text(part.get_filename() or "")
    except Exception as exc:  # noqa: BLE001
        defects.append(f"attachment filename: {type(exc).__name__}")
        return ""


def _walk_parts(msg: Message, defects: list[str]) -> Iterator[Message]:
    try:
        yield from msg.walk()
    except RecursionError:
        defects.append("MIME nesting too deep; inner parts skipped")


def synthetic_message_id(raw: bytes, msg: Message) -> str:
    """A stable id for a message without Message-ID.

    Built from the headers that identify a message plus the body, not from
    the whole file, so that a client adding a Status: header does not make
    a second activity."""
    digest = hashlib.sha256()
    for name in ("date", "from", "to", "cc", "subject"):
        value = _raw_header(msg, name) or ""
        digest.update(name.encode() + b"\0" + " ".join(str(value).split()).encode("utf-8", "surrogateescape") + b"\0")
    body = raw.replace(b"\r\n", b"\n")
    sep = body.find(b"\n\n")
    digest.update(body[sep + 2 :] if sep >= 0 else b"")
    return f"<{digest.hexdigest()[:40]}@synthetic.mailfiler.invalid>"


def parse_message(raw: bytes) -> ParsedMessage:
    if not raw or raw.isspace():  # not raw.strip(): a copy of the whole message
        raise EmptyMessage("the message file is empty")
    fast = fast_parse(raw)
    return fast if fast is not None else parse_with_feedparser(raw)


def parse_with_feedparser(raw: bytes) -> ParsedMessage:
    """parse_message() by the standard library's feed parser: any input."""
    if not raw or raw.isspace():  # not raw.strip(): a copy of the whole message
        raise EmptyMessage("the message file is empty")
    msg = email.message_from_bytes(raw, policy=POLICY)
    keys = {k.lower() for k, _ in msg._headers}  # type: ignore[attr-defined]  # noqa: SLF001
    if not keys & _MAIL_HEADERS:
        raise NotAMessage("the file has no mail header block (no From, To, Subject, Date or Message-ID)")
    defects: list[str] = [type(d).__name__ for d in getattr(msg, "defects", [])]

    message_id, synthetic, addresses, in_reply = _head_fields(raw, msg, defects)
    body_text = ""
    body_html: str | None = None
    attachments: list[AttachmentPart] = []
    for part in _walk_parts(msg, defects):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part, defects)
        if ctype.startswith("multipart/"):
            # a multipart whose boundary never appears: its whole payload
            # arrives as one leaf; it is the body text, not an attachment
            if not body_text:
                body_text = _part_text_raw(part)
            continue
        is_body = ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename
        if not is_body:
            data = cast("bytes | None", part.get_payload(decode=True)) or b""  # a leaf: bytes
            # the content type comes from an untrusted header: NUL and stray
            # bytes must not reach the store, and the column is varchar(255)
            attachments.append(AttachmentPart(filename, clean_text(ctype)[:255], data))
            continue
        if ctype == "text/plain" and not body_text:
            body_text = _part_text(part, defects)
        elif ctype == "text/html" and body_html is None:
            body_html = _part_text(part, defects)
    # decoding a part registers what was wrong with it (invalid base64, a cut-off
    # attachment) on that part; the list above holds only the top-level defects
    for part in _walk_parts(msg, []):
        defects.extend(type(d).__name__ for d in part.defects)
    return _result(raw, msg, defects, (message_id, synthetic, addresses, in_reply), (body_text, body_html, attachments))


_Head = tuple[str, bool, dict[str, list[Address]], list[str]]
_Body = tuple[str, str | None, list[AttachmentPart]]


def _head_fields(raw: bytes, msg: Message, defects: list[str]) -> _Head:
    """Message-ID (or a synthetic one), the addresses and In-Reply-To."""
    ids = _message_ids(_header(msg, "message-id", defects))
    if ids and len(ids[0]) <= 998:
        message_id, synthetic = ids[0], False
    else:
        message_id, synthetic = synthetic_message_id(raw, msg), True
    addresses = {role: _addresses(msg, role, defects) for role in ADDRESS_ROLES}
    in_reply = _message_ids(_header(msg, "in-reply-to", defects))
    return message_id, synthetic, addresses, in_reply


def _result(raw: bytes, msg: Message, defects: list[str], head: _Head, body: _Body) -> ParsedMessage:
    message_id, synthetic, addresses, in_reply = head
    body_text, body_html, attachments = body
    if not body_text and body_html:
        body_text = html_to_text(body_html)
    return ParsedMessage(
        message_id=clean_text(message_id),
        synthetic_id=synthetic,
        subject=(_header(msg, "subject", defects) or "")[:2000],
        sent_at=_date(msg, defects),
        addresses=addresses,
        in_reply_to=in_reply[0] if in_reply else None,
        references=_message_ids(_header(msg, "references", defects))[:200],
        body_text=body_text,
        body_html=body_html,
        attachments=attachments,
        size=len(raw),
        defects=sorted(set(defects)),
        headers=_raw_headers(msg),
    )


# --------------------------------------------------------------------------- fast path
#
# Most mail is well-formed: fastmime splits it into parts without the feed
# parser (which cost more than half of parse_message), and the parts are read
# here without the Message accessors, from facts cached per distinct MIME
# header set.  Everything else about the result is computed by the same
# functions as above, on a Message holding the header values the feed parser
# would store.  Whatever fastmime or this code is not sure about (anything the
# feed parser would record a defect for, any exception) goes to the feed
# parser; tests/unit/test_parse_equivalence.py and test_parse_fastpath.py
# check that whenever the fast path answers, both give the same result.

_UUE = ("x-uuencode", "uuencode", "uue", "x-uue")


@dataclass(frozen=True, slots=True)
class _LeafFacts:
    """What the part walk reads of a leaf, all from its MIME headers."""

    disposition: str  # lower case, "" if none
    filename: str  # cleaned, "" if none
    charset: str  # get_param("charset", "ASCII")
    cte: str  # lower case, as get_payload(decode=True) compares it


_FACTS_CACHE: dict[MimeKey, _LeafFacts] = {}


def _leaf_facts(leaf: Entity) -> _LeafFacts:
    facts = _FACTS_CACHE.get(leaf.mime_key)
    if facts is None:
        part = leaf.msg
        charset = part.get_param("charset", "ASCII")
        if not isinstance(charset, str):
            raise Declined("an RFC 2231 charset: the slow path records a defect")
        facts = _LeafFacts(
            disposition=(part.get_content_disposition() or "").lower(),
            filename=clean_text(part.get_filename() or ""),
            charset=charset,
            cte=str(part.get("content-transfer-encoding", "")).lower(),
        )
        if len(_FACTS_CACHE) >= 4096:
            _FACTS_CACHE.clear()
        _FACTS_CACHE[leaf.mime_key] = facts
    return facts


#: base64 lines as decode_b accepts them: its alphabet, then at most two '=' at the end
_B64_DATA = re.compile(rb"[A-Za-z0-9+/\r\n]*")
_B64_PADDING = re.compile(rb"(?:=[\r\n]*){0,2}")
#: base64 is checked and decoded this many bytes at a time.  Each step is a C call
#: that holds the GIL throughout (about 2 ms here); in one call, a 30 MB attachment
#: held it for 0.6 s, and a parse in a thread (tracking/offloop.py) stopped the
#: event loop as long as inline.  Between steps the loop gets its turn.
B64_STEP = 256 * 1024


def _decoded(body: bytes | memoryview, cte: str) -> bytes:
    """``get_payload(decode=True)`` of a leaf whose payload is ``body`` (a view
    into the message: only the decoded bytes are new)."""
    if cte == "quoted-printable":
        return quopri.decodestring(body)
    if cte == "base64":
        return _b64decoded(body)
    if cte in _UUE:
        raise Declined("uuencode")
    return bytes(body)


def _b64decoded(body: bytes | memoryview) -> bytes:
    """What ``decode_b`` gives for the lines joined, without joining them.

    The standard library joins the lines first (a list of every line, then
    their copy: about twice the attachment again).  Lines of decode_b's alphabet
    with complete quartets decode the same in one pass that skips the line
    ends (here in steps of :data:`B64_STEP`, each a whole number of quartets,
    which decode as the whole does); anything else (missing padding, stray
    characters) takes the library's way, on one copy without the line ends."""
    value = _b64_stepwise(body)
    if value is not None:
        return value
    value, found = _ew.decode_b(bytes(body).translate(None, b"\r\n"))
    if found:
        raise Declined("invalid base64: a defect on the part")
    return value


def _b64_stepwise(body: bytes | memoryview) -> bytes | None:
    """``body`` decoded when it is decode_b's alphabet in whole quartets, at
    most two '=' at the end; else None.  A body of one step is one
    a2b_base64 call on it as it is (the line ends are a2b_base64's to skip)."""
    pos, end = 0, len(body)
    out: io.BytesIO | None = None  # made at the first whole step: the body is longer than one
    carry = b""  # the data characters of an incomplete quartet, for the next step
    while True:
        stop = min(pos + B64_STEP, end)
        data_end = cast("re.Match[bytes]", _B64_DATA.match(body, pos, stop)).end()  # "*": always matches
        if data_end == stop < end:
            if out is None:
                # the output in one allocation of what the body can hold at most, as one
                # a2b_base64 call made it: grown step by step in a parse thread, a backfill of
                # 16 messages with a 30 MB attachment peaked at 218-233 MiB instead of 151-178
                # (tests/e2e/test_backfill_memory.py); getvalue() is that buffer cut to size
                out = io.BytesIO()
                out.seek(end // 4 * 3 + 2)
                out.write(b"\0")
                out.seek(0)
            chars = carry + bytes(body[pos:data_end]).translate(None, b"\r\n")
            whole = len(chars) // 4 * 4  # whole quartets of the alphabet alone decode without error
            out.write(binascii.a2b_base64(memoryview(chars)[:whole]))
            carry, pos = chars[whole:], stop
            continue
        # the data characters end here: what follows is padding, or the library's case
        if _B64_PADDING.fullmatch(body, data_end) is None:
            return None
        rest = body[pos:] if pos else body
        try:
            value = binascii.a2b_base64(carry + bytes(rest) if carry else rest)
        except binascii.Error:
            return None  # incomplete quartets: decode_b pads them (or finds the defect)
        # decode_b takes it as it is only when its characters make whole
        # quartets (it pads them otherwise); the count follows from the size
        size = (out.tell() if out is not None else 0) + len(value)
        data_chars = size // 3 * 4 + (0, 2, 3)[size % 3]
        pads = bytes(body[data_end:]).count(b"=")
        if (data_chars + pads) % 4:
            return None
        if out is None:
            return value
        out.write(value)
        out.truncate(size)
        return out.getvalue()


#: codecs whose errors="replace" decoding yields no lone surrogates, so
#: clean_text need not look for them
_NO_SURROGATES = frozenset(("utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1"))


def _fast_text(leaf: Entity, facts: _LeafFacts) -> str:
    # what _part_text gives when nothing goes wrong
    try:
        text = _decoded(leaf.body, facts.cte).decode(facts.charset, errors="replace")
    except LookupError as exc:
        raise Declined("unknown charset: the slow path records a defect") from exc
    return text.replace("\x00", "") if facts.charset.lower() in _NO_SURROGATES else clean_text(text)


def _fast_body(root: Entity) -> _Body:
    body_text = ""
    body_html: str | None = None
    attachments: list[AttachmentPart] = []
    for leaf in root.leaves():
        facts = _leaf_facts(leaf)
        ctype = leaf.content_type
        is_body = ctype in ("text/plain", "text/html") and facts.disposition != "attachment" and not facts.filename
        if not is_body:
            data = _decoded(leaf.body, facts.cte) or b""
            attachments.append(AttachmentPart(facts.filename, clean_text(ctype)[:255], data))
        elif ctype == "text/plain" and not body_text:
            body_text = _fast_text(leaf, facts)
        elif ctype == "text/html" and body_html is None:
            body_html = _fast_text(leaf, facts)
    return body_text, body_html, attachments


def fast_parse(raw: bytes) -> ParsedMessage | None:
    """``parse_message(raw)`` for ordinary well-formed mail, without the feed
    parser; None when it declines (the input is then for parse_message)."""
    try:
        root = split_message(raw, POLICY)
        if root is None:
            return None
        msg = root.msg
        if not {k.lower() for k, _ in msg._headers} & _MAIL_HEADERS:  # noqa: SLF001
            return None
        body = _fast_body(root)
        defects: list[str] = []
        head = _head_fields(raw, msg, defects)
        return _result(raw, msg, defects, head, body)
    except Exception:  # noqa: BLE001 - Declined, or anything unforeseen: the feed parser decides
        return None


__all__ = [
    "Address",
    "AttachmentPart",
    "ParsedMessage",
    "clean_text",
    "fast_parse",
    "parse_message",
    "parse_with_feedparser",
]
