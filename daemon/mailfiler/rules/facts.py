"""What rule conditions see of a message: :class:`Facts`.

The caller builds Facts once per message (the tracking pipeline, or
``mailfiler rules test``), including which entity types the sender and the
recipients resolve to, so that evaluating rules needs no database.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Protocol

from mailfiler.rules.patterns import BODY_CAP, HEADER_CAP
from mailfiler.util.mailvalues import Address, clean_text

__all__ = ["Address", "Facts", "direction_of", "header_pairs"]


class Parsed(Protocol):
    """What :meth:`Facts.from_parsed` reads of a parsed message
    (:class:`mailfiler.tracking.parse.ParsedMessage`; rules do not import tracking)."""

    @property
    def headers(self) -> Sequence[tuple[str, str]]: ...
    @property
    def addresses(self) -> Mapping[str, Sequence[Address]]: ...
    @property
    def subject(self) -> str: ...
    @property
    def body_text(self) -> str: ...
    @property
    def attachments(self) -> Sized: ...
    @property
    def size(self) -> int: ...


# A raw header value is cut to this before RFC 2047 decoding, so decoding
# cost stays bounded too; the decoded value is then cut to HEADER_CAP.
_RAW_HEADER_CAP = 4 * HEADER_CAP


@dataclass(frozen=True)
class Facts:
    """One message as the rules see it.  Addresses are lower-case.

    ``headers`` are (name, value) pairs in message order, unfolded and with
    RFC 2047 encoded-words decoded; look them up with :meth:`header`, which
    ignores case.  ``content_type`` is the top-level type, e.g.
    ``multipart/report``.  ``sender_entities`` / ``recipient_entities`` are
    the entity types the From address / any To, Cc or Bcc address resolved
    to (by e-mail address or domain, as the tracking pipeline resolves
    parties).
    """

    mailbox: str = ""
    folder: str | None = None
    direction: str = "incoming"
    from_: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    subject: str = ""
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    has_attachment: bool = False
    size: int = 0
    content_type: str = "text/plain"
    sender_entities: frozenset[str] = frozenset()
    recipient_entities: frozenset[str] = frozenset()

    def header(self, name: str) -> list[str]:
        """Every value of header *name* (any case), in message order."""
        want = name.lower()
        return [v for k, v in self.headers if k.lower() == want]

    @classmethod
    def from_parsed(
        cls,
        msg: Parsed,
        raw_headers: Iterable[tuple[str, object]] | None = None,
        *,
        mailbox: str,
        folder: str | None,
        direction: str,
        sender_entities: Iterable[str] = (),
        recipient_entities: Iterable[str] = (),
    ) -> Facts:
        """Facts from a parsed message and its header pairs: *raw_headers*
        (for example ``email_message.raw_items()`` or :func:`header_pairs`),
        by default the ones the parser kept (``msg.headers``).  Values are
        unfolded, RFC 2047-decoded and capped here."""
        pairs = msg.headers if raw_headers is None else raw_headers
        headers = tuple((clean_text(str(k)), _decode_header(v)) for k, v in pairs)
        ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
        return cls(
            mailbox=mailbox,
            folder=folder,
            direction=direction,
            from_=tuple(msg.addresses.get("from", ())),
            to=tuple(msg.addresses.get("to", ())),
            cc=tuple(msg.addresses.get("cc", ())),
            bcc=tuple(msg.addresses.get("bcc", ())),
            subject=msg.subject,
            body=msg.body_text[:BODY_CAP],
            headers=headers,
            has_attachment=bool(msg.attachments),
            size=msg.size,
            content_type=ctype.split(";", 1)[0].strip().lower() or "text/plain",
            sender_entities=frozenset(e.lower() for e in sender_entities),
            recipient_entities=frozenset(e.lower() for e in recipient_entities),
        )


def _decode_header(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    text = " ".join(text[:_RAW_HEADER_CAP].split())  # unfold
    if "=?" in text:
        try:
            text = str(email.header.make_header(email.header.decode_header(text)))
        except Exception:  # noqa: BLE001 - a broken encoded-word keeps its raw text
            pass
    return clean_text(text)[:HEADER_CAP]


def header_pairs(raw: bytes) -> list[tuple[str, str]]:
    """The (name, raw value) pairs of a message's header block, in order."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    msg = parser.parsebytes(raw)
    return [(k, v if isinstance(v, str) else str(v)) for k, v in msg.raw_items()]


def direction_of(from_: Sequence[Address], owner: str | None) -> str:
    """``outgoing`` when the From address is the mailbox owner, else ``incoming``."""
    if owner and any(a.address.lower() == owner.lower() for a in from_):
        return "outgoing"
    return "incoming"
