"""Test mail for the tests and the benchmarks: realistic messages, a corpus of broken
input, very large messages, and Maildir helpers that behave like a real MDA and client.

Standard library only (bench/ imports this module too). Everything is deterministic for
the same arguments, except the unique Maildir file names.
"""

from __future__ import annotations

import base64
import itertools
import os
import quopri
import random
import socket
import struct
import time
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from email.header import Header
from email.headerregistry import Address
from email.utils import format_datetime, formataddr
from html import escape
from pathlib import Path

__all__ = [
    "DEFAULT_DOMAINS",
    "MALFORMED_NAMES",
    "drop_into_maildir",
    "fs_folder_dir",
    "imap_utf7_encode",
    "large_attachment_message",
    "maildir_unique_name",
    "maildirpp_folder_dir",
    "make_maildir_folder",
    "malformed_corpus",
    "many_attachments_message",
    "mark_seen",
    "message_id_for",
    "move_message",
    "realistic_message",
]

DEFAULT_DOMAINS: tuple[str, ...] = (
    "contoso.com",
    "fabrikam.com",
    "example.org",
    "adatum.com",
    "northwindtraders.com",
    "wingtiptoys.com",
)

_FIRST = (
    "Anna", "Erik", "Maria", "Lars", "Karin", "Johan", "Åsa", "Jörgen", "Sofia", "Mikael",
    "Eva", "Peter", "Linnéa", "Björn", "Ingrid", "Olof", "Emma", "David", "Chloé", "José",
)  # fmt: skip
_LAST = (
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Öberg", "Åkesson",
    "Lindström", "Svensson", "Smith", "Müller", "García", "O'Brien", "Ng", "van der Berg",
)  # fmt: skip
_TOPICS = (
    "Offert för serviceavtal {year}",
    "Quote request: {n} licences",
    "Faktura {n} – påminnelse",
    "Meeting notes {date}",
    "Leveransdatum för order {n}",
    "Contract renewal {year}",
    "Support case [#{n}] login fails after update",
    "Ny kontaktperson hos {company}",
    "Price list {year} attached",
    "Förfrågan om demo",
    "Återkoppling efter mötet",
    "Invoice {n} overdue",
)
_COMPANIES = ("Contoso AB", "Fabrikam Inc.", "Adatum", "Northwind Traders", "Wingtip Toys", "Åkesson AB")
_SENTENCES = (
    "Thanks for the meeting yesterday, it was good to go through the numbers together.",
    "As discussed, I am attaching the updated proposal for the next contract period.",
    "Could you confirm the delivery address and the preferred date for the installation?",
    "We have reviewed the invoice and everything looks correct on our side.",
    "Please let me know if anything is unclear or if you need more information from us.",
    "The new licences will be active from the first of next month.",
    "Our finance department needs the purchase order number before we can proceed.",
    "I have copied my colleague who will take over this account from next week.",
    "Tack för ett trevligt möte i går, det var bra att gå igenom siffrorna tillsammans.",
    "Som vi pratade om bifogar jag den uppdaterade offerten för nästa avtalsperiod.",
    "Kan ni bekräfta leveransadressen och önskat datum för installationen?",
    "Vi har gått igenom fakturan och allt ser korrekt ut från vår sida.",
    "Hör av er om något är oklart eller om ni behöver mer underlag från oss.",
    "Återkom gärna senast på fredag så att vi hinner planera leveransen.",
    "The support team has reproduced the problem and a fix is scheduled for the next release.",
    "Prices are quoted in SEK excluding VAT and valid for thirty days.",
)
_GREETINGS = ("Hi {name},", "Hello {name},", "Hej {name}!", "Dear {name},", "Hej {name},")
_CLOSINGS = ("Best regards,", "Kind regards,", "Med vänliga hälsningar,", "Vänliga hälsningar,", "Thanks,")
_MAILERS = ("Microsoft Outlook 16.0", "Mozilla Thunderbird 115.6", "Apple Mail (2.3774)", "Roundcube Webmail/1.6")


_ASCII_FOLD = str.maketrans({"å": "a", "ä": "a", "ö": "o", "é": "e", "ü": "u", "í": "i"})


def _rng(*parts: object) -> random.Random:
    # str seeds are hashed with SHA-512 by random.seed(): stable across runs and processes.
    return random.Random(":".join(str(p) for p in parts))


def _person(rng: random.Random, domain_pool: Sequence[str]) -> Address:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = f"{first}.{last}".lower().translate(_ASCII_FOLD)
    local = "".join(ch for ch in local if ch.isascii() and (ch.isalnum() or ch == "."))
    return Address(display_name=f"{first} {last}", username=local, domain=rng.choice(domain_pool))


def message_id_for(i: int, *, seed: int = 0, domain_pool: Sequence[str] = DEFAULT_DOMAINS) -> str:
    """The Message-ID (with angle brackets) that ``realistic_message(i, seed=seed)`` carries."""
    rng = _rng("mid", seed, i)
    return f"<{i}.{rng.getrandbits(64):016x}@mail.{rng.choice(domain_pool)}>"


def _subject_for(i: int, seed: int) -> str:
    rng = _rng("subject", seed, i)
    return rng.choice(_TOPICS).format(
        year=2023 + rng.randrange(3),
        n=rng.randrange(10000, 99999),
        date=f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        company=rng.choice(_COMPANIES),
    )


def _date_for(i: int, rng: random.Random) -> datetime:
    tz = timezone(timedelta(hours=rng.choice((1, 1, 1, 2, 0, -5))))
    base = datetime(2024, 1, 2, 8, 0, tzinfo=timezone(timedelta(hours=1)))
    return (base + timedelta(minutes=37 * i, seconds=rng.randrange(600))).astimezone(tz)


def _paragraphs(rng: random.Random, target_chars: int) -> list[str]:
    paras: list[str] = []
    size = 0
    while size < target_chars:
        para = " ".join(rng.choice(_SENTENCES) for _ in range(rng.randrange(2, 6)))
        paras.append(para)
        size += len(para) + 2
    return paras


def _pdfish(rng: random.Random, size: int) -> bytes:
    """Bytes that start and end like a PDF, with a binary stream in between."""
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    head += b"4 0 obj\n<< /Length %d /Filter /FlateDecode >>\nstream\n" % size
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    return head + rng.randbytes(size) + tail


def _addr(a: Address) -> str:
    return formataddr((a.display_name, a.addr_spec), charset="utf-8")


def _addr_list(addrs: Sequence[Address]) -> str:
    return ",\n ".join(_addr(a) for a in addrs)


def _unstructured(value: str) -> str:
    # RFC 2047 encoded-words only when needed; Header.encode() also folds the line.
    return value if value.isascii() else Header(value, "utf-8").encode()


def _encode_body(text: str, cte: str) -> bytes:
    raw = text.encode("utf-8")
    if cte == "base64":
        return base64.encodebytes(raw)
    if cte == "quoted-printable":
        return quopri.encodestring(raw)
    return raw  # 8bit: every line is well below 998 octets


def _part(headers: str, body: bytes) -> bytes:
    return headers.encode("ascii") + b"\n\n" + body


def _multipart(subtype: str, boundary: str, parts: Sequence[bytes]) -> bytes:
    # A part (header block + body) as bytes: the head plus the body of the multipart.
    b = boundary.encode("ascii")
    body = b"".join(b"--" + b + b"\n" + p.rstrip(b"\n") + b"\n" for p in parts) + b"--" + b + b"--\n"
    return _part(f'Content-Type: multipart/{subtype};\n boundary="{boundary}"', body)


def realistic_message(
    i: int,
    *,
    domain_pool: Sequence[str] = DEFAULT_DOMAINS,
    with_attachment_every: int = 5,
    seed: int = 0,
) -> bytes:
    """A plausible business e-mail, deterministic for (i, seed); about 5–20 KB (mean ~12 KB).

    From/To/Cc with display names (some non-ASCII) at ``domain_pool``; Date; Message-ID
    ``message_id_for(i)``; a Subject (about a third are replies with In-Reply-To/References
    to an earlier i); multipart/alternative text+HTML; every ``with_attachment_every``-th
    message (i % N == N - 1; 0 = never) is multipart/mixed with a small PDF-ish attachment.
    Built by hand (not with EmailMessage), so thousands can be made per second.
    """
    rng = _rng("msg", seed, i)
    sender = _person(rng, domain_pool)
    to = [_person(rng, domain_pool) for _ in range(rng.choice((1, 1, 1, 2, 3)))]
    cc = [_person(rng, domain_pool) for _ in range(rng.choice((0, 0, 0, 1, 2)))]
    date = _date_for(i, rng)
    relay = f"mx{rng.randrange(1, 4)}.{sender.domain}"
    ip = f"192.0.2.{rng.randrange(1, 255)}"
    received_at = format_datetime(date + timedelta(seconds=rng.randrange(1, 20)))

    headers = [
        f"Return-Path: <{sender.addr_spec}>",
        f"Received: from {relay} ({relay} [{ip}])\n\tby mail.example.net with ESMTPS id {rng.getrandbits(40):010X};"
        f"\n\t{received_at}",
        f"From: {_addr(sender)}",
        f"To: {_addr_list(to)}",
    ]
    if cc:
        headers.append(f"Cc: {_addr_list(cc)}")
    headers += [
        f"Date: {format_datetime(date)}",
        f"Message-ID: {message_id_for(i, seed=seed, domain_pool=domain_pool)}",
    ]
    if i > 0 and rng.random() < 0.33:
        parent = i - 1 - rng.randrange(min(i, 5))
        prefix = rng.choice(("Re: ", "RE: ", "SV: ", "Sv: "))
        parent_id = message_id_for(parent, seed=seed, domain_pool=domain_pool)
        headers += [
            f"Subject: {_unstructured(prefix + _subject_for(parent, seed))}",
            f"In-Reply-To: {parent_id}",
            f"References: {parent_id}",
        ]
    else:
        headers.append(f"Subject: {_unstructured(_subject_for(i, seed))}")
    headers += [
        "MIME-Version: 1.0",
        f"X-Mailer: {rng.choice(_MAILERS)}",
        f"Content-Language: {rng.choice(('sv-SE', 'en-US', 'en-GB'))}",
    ]

    greeting = rng.choice(_GREETINGS).format(name=to[0].display_name.split()[0])
    paras = _paragraphs(rng, rng.randrange(1500, 6000))
    phone = f"+46 8 {rng.randrange(100, 999)} {rng.randrange(10, 99)} {rng.randrange(10, 99)}"
    closing = f"{rng.choice(_CLOSINGS)}\n{sender.display_name}\n{rng.choice(_COMPANIES)}\n{phone}"
    text = "\n\n".join([greeting, *paras, closing]) + "\n"
    html_paras = "\n".join(f'<p style="margin:0 0 12px 0">{escape(p)}</p>' for p in paras)
    html = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><style>body{font-family:Calibri,Arial,sans-serif;'
        "font-size:11pt}</style></head>\n<body>\n"
        f"<p>{escape(greeting)}</p>\n{html_paras}\n<p>{escape(closing).replace(chr(10), '<br>')}</p>\n</body></html>\n"
    )
    cte = rng.choice(("quoted-printable", "quoted-printable", "8bit", "base64"))
    body = _multipart(
        "alternative",
        f"----=_Part_{rng.getrandbits(48):012x}",
        [
            _part(
                f'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: {cte}', _encode_body(text, cte)
            ),
            _part(
                f'Content-Type: text/html; charset="utf-8"\nContent-Transfer-Encoding: {cte}', _encode_body(html, cte)
            ),
        ],
    )
    if with_attachment_every > 0 and i % with_attachment_every == with_attachment_every - 1:
        filename = f"{rng.choice(('Offert', 'Faktura', 'Avtal', 'Quote', 'Invoice', 'Prislista'))}-{rng.randrange(1000, 9999)}.pdf"
        attachment = _part(
            f'Content-Type: application/pdf; name="{filename}"\n'
            f'Content-Disposition: attachment; filename="{filename}"\nContent-Transfer-Encoding: base64',
            base64.encodebytes(_pdfish(rng, rng.randrange(2000, 9000))),
        )
        body = _multipart("mixed", f"----=_Part_{rng.getrandbits(48):012x}", [body, attachment])
    return "\n".join(headers).encode("ascii") + b"\n" + body


# --------------------------------------------------------------------------- broken input


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


_HDR = (
    b"From: Anna Andersson <anna.andersson@contoso.com>\n"
    b"To: Erik Eriksson <erik.eriksson@fabrikam.com>\n"
    b"Date: Tue, 02 Jan 2024 09:15:00 +0100\n"
)


def _hdr(mid: str, subject: bytes = b"Test") -> bytes:
    return _HDR + b"Message-ID: <" + mid.encode() + b"@malformed.example.org>\nSubject: " + subject + b"\n"


def _nested_multipart(depth: int) -> bytes:
    body = b"Content-Type: text/plain; charset=utf-8\n\nThe innermost part.\n"
    for level in range(depth, 0, -1):
        b = b"nest-%d" % level
        body = b'Content-Type: multipart/mixed; boundary="' + b + b'"\n\n--' + b + b"\n" + body + b"\n--" + b + b"--\n"
    return body


MALFORMED_NAMES: tuple[str, ...] = (
    "boundary_never_appears",
    "boundary_unterminated",
    "bad_charset",
    "raw_8bit_header_latin1",
    "raw_8bit_header_invalid_utf8",
    "no_message_id",
    "duplicate_message_id",
    "empty",
    "binary_png",
    "plain_text_no_headers",
    "invalid_base64",
    "nested_multipart_50",
    "header_line_100k",
    "mixed_line_endings",
    "encoded_word_garbage",
    "unparseable_date",
    "address_garbage",
    "address_group_undisclosed",
    "rfc2231_non_ascii_filename",
    "nul_bytes_in_body",
)


def malformed_corpus() -> dict[str, bytes]:
    """Named inputs a mail filer must survive (keys are ``MALFORMED_NAMES``)."""
    corpus = {
        # multipart declares boundary "declared" but the body only uses "--other": no part boundary ever matches
        "boundary_never_appears": _hdr("b1") + b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="declared"\n\n'
        b"--other\nContent-Type: text/plain\n\nBody behind the wrong boundary.\n--other--\n",
        # multipart whose closing --b-- never comes; the last part (a base64 attachment) is cut off mid-line
        "boundary_unterminated": _hdr("b2") + b"MIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain; charset=utf-8\n\nFirst part.\n"
        b'--b\nContent-Type: application/pdf; name="x.pdf"\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQKJ',
        # charset=x-unknown (no such codec) and 8-bit bytes in the body
        "bad_charset": _hdr("c1") + b"MIME-Version: 1.0\n"
        b'Content-Type: text/plain; charset="x-unknown"\nContent-Transfer-Encoding: 8bit\n\n'
        b"Hej p\xe5 dig, \xc3\xa5terkom \xff\xfe snarast.\n",
        # undeclared latin-1 bytes in Subject and in a From display name
        "raw_8bit_header_latin1": b"From: J\xf6rgen \xc5kesson <jorgen@contoso.com>\nTo: erik@fabrikam.com\n"
        b"Date: Tue, 02 Jan 2024 09:15:00 +0100\nMessage-ID: <h1@malformed.example.org>\n"
        b"Subject: Offert f\xf6r \xe5r 2024\n\nBody.\n",
        # bytes that are not valid UTF-8 (truncated sequence, \xff\xfe) in Subject and To
        "raw_8bit_header_invalid_utf8": b"From: anna@contoso.com\nTo: Caf\xc3\x28 \xff\xfe <erik@fabrikam.com>\n"
        b"Date: Tue, 02 Jan 2024 09:15:00 +0100\nMessage-ID: <h2@malformed.example.org>\n"
        b"Subject: caf\xc3\x28 \xe2\x82 \xff\xfe\n\nBody.\n",
        # a well-formed message without any Message-ID header
        "no_message_id": _HDR + b"Subject: No Message-ID here\n\nBody without an id.\n",
        # two Message-ID headers with different values
        "duplicate_message_id": _hdr("dup1") + b"Message-ID: <dup2@malformed.example.org>\n\nTwo ids.\n",
        # a zero-byte file
        "empty": b"",
        # a PNG image dropped into the maildir, not mail at all
        "binary_png": _png_1x1(),
        # plain text with no header block
        "plain_text_no_headers": b"hello world\n",
        # a base64 attachment whose content is not valid base64 (bad chars, bad padding)
        "invalid_base64": _hdr("b64") + b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="q"\n\n'
        b"--q\nContent-Type: text/plain\n\nSee attachment.\n"
        b'--q\nContent-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment; filename="a.pdf"\n'
        b"Content-Transfer-Encoding: base64\n\n!!!!not*base64@@@\nQUJD=\n==x\n--q--\n",
        # multipart/mixed nested 50 levels deep around one text part
        "nested_multipart_50": _hdr("deep") + b"MIME-Version: 1.0\n" + _nested_multipart(50),
        # a single unfolded Subject line of about 100 KB
        "header_line_100k": _HDR + b"Message-ID: <long@malformed.example.org>\n"
        b"Subject: " + b"Offert " * (100_000 // 7) + b"\n\nBody.\n",
        # CRLF, bare LF and a bare CR mixed in headers and body
        "mixed_line_endings": b"From: anna@contoso.com\r\nTo: erik@fabrikam.com\n"
        b"Date: Tue, 02 Jan 2024 09:15:00 +0100\r\nMessage-ID: <eol@malformed.example.org>\n"
        b"Subject: Mixed\r\n line endings\n\r\nLine one\r\nLine two\nLine three\rLine four\n",
        # RFC 2047 encoded-words whose payload is not base64 / unknown charset / unterminated
        "encoded_word_garbage": _hdr("ew", b"=?utf-8?B?!!!?= =?x-nope?Q?caf=E9?= =?utf-8?Q?unterminated")
        + b"\nBody.\n",
        # a Date header no parser understands
        "unparseable_date": b"From: anna@contoso.com\nTo: erik@fabrikam.com\nDate: Tomorrow-ish, 32 Foo 20245 99:99\n"
        b"Message-ID: <date@malformed.example.org>\nSubject: Bad date\n\nBody.\n",
        # address headers that are not addresses at all
        "address_garbage": b'From: "" <>\nTo: <<<@@>>\nCc: ,,,;;"unbalanced <x@\nReply-To: @@@\n'
        b"Date: Tue, 02 Jan 2024 09:15:00 +0100\nMessage-ID: <addr@malformed.example.org>\nSubject: Garbage\n\nBody.\n",
        # group syntax with no members (typical Bcc-only mail) plus an empty named group in Cc
        "address_group_undisclosed": b"From: anna@contoso.com\nTo: undisclosed-recipients:;\nCc: Kunder:;\n"
        b"Date: Tue, 02 Jan 2024 09:15:00 +0100\nMessage-ID: <group@malformed.example.org>\nSubject: Group\n\nBody.\n",
        # attachments named with RFC 2231 non-ASCII filenames, one split into continuations
        "rfc2231_non_ascii_filename": _hdr("2231")
        + b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="r"\n\n'
        b"--r\nContent-Type: text/plain; charset=utf-8\n\nBilagor.\n"
        b"--r\nContent-Type: application/pdf\n"
        b"Content-Disposition: attachment; filename*=utf-8''%C3%85kesson%20offert%20%E2%82%AC.pdf\n"
        b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n"
        b"--r\nContent-Type: text/plain; name*=utf-8''anteckningar-m%C3%B6te.txt\n"
        b"Content-Disposition: attachment; filename*0*=utf-8''%C3%96versikt%20;\n filename*1*=f%C3%B6r%20;"
        b' filename*2="2024.txt"\n\nAnteckningar.\n--r--\n',
        # NUL bytes inside an 8-bit text body
        "nul_bytes_in_body": _hdr("nul") + b"Content-Type: text/plain; charset=utf-8\n\nHej\x00 v\x00rlden\x00\n",
    }
    assert tuple(corpus) == MALFORMED_NAMES
    return corpus


# --------------------------------------------------------------------------- large messages


def _b64_lines(data: bytes) -> bytes:
    return base64.encodebytes(data)  # 76-char lines, each ending in \n


def _headers_for(kind: str, seed: int) -> bytes:
    return (
        b"From: Anna Andersson <anna.andersson@contoso.com>\n"
        b"To: Erik Eriksson <erik.eriksson@fabrikam.com>\n"
        b"Date: Tue, 02 Jan 2024 09:15:00 +0100\n"
        + f"Message-ID: <{kind}.{seed}@mail.contoso.com>\n".encode()
        + b"MIME-Version: 1.0\n"
    )


def large_attachment_message(size_bytes: int, *, seed: int = 0) -> bytes:
    """One message with a ``size_bytes`` binary attachment (base64, so ~1.35x on disk)."""
    rng = _rng("large", seed, size_bytes)
    return b"".join(
        (
            _headers_for(f"large-{size_bytes}", seed),
            f"Subject: Large attachment ({size_bytes} bytes)\n".encode(),
            b'Content-Type: multipart/mixed; boundary="large-boundary"\n\n',
            b"--large-boundary\nContent-Type: text/plain; charset=utf-8\n\nSee the attached archive.\n",
            b'--large-boundary\nContent-Type: application/octet-stream; name="archive.bin"\n',
            b'Content-Disposition: attachment; filename="archive.bin"\nContent-Transfer-Encoding: base64\n\n',
            _b64_lines(rng.randbytes(size_bytes)),
            b"--large-boundary--\n",
        )
    )


def many_attachments_message(n: int, *, seed: int = 0) -> bytes:
    """One message with ``n`` small attachments of mixed types; some filenames non-ASCII (RFC 2231)."""
    rng = _rng("many", seed, n)
    png = _png_1x1()
    parts = [
        _headers_for(f"many-{n}", seed),
        f"Subject: {n} bilagor\n".encode(),
        b'Content-Type: multipart/mixed; boundary="many-boundary"\n\n',
        "--many-boundary\nContent-Type: text/plain; charset=utf-8\n\nHär kommer alla bilagor.\n".encode(),
    ]
    for k in range(n):
        kind = k % 5
        if kind == 0:
            ctype, ext, data = "text/plain; charset=utf-8", "txt", f"Anteckning {k}\n".encode()
        elif kind == 1:
            ctype, ext, data = "application/pdf", "pdf", _pdfish(rng, 200)
        elif kind == 2:
            ctype, ext, data = "image/png", "png", png
        elif kind == 3:
            ctype, ext, data = "text/csv; charset=utf-8", "csv", f"id,namn\n{k},Åkesson\n".encode()
        else:
            ctype, ext, data = "application/octet-stream", "bin", rng.randbytes(64)
        if k % 7 == 3:
            disp = f"attachment; filename*=utf-8''%C3%96versikt-{k:04d}.{ext}"
        else:
            disp = f'attachment; filename="bilaga-{k:04d}.{ext}"'
        parts.append(
            f"--many-boundary\nContent-Type: {ctype}\nContent-Disposition: {disp}\n"
            "Content-Transfer-Encoding: base64\n\n".encode()
        )
        parts.append(_b64_lines(data))
    parts.append(b"--many-boundary--\n")
    return b"".join(parts)


# --------------------------------------------------------------------------- Maildir

_delivery_counter = itertools.count(1)


def maildir_unique_name() -> str:
    """A Dovecot-style unique name: ``<secs>.M<usec>P<pid>Q<n>.<host>``."""
    now = time.time()
    secs = int(now)
    usec = int((now - secs) * 1_000_000)
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{secs}.M{usec}P{os.getpid()}Q{next(_delivery_counter)}.{host}"


def make_maildir_folder(folder_dir: Path) -> Path:
    """Create ``folder_dir`` with tmp/, new/ and cur/ (existing ones are kept)."""
    folder_dir = Path(folder_dir)
    for sub in ("tmp", "new", "cur"):
        (folder_dir / sub).mkdir(parents=True, exist_ok=True)
    return folder_dir


def _info(flags: str) -> str:
    return ":2," + "".join(sorted(set(flags)))


def drop_into_maildir(
    folder_dir: Path,
    data: bytes,
    *,
    name: str | None = None,
    flags: str | None = None,
    fsync: bool = True,
) -> Path:
    """Deliver ``data`` the way an MDA does: write tmp/<unique>, fsync, rename to new/<unique>.

    With ``flags`` (e.g. ``"S"`` or ``""``) the file goes to cur/<unique>:2,<flags> instead,
    as if a client had already seen it. ``name`` replaces the generated unique base name.
    ``fsync=False`` skips the fsync (benchmarks that only need the files).
    Missing tmp/new/cur directories are created. Returns the final path.
    """
    folder_dir = make_maildir_folder(folder_dir)
    base = name or maildir_unique_name()
    tmp = folder_dir / "tmp" / base
    with open(tmp, "xb") as fh:
        fh.write(data)
        fh.flush()
        if fsync:
            os.fsync(fh.fileno())
    final = folder_dir / "new" / base if flags is None else folder_dir / "cur" / (base + _info(flags))
    os.rename(tmp, final)
    return final


def _split_info(filename: str) -> tuple[str, str | None]:
    base, sep, info = filename.partition(":2,")
    return (base, info) if sep else (filename, None)


def mark_seen(path: Path) -> Path:
    """What a mail client does when it reads a message: new/x -> cur/x:2,S (or add S in cur/)."""
    path = Path(path)
    base, flags = _split_info(path.name)
    target = path.parent.parent / "cur" / (base + _info((flags or "") + "S"))
    os.rename(path, target)
    return target


def move_message(path: Path, dest_folder_dir: Path) -> Path:
    """Move a message to another folder as a client would: same file name, same new/ or cur/."""
    path = Path(path)
    sub = path.parent.name
    if sub not in ("new", "cur"):
        raise ValueError(f"{path} is not in a new/ or cur/ directory")
    dest = make_maildir_folder(dest_folder_dir) / sub / path.name
    os.rename(path, dest)
    return dest


def imap_utf7_encode(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 §5.1.3): ``Åkesson`` -> ``&AMU-kesson``, ``&`` -> ``&-``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def _folder_parts(folder: str) -> list[str]:
    parts = folder.split("/")
    if any(not p for p in parts):
        raise ValueError(f"bad folder name {folder!r}: empty component")
    return parts


def maildirpp_folder_dir(root: Path, folder: str) -> Path:
    """The directory of IMAP folder ``folder`` (``/``-separated) in Maildir++ layout.

    ``INBOX`` is ``root`` itself; ``A/B`` is ``root/.A.B``; names are IMAP modified UTF-7,
    so ``Kunder/Åkesson AB`` is ``root/.Kunder.&AMU-kesson AB``.
    """
    root = Path(root)
    if folder.upper() == "INBOX":
        return root
    parts = _folder_parts(folder)
    if any("." in p for p in parts):
        raise ValueError(f"bad folder name {folder!r}: '.' is the Maildir++ separator")
    return root / ("." + ".".join(imap_utf7_encode(p) for p in parts))


def fs_folder_dir(root: Path, folder: str) -> Path:
    """The directory of ``folder`` in the plain filesystem layout: ``A/B`` is ``root/A/B``
    (names kept as UTF-8); ``INBOX`` is ``root`` itself, as in Maildir++."""
    root = Path(root)
    if folder.upper() == "INBOX":
        return root
    return root.joinpath(*_folder_parts(folder))
