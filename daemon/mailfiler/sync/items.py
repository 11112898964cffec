"""The plain form of a contact or an appointment that both sides convert to.

Every comparison, hash, merge and log line in the sync works on these field
dicts, never on vCard or iCalendar text: two items are the same when their
fields are equal, however differently a client folded, ordered or encoded
them.  Values are JSON-able (str, list, dict, None) so the last synced state
can be stored as JSON and compared after a round trip.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Fields = dict[str, Any]

#: fields of a contact, in the order they are shown
CONTACT_FIELDS: tuple[str, ...] = (
    "name",
    "given_name",
    "family_name",
    "additional_names",
    "prefix",
    "suffix",
    "emails",  # [address, ...], lower-case, sorted
    "phones",  # [[kind, number], ...] in the user's order
    "company",
    "job_title",
    "addresses",  # [{kind, po_box, extended, street, locality, region, postal_code, country}, ...]
    "notes",
)

#: fields of an appointment
APPOINTMENT_FIELDS: tuple[str, ...] = (
    "subject",
    "start",  # a time string, see below
    "end",
    "location",
    "status",  # tentative | confirmed | cancelled
    "body",
    "organizer",  # [address, name] or None
    "attendees",  # [[address, name, required|optional], ...] sorted by address
    "rrule",  # RRULE value or None
    "exdates",  # [time string, ...] sorted
    "overrides",  # [{recurrence_id, subject, start, end, location, status, body}, ...] sorted
)

#: fields holding lists: merged as a union when an item is linked for the first time
LIST_FIELDS = frozenset({"emails", "phones", "addresses", "attendees", "exdates", "overrides"})
#: list fields kept sorted (their order carries no meaning)
SORTED_FIELDS = frozenset({"emails", "attendees", "exdates", "overrides"})

FIELDS_BY_KIND = {"contacts": CONTACT_FIELDS, "calendar": APPOINTMENT_FIELDS}

ADDRESS_PARTS = ("kind", "po_box", "extended", "street", "locality", "region", "postal_code", "country")
OVERRIDE_FIELDS = ("recurrence_id", "subject", "start", "end", "location", "status", "body")


@dataclass
class ParsedItem:
    """An item read from the user's side."""

    uid: str
    fields: Fields
    categories: list[str] = field(default_factory=list)
    #: REV / LAST-MODIFIED when the item has one (UTC, naive)
    modified: dt.datetime | None = None


def content_hash(fields: Fields) -> str:
    """A stable hash of field values (key order and JSON spacing do not matter)."""
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def empty_fields(kind: str) -> Fields:
    """The value each field has when an item does not say (the merge's MISSING is not this)."""
    out: Fields = {}
    for name in FIELDS_BY_KIND[kind]:
        if name in LIST_FIELDS:
            out[name] = []
        elif name in ("organizer", "rrule", "end"):
            out[name] = None
        elif name == "status":
            out[name] = "confirmed"
        else:
            out[name] = ""
    return out


# --- time strings --------------------------------------------------------------------
#
# A time keeps the form RFC 5545 gave it, because the form is meaning: a date is
# an all-day event, a naive time floats with the viewer, "Z" is an instant, and
# a zone name makes a weekly meeting stay at 09:00 across a DST change.
#   2024-03-31                       all day
#   2024-03-31T09:00:00              floating
#   2024-03-31T07:00:00Z             UTC
#   2024-03-31T09:00:00[Europe/Stockholm]

_ZONED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\[([^\]]+)\]$")


def time_to_str(value: dt.date | dt.datetime) -> str:
    if not isinstance(value, dt.datetime):
        return value.isoformat()
    naive = value.replace(tzinfo=None, microsecond=0).isoformat()
    tz = value.tzinfo
    if tz is None:
        return naive
    key = getattr(tz, "key", None)
    if key and key != "UTC":
        return f"{naive}[{key}]"
    # UTC, or a zone without an IANA name (a client's own VTIMEZONE): keep the instant
    return value.astimezone(dt.UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def time_from_str(text: str) -> dt.date | dt.datetime:
    match = _ZONED.match(text)
    if match:
        return dt.datetime.fromisoformat(match.group(1)).replace(tzinfo=zone(match.group(2)))
    if text.endswith("Z"):
        return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)
    if "T" in text:
        return dt.datetime.fromisoformat(text)
    return dt.date.fromisoformat(text)


def zone(name: str) -> dt.tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def is_all_day(text: str | None) -> bool:
    return bool(text) and "T" not in str(text)


def utc_instant(text: str | None) -> dt.datetime | None:
    """The UTC instant of a time string (naive), for sorting; a date or a
    floating time is read as UTC."""
    if not text:
        return None
    value = time_from_str(text)
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value
    return value.astimezone(dt.UTC).replace(tzinfo=None)
