"""What the vCard and iCalendar codecs share: the parse error, text decoding
and the REV / LAST-MODIFIED stamps used by ``conflicts: newest-wins``."""

from __future__ import annotations

import datetime as dt

from mailfiler.errors import SyncItemUnreadable as ItemParseError

__all__ = ["ItemParseError", "decode_text", "parse_stamp"]


def decode_text(data: bytes) -> str:
    """UTF-8 as RFC 6350 and 5545 require; old clients' Latin-1 is read rather than shunted."""
    if not data.strip():
        raise ItemParseError("the item is empty", reason="empty-item")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_stamp(text: str) -> dt.datetime | None:
    """20240102T101500Z, 2024-01-02T10:15:00Z or a date, as naive UTC; None if unreadable."""
    text = text.strip()
    for fmt in ("%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H:%M:%SZ", "%Y%m%dT%H%M%S", "%Y-%m-%dT%H:%M:%S", "%Y%m%d", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
    return None
