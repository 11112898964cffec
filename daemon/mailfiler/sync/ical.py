"""iCalendar (RFC 5545, via icalendar) to appointment fields and back.

One item is one event: its master VEVENT and the VEVENTs that override single
occurrences (same UID, a RECURRENCE-ID).  Cancelled occurrences are EXDATEs.
Writing merges into the user's item as :mod:`mailfiler.sync.vcard` does:
alarms, an attendee's PARTSTAT and a client's X- properties survive.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import icalendar

from mailfiler.sync.items import Fields, ParsedItem, empty_fields, time_from_str, time_to_str
from mailfiler.sync.parsing import ItemParseError, decode_text

PRODID = "-//mailfiler//sync-back//EN"

_PROPS = {
    "subject": "SUMMARY",
    "start": "DTSTART",
    "end": "DTEND",
    "location": "LOCATION",
    "status": "STATUS",
    "body": "DESCRIPTION",
    "organizer": "ORGANIZER",
    "attendees": "ATTENDEE",
    "rrule": "RRULE",
    "exdates": "EXDATE",
}
_ROLES = {
    "REQ-PARTICIPANT": "required",
    "CHAIR": "required",
    "OPT-PARTICIPANT": "optional",
    "NON-PARTICIPANT": "optional",
}


def _bad(message: str) -> ItemParseError:
    return ItemParseError(message, reason="bad-icalendar")


def _read(data: bytes) -> icalendar.Calendar:
    text = decode_text(data)
    if "BEGIN:VCALENDAR" not in text.upper():
        raise _bad("not an iCalendar item: no BEGIN:VCALENDAR line")
    try:
        return icalendar.Calendar.from_ical(text)
    except Exception as exc:  # icalendar raises several types on broken input
        raise _bad(f"broken iCalendar: {exc}") from exc


def _split(cal: icalendar.Calendar) -> tuple[Any, list[Any]]:
    events = list(cal.walk("VEVENT"))
    if not events:
        raise _bad("the item holds no VEVENT (tasks and journal entries are not synced)")
    uids = {str(e.get("UID", "")) for e in events}
    if len(uids) > 1:
        raise _bad(f"the item holds {len(uids)} different events (UIDs); expected one per item")
    masters = [e for e in events if "RECURRENCE-ID" not in e]
    if not masters:
        raise _bad("the item holds only changed occurrences, no master event")
    return masters[0], [e for e in events if "RECURRENCE-ID" in e]


def _many(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _address(value: Any) -> tuple[str, str]:
    text = str(value).strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    return text.strip().lower(), str(getattr(value, "params", {}).get("CN", "")).strip()


def _time(ev: Any, name: str) -> str | None:
    prop = ev.get(name)
    if prop is None:
        return None
    try:
        return time_to_str(prop.dt)
    except Exception as exc:  # an unreadable date, or a zone that does not exist
        raise _bad(f"{name} cannot be read: {exc}") from exc


def _common(ev: Any) -> Fields:
    start = _time(ev, "DTSTART")
    if start is None:
        raise _bad("an event has no DTSTART")
    end = _time(ev, "DTEND")
    if end is None and ev.get("DURATION") is not None:
        end = time_to_str(time_from_str(start) + ev["DURATION"].dt)
    return {
        "subject": str(ev.get("SUMMARY", "")).strip(),
        "start": start,
        "end": end,
        "location": str(ev.get("LOCATION", "")).strip(),
        "status": str(ev.get("STATUS", "CONFIRMED")).strip().lower() or "confirmed",
        "body": str(ev.get("DESCRIPTION", "")).strip(),
    }


def parse(data: bytes, *, default_uid: str = "") -> ParsedItem:
    """Read an iCalendar item; raises :class:`ItemParseError` with the reason."""
    cal = _read(data)
    try:
        return _fields(cal, default_uid)
    except ItemParseError:
        raise
    except Exception as exc:  # a property icalendar could not decode
        raise _bad(f"broken iCalendar: {type(exc).__name__}: {exc}") from exc


def _fields(cal: icalendar.Calendar, default_uid: str) -> ParsedItem:
    master, overrides = _split(cal)
    f = empty_fields("calendar")
    f.update(_common(master))
    if master.get("ORGANIZER") is not None:
        f["organizer"] = list(_address(master["ORGANIZER"]))
    attendees = {}
    for att in _many(master.get("ATTENDEE")):
        address, name = _address(att)
        role = _ROLES.get(str(att.params.get("ROLE", "REQ-PARTICIPANT")).upper(), "required")
        if address:
            attendees[address] = [address, name, role]
    f["attendees"] = [attendees[a] for a in sorted(attendees)]
    rrules = _many(master.get("RRULE"))
    f["rrule"] = rrules[0].to_ical().decode() if rrules else None
    exdates = set()
    for prop in _many(master.get("EXDATE")):
        for item in prop.dts:
            exdates.add(time_to_str(item.dt))
    f["exdates"] = sorted(exdates)
    f["overrides"] = sorted(
        ({"recurrence_id": _time(ev, "RECURRENCE-ID"), **_common(ev)} for ev in overrides),
        key=lambda o: o["recurrence_id"],
    )
    categories: list[str] = []
    for prop in _many(master.get("CATEGORIES")):
        categories.extend(str(c).strip() for c in getattr(prop, "cats", [prop]))
    modified = None
    stamp = master.get("LAST-MODIFIED")
    if stamp is not None and isinstance(stamp.dt, dt.datetime):
        modified = stamp.dt.astimezone(dt.UTC).replace(tzinfo=None) if stamp.dt.tzinfo else stamp.dt
    uid = str(master.get("UID", "")).strip() or default_uid
    if not uid:
        raise _bad("the event has no UID")
    return ParsedItem(uid=uid, fields=f, categories=[c for c in categories if c], modified=modified)


def render(fields: Fields, write: set[str], *, uid: str, existing: bytes | None = None) -> bytes:
    """The user's item (or a new one) with the *write* fields set from *fields*."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    if existing:
        cal = _read(existing)
        master, overrides = _split(cal)
    else:
        cal = icalendar.Calendar()
        cal.add("prodid", PRODID)
        cal.add("version", "2.0")
        master, overrides = _new_event(uid, now), []
        cal.add_component(master)
    for name in write:
        if name != "overrides":
            _set(master, name, fields.get(name))
    if "end" in write:
        master.pop("DURATION", None)
    if "overrides" in write:
        by_id = {_time(ev, "RECURRENCE-ID"): ev for ev in overrides}
        wanted = {o["recurrence_id"]: o for o in fields.get("overrides") or []}
        for rid, ev in by_id.items():
            if rid not in wanted:
                cal.subcomponents.remove(ev)
        for rid, data in wanted.items():
            ev = by_id.get(rid)
            if ev is None:
                ev = _new_event(str(master.get("UID", uid)), now)
                ev.add("recurrence-id", time_from_str(rid))
                cal.add_component(ev)
            for name in ("subject", "start", "end", "location", "status", "body"):
                _set(ev, name, data.get(name))
            ev.pop("DURATION", None)
    if write:
        for ev in [master, *overrides]:
            ev.pop("DTSTAMP", None)
            ev.add("dtstamp", now)
        master.pop("LAST-MODIFIED", None)
        master.add("last-modified", now)
    _add_timezones(cal, master)
    return cal.to_ical()


#: years of DST transitions a VTIMEZONE spells out, from the year before the event starts.
#: icalendar's default (1970-2038) makes every item ~3 kB bigger and several times slower to
#: write and read; clients that know the IANA name (most) do not need it at all.
TZ_YEARS = 12


@functools.lru_cache(maxsize=512)
def _vtimezone(tzid: str, first_year: int) -> icalendar.Timezone | None:
    try:
        return icalendar.Timezone.from_tzid(
            tzid, first_date=dt.date(first_year, 1, 1), last_date=dt.date(first_year + TZ_YEARS, 1, 1)
        )
    except ValueError:
        return None  # not an IANA name: the item keeps whatever VTIMEZONE it came with


def _add_timezones(cal: icalendar.Calendar, master: Any) -> None:
    """The VTIMEZONE of every TZID used (clients such as khal need them), built once per zone and year."""
    missing = cal.get_missing_tzids()
    if not missing:
        return
    start = master.get("DTSTART")
    year = start.dt.year if start is not None else dt.date.today().year
    for tzid in sorted(missing):
        tz = _vtimezone(tzid, max(1971, year - 1))
        if tz is not None:
            cal.subcomponents.insert(0, tz)


def _new_event(uid: str, now: dt.datetime) -> icalendar.Event:
    ev = icalendar.Event()
    ev.add("uid", uid)
    ev.add("dtstamp", now)
    return ev


def _set(ev: Any, name: str, value: Any) -> None:
    prop = _PROPS[name]
    old = ev.get(prop)
    ev.pop(prop, None)
    if value in (None, "", []):
        return
    if name in ("start", "end"):
        ev.add(prop, time_from_str(value))
    elif name == "status":
        ev.add(prop, str(value).upper())
    elif name == "organizer":
        address, cn = value
        org = icalendar.vCalAddress(f"mailto:{address}")
        if cn:
            org.params["CN"] = cn
        ev.add(prop, org)
    elif name == "attendees":
        previous = {_address(a)[0]: a for a in _many(old)}
        for address, cn, role in value:
            att = icalendar.vCalAddress(f"mailto:{address}")
            before = previous.get(address)
            if before is not None:
                att.params.update(before.params)  # PARTSTAT, RSVP ... as the client left them
            att.params.pop("CN", None)
            if cn:
                att.params["CN"] = cn
            att.params["ROLE"] = "OPT-PARTICIPANT" if role == "optional" else "REQ-PARTICIPANT"
            ev.add(prop, att)
    elif name == "rrule":
        ev.add(prop, icalendar.vRecur.from_ical(value))
    elif name == "exdates":
        for item in value:
            ev.add(prop, time_from_str(item))
    else:
        ev.add(prop, value)
