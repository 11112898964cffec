"""IMAP modified UTF-7 (RFC 3501 section 5.1.3) for folder names.

Dovecot stores Maildir++ folder names in this encoding, and IMAP servers
without UTF8=ACCEPT require it on the wire."""

from __future__ import annotations

import base64


def _b64(chunk: str) -> str:
    raw = chunk.encode("utf-16-be")
    return "&" + base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",") + "-"


def encode(text: str) -> str:
    out: list[str] = []
    pending: list[str] = []
    for ch in text:
        if 0x20 <= ord(ch) <= 0x7E:
            if pending:
                out.append(_b64("".join(pending)))
                pending = []
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    if pending:
        out.append(_b64("".join(pending)))
    return "".join(out)


def decode(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i)
        if end < 0:
            raise ValueError(f"unterminated modified UTF-7 shift in {text!r}")
        body = text[i + 1 : end]
        if not body:
            out.append("&")
        else:
            b64 = body.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64).decode("utf-16-be"))
        i = end + 1
    return "".join(out)
