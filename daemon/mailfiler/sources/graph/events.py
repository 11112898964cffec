"""Graph's event JSON to iCalendar and back (icalendar, python-dateutil).

One iCalendar item is one Graph event: a single instance, or a series
master with its ``recurrence`` (pattern + range <-> RRULE), the occurrences
Outlook changed (``exception`` instances <-> VEVENTs with a RECURRENCE-ID)
and the ones it cancelled (missing instances <-> EXDATE).  Occurrences are
compared only inside the target's window, the span Graph expands them over.

Times: Graph answers in UTC and names the event's own zone in
``originalStartTimeZone`` (a Windows name, or an IANA one); items are
written with IANA zone names, which Graph accepts.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import icalendar
from dateutil import rrule as du  # type: ignore[import-untyped]

from mailfiler.errors import SyncError
from mailfiler.sources.graph.targets import digest

PRODID = "-//mailfiler//graph sync-back//EN"
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
ICAL_DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
INDEX = {1: "first", 2: "second", 3: "third", 4: "fourth", -1: "last"}
#: the Windows zone names Outlook uses most, as IANA names (CLDR's windowsZones, territory 001)
WINDOWS_ZONES = {
    "UTC": "UTC", "GMT Standard Time": "Europe/London", "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris", "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw", "FLE Standard Time": "Europe/Kiev",
    "E. Europe Standard Time": "Europe/Chisinau", "Russian Standard Time": "Europe/Moscow",
    "Eastern Standard Time": "America/New_York", "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver", "Pacific Standard Time": "America/Los_Angeles",
    "India Standard Time": "Asia/Kolkata", "China Standard Time": "Asia/Shanghai",
    "Tokyo Standard Time": "Asia/Tokyo", "AUS Eastern Standard Time": "Australia/Sydney",
}  # fmt: skip


def zone(name: str | None) -> dt.tzinfo:
    name = WINDOWS_ZONES.get(name or "UTC", name or "UTC")
    if name == "UTC":
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def instant(value: dict[str, Any] | None) -> dt.datetime | None:
    """A Graph ``dateTimeTimeZone`` as an aware UTC datetime."""
    if not isinstance(value, dict) or not value.get("dateTime"):
        return None
    text = str(value["dateTime"]).replace("Z", "")[:19]
    local = dt.datetime.fromisoformat(text)
    return local.replace(tzinfo=zone(value.get("timeZone"))).astimezone(dt.UTC)


def stamp(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else ""


def utc_of(text: str | None) -> dt.datetime | None:
    """Graph's ``originalStart`` (``2024-01-02T09:00:00Z``, maybe with fractions) as aware UTC."""
    if not text:
        return None
    return dt.datetime.fromisoformat(str(text).replace("Z", "")[:19]).replace(tzinfo=dt.UTC)


def _tzname(value: dt.datetime) -> str:
    key = getattr(value.tzinfo, "key", None)
    return key if key else "UTC"


def graph_time(value: dt.date | dt.datetime) -> dict[str, str]:
    if not isinstance(value, dt.datetime):
        return {"dateTime": f"{value.isoformat()}T00:00:00", "timeZone": "UTC"}
    if value.tzinfo is None:
        return {"dateTime": value.replace(microsecond=0).isoformat(), "timeZone": "UTC"}
    name = _tzname(value)
    local = value if name != "UTC" else value.astimezone(dt.UTC)
    return {"dateTime": local.replace(tzinfo=None, microsecond=0).isoformat(), "timeZone": name}


def _aware(value: dt.date | dt.datetime) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# -- recurrence -------------------------------------------------------------------------


def recurrence_of(rule: icalendar.vRecur, start: dt.date | dt.datetime) -> dict[str, Any]:
    """An RRULE as Graph's recurrence (pattern + range); SyncError for what Graph cannot say."""
    parts = {k.upper(): v for k, v in rule.items()}
    freq = str(parts.pop("FREQ", [""])[0]).upper()
    interval = int(parts.pop("INTERVAL", [1])[0])
    byday = [str(d).upper() for d in parts.pop("BYDAY", [])]
    bymonthday = [int(d) for d in parts.pop("BYMONTHDAY", [])]
    bymonth = [int(m) for m in parts.pop("BYMONTH", [])]
    setpos = [int(p) for p in parts.pop("BYSETPOS", [])]
    wkst = str(parts.pop("WKST", ["MO"])[0]).upper()
    until, count = parts.pop("UNTIL", [None])[0], parts.pop("COUNT", [None])[0]
    if parts:
        raise SyncError(f"Outlook cannot repeat an event by {', '.join(sorted(parts))}")
    local = start if isinstance(start, dt.datetime) else dt.datetime(start.year, start.month, start.day)
    pattern: dict[str, Any] = {"type": "", "interval": interval}

    def days_and_index() -> tuple[list[str], int | None]:
        days, index = [], setpos[0] if len(setpos) == 1 else None
        for d in byday:
            m = re.fullmatch(r"([+-]?\d)?(MO|TU|WE|TH|FR|SA|SU)", d)
            if m is None:
                raise SyncError(f"Outlook cannot repeat an event on {d}")
            days.append(DAYS[ICAL_DAYS.index(m.group(2))])
            index = int(m.group(1)) if m.group(1) else index
        return days, index

    if freq == "DAILY" and not (byday or bymonthday or bymonth):
        pattern["type"] = "daily"
    elif freq == "WEEKLY" and not (bymonthday or bymonth):
        days, _ = days_and_index()
        pattern.update(
            type="weekly", daysOfWeek=days or [DAYS[local.weekday()]], firstDayOfWeek=DAYS[ICAL_DAYS.index(wkst)]
        )
    elif freq in ("MONTHLY", "YEARLY") and byday:
        days, index = days_and_index()
        if index not in INDEX:
            raise SyncError("Outlook repeats on a weekday of the month only as the first to fourth or the last")
        pattern.update(
            type="relativeMonthly" if freq == "MONTHLY" else "relativeYearly", daysOfWeek=days, index=INDEX[index]
        )
        if freq == "YEARLY":
            pattern["month"] = bymonth[0] if bymonth else local.month
    elif freq == "MONTHLY" and len(bymonthday) <= 1 and not bymonth:
        pattern.update(type="absoluteMonthly", dayOfMonth=bymonthday[0] if bymonthday else local.day)
    elif freq == "YEARLY" and len(bymonthday) <= 1 and len(bymonth) <= 1:
        pattern.update(type="absoluteYearly", dayOfMonth=bymonthday[0] if bymonthday else local.day,
                       month=bymonth[0] if bymonth else local.month)  # fmt: skip
    else:
        raise SyncError(f"Outlook cannot repeat an event as {rule.to_ical().decode()}")
    tz = _tzname(local) if local.tzinfo is not None else "UTC"
    rng: dict[str, Any] = {"type": "noEnd", "startDate": local.date().isoformat(), "recurrenceTimeZone": tz}
    if count is not None:
        rng.update(type="numbered", numberOfOccurrences=int(count))
    elif until is not None:
        end = until.astimezone(local.tzinfo) if isinstance(until, dt.datetime) and local.tzinfo else until
        rng.update(type="endDate", endDate=(end.date() if isinstance(end, dt.datetime) else end).isoformat())
    return {"pattern": pattern, "range": rng}


def normal_recurrence(rec: Any) -> Any:
    """Only what a pattern of its type means (Graph fills the others with defaults)."""
    if not isinstance(rec, dict):
        return None
    p, r = rec.get("pattern") or {}, rec.get("range") or {}
    kind = p.get("type")
    keep = {"daily": (), "weekly": ("daysOfWeek", "firstDayOfWeek"), "absoluteMonthly": ("dayOfMonth",),
            "relativeMonthly": ("daysOfWeek", "index"), "absoluteYearly": ("dayOfMonth", "month"),
            "relativeYearly": ("daysOfWeek", "index", "month")}.get(str(kind), ())  # fmt: skip
    pattern = {"type": kind, "interval": int(p.get("interval") or 1)}
    for key in keep:
        value = p.get(key)
        pattern[key] = sorted(str(v).lower() for v in value) if isinstance(value, list) else value
    rng = {"type": r.get("type"), "startDate": r.get("startDate")}
    if r.get("type") == "endDate":
        rng["endDate"] = r.get("endDate")
    if r.get("type") == "numbered":
        rng["numberOfOccurrences"] = int(r.get("numberOfOccurrences") or 0)
    return {"pattern": pattern, "range": rng}


def rrule_of(rec: dict[str, Any], tz: dt.tzinfo) -> str:
    """Graph's recurrence as an RRULE value."""
    p, r = rec.get("pattern") or {}, rec.get("range") or {}
    kind = p.get("type")
    freq = {"daily": "DAILY", "weekly": "WEEKLY", "absoluteMonthly": "MONTHLY", "relativeMonthly": "MONTHLY",
            "absoluteYearly": "YEARLY", "relativeYearly": "YEARLY"}.get(str(kind))  # fmt: skip
    if freq is None:
        raise SyncError(f"an unknown recurrence pattern {kind!r}")
    parts = [f"FREQ={freq}"]
    if int(p.get("interval") or 1) != 1:
        parts.append(f"INTERVAL={int(p['interval'])}")
    days = [ICAL_DAYS[DAYS.index(str(d).lower())] for d in p.get("daysOfWeek") or []]
    if kind == "weekly":
        parts.append("BYDAY=" + ",".join(days))
        if (p.get("firstDayOfWeek") or "sunday").lower() != "monday" and int(p.get("interval") or 1) > 1:
            parts.append("WKST=" + ICAL_DAYS[DAYS.index(p["firstDayOfWeek"].lower())])
    if kind in ("relativeMonthly", "relativeYearly"):
        index = {v: k for k, v in INDEX.items()}[p.get("index") or "first"]
        parts.append("BYDAY=" + ",".join(days))
        parts.append(f"BYSETPOS={index}")
    if kind in ("absoluteYearly", "relativeYearly"):
        parts.append(f"BYMONTH={int(p.get('month') or 1)}")
    if kind in ("absoluteMonthly", "absoluteYearly"):
        parts.append(f"BYMONTHDAY={int(p.get('dayOfMonth') or 1)}")
    if r.get("type") == "numbered":
        parts.append(f"COUNT={int(r.get('numberOfOccurrences') or 1)}")
    elif r.get("type") == "endDate" and r.get("endDate"):
        last = dt.date.fromisoformat(r["endDate"])
        parts.append(
            "UNTIL="
            + dt.datetime(last.year, last.month, last.day, 23, 59, 59, tzinfo=tz)
            .astimezone(dt.UTC)
            .strftime("%Y%m%dT%H%M%SZ")
        )
    return ";".join(parts)


def expected(rec: dict[str, Any], first: dt.datetime, window: tuple[dt.datetime, dt.datetime]) -> list[dt.datetime]:
    """The original starts (UTC) of a series' occurrences inside the window; *first* is the
    series' start, aware in its own zone."""
    tz = first.tzinfo or dt.UTC
    text = rrule_of(rec, tz)
    rule = du.rrulestr(text, dtstart=first)
    return [o.astimezone(dt.UTC) for o in rule.between(window[0], window[1], inc=True) if o < window[1]]


# -- what an item holds, as compared -----------------------------------------------------


def _text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    content = str(body.get("content") or "")
    if str(body.get("contentType", "text")).lower() == "html":
        content = html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"(?is)<(script|style|head).*?</\1>", "", content)))
        content = re.sub(r"[ \t]+", " ", content)
    return content.strip()


def _location(item: dict[str, Any]) -> str:
    loc = item.get("location")
    return str(loc.get("displayName") or "").strip() if isinstance(loc, dict) else ""


def main_sig(item: dict[str, Any]) -> list[Any]:
    return [str(item.get("subject") or "").strip(), _text(item.get("body")), _location(item),
            stamp(instant(item.get("start"))), stamp(instant(item.get("end"))), bool(item.get("isAllDay"))]  # fmt: skip


def attendees_sig(item: dict[str, Any]) -> list[Any]:
    out = []
    for a in item.get("attendees") or []:
        address = str(((a or {}).get("emailAddress") or {}).get("address") or "").lower()
        if address:
            out.append([address, str(a.get("type") or "required").lower()])
    return sorted(out)


def occurrence_sig(exceptions: list[dict[str, Any]], cancelled: list[dt.datetime]) -> str:
    """The changed and cancelled occurrences, as compared (each exception as main_sig)."""
    rows = sorted([stamp(utc_of(e.get("originalStart"))), *main_sig(e)] for e in exceptions)
    return digest([rows, sorted(stamp(c) for c in cancelled)])


def sigs(item: dict[str, Any], occurrences: str) -> dict[str, str]:
    return {
        "categories": digest(sorted(str(c).strip() for c in item.get("categories") or [])),
        "main": digest(main_sig(item)),
        "attendees": digest(attendees_sig(item)),
        "recurrence": digest(normal_recurrence(item.get("recurrence"))),
        "occurrences": occurrences,
    }


# -- iCalendar -> Graph ------------------------------------------------------------------


class Written:
    """An iCalendar item as Graph writes it: the master's body, and per original start
    (a UTC stamp) the changed occurrences' bodies and the cancelled ones."""

    def __init__(self, data: bytes) -> None:
        try:
            cal = icalendar.Calendar.from_ical(data.decode("utf-8", errors="replace"))
        except Exception as exc:  # icalendar raises several types on broken input
            raise SyncError(f"not a readable iCalendar item: {exc}") from exc
        events: list[Any] = list(cal.walk("VEVENT"))
        masters = [e for e in events if "RECURRENCE-ID" not in e]
        if not masters:
            raise SyncError("the item holds no event")
        master: Any = masters[0]
        self.uid = str(master.get("UID", "")).strip() or None
        self.body = event_body(master)
        cats: list[str] = []
        props = master.get("CATEGORIES")
        for prop in props if isinstance(props, list) else [props] if props is not None else []:
            cats.extend(str(c).strip() for c in getattr(prop, "cats", [prop]) if str(c).strip())
        self.body["categories"] = list(dict.fromkeys(cats))
        start = master["DTSTART"].dt
        self.first = _aware(start).astimezone(start.tzinfo) if isinstance(start, dt.datetime) else _aware(start)
        rules = master.get("RRULE")
        rule = rules[0] if isinstance(rules, list) else rules
        self.body["recurrence"] = recurrence_of(rule, start) if rule is not None else None
        self.overrides = {
            stamp(_aware(ev["RECURRENCE-ID"].dt)): event_body(ev) for ev in events if "RECURRENCE-ID" in ev
        }
        self.exdates: set[str] = set()
        exdates = master.get("EXDATE")
        for prop in exdates if isinstance(exdates, list) else [exdates] if exdates is not None else []:
            self.exdates.update(stamp(_aware(d.dt)) for d in prop.dts)

    def occurrences(self, window: tuple[dt.datetime, dt.datetime]) -> str:
        """occurrence_sig as Graph will show this item once written."""
        rec = self.body.get("recurrence")
        if not rec:
            return ""
        present = {stamp(o) for o in expected(rec, self.first, window)}
        exceptions = [{"originalStart": rid, **b} for rid, b in self.overrides.items() if rid in present]
        cancelled = [utc_of(x) for x in self.exdates if x in present]
        return occurrence_sig(exceptions, [c for c in cancelled if c is not None])


def event_body(ev: Any) -> dict[str, Any]:
    start = ev["DTSTART"].dt if ev.get("DTSTART") is not None else None
    if start is None:
        raise SyncError("an event has no DTSTART")
    if ev.get("DTEND") is not None:
        end = ev["DTEND"].dt
    elif ev.get("DURATION") is not None:
        end = start + ev["DURATION"].dt
    else:
        end = start + dt.timedelta(days=1) if not isinstance(start, dt.datetime) else start
    return {
        "subject": str(ev.get("SUMMARY", "")).strip(),
        "body": {"contentType": "text", "content": str(ev.get("DESCRIPTION", "")).strip()},
        "location": {"displayName": str(ev.get("LOCATION", "")).strip()},
        "start": graph_time(start),
        "end": graph_time(end),
        "isAllDay": not isinstance(start, dt.datetime),
    }


# -- Graph -> iCalendar ------------------------------------------------------------------


class Shown:
    """A Graph event (a master with its instances in the window) as the target reads it."""

    def __init__(
        self, master: dict[str, Any], instances: list[dict[str, Any]], window: tuple[dt.datetime, dt.datetime]
    ):
        self.master, self.window = master, window
        self.tz = zone(master.get("originalStartTimeZone") or (master.get("start") or {}).get("timeZone"))
        self.all_day = bool(master.get("isAllDay"))
        rec = master.get("recurrence")
        self.rec = rec if isinstance(rec, dict) and master.get("type") == "seriesMaster" else None
        self.exceptions: list[dict[str, Any]] = []
        self.cancelled: list[dt.datetime] = []
        if self.rec:
            first = instant(master.get("start"))
            assert first is not None
            self.first = first.astimezone(self.tz) if not self.all_day else first
            inside = [i for i in instances if (o := utc_of(i.get("originalStart"))) and window[0] <= o < window[1]]
            self.exceptions = [i for i in inside if i.get("type") == "exception"]
            present = {stamp(utc_of(i.get("originalStart"))) for i in instances}
            self.cancelled = [o for o in expected(self.rec, self.first, window) if stamp(o) not in present]

    def occurrences(self) -> str:
        return occurrence_sig(self.exceptions, self.cancelled) if self.rec else ""

    def local(self, value: dict[str, Any] | None) -> dt.date | dt.datetime:
        when = instant(value)
        assert when is not None
        return when.date() if self.all_day else when.astimezone(self.tz)

    def render(self, uid: str, text: str | None, old: dict[str, str]) -> bytes:
        """The item: *text* (what we wrote) with the groups whose digest moved from *old* rewritten."""
        cal = None
        if text is not None:
            try:
                cal = icalendar.Calendar.from_ical(text)
            except Exception:  # noqa: BLE001 - our own text no longer reads (icalendar raises many types): start afresh
                cal = None
        if cal is None or not [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" not in e]:
            cal = icalendar.Calendar()
            cal.add("prodid", PRODID)
            cal.add("version", "2.0")
            ev = icalendar.Event()
            ev.add("uid", uid)
            cal.add_component(ev)
            old = {}
        master = next(e for e in cal.walk("VEVENT") if "RECURRENCE-ID" not in e)
        now = sigs(self.master, self.occurrences())
        if old.get("main") != now["main"]:
            self._main(master, self.master)
            status = "CANCELLED" if self.master.get("isCancelled") else None
            master.pop("STATUS", None)
            if status:
                master.add("status", status)
        if old.get("categories") != now["categories"]:
            master.pop("CATEGORIES", None)
            cats = [str(c).strip() for c in self.master.get("categories") or [] if str(c).strip()]
            if cats:
                master.add("categories", cats)
        if old.get("attendees") != now["attendees"]:
            self._attendees(master)
        if old.get("recurrence") != now["recurrence"]:
            master.pop("RRULE", None)
            if self.rec:
                master.add("rrule", icalendar.vRecur.from_ical(rrule_of(self.rec, self.tz)))
        if old.get("occurrences") != now["occurrences"]:
            self._occurrences(cal, master)
        modified = utc_of(self.master.get("lastModifiedDateTime"))
        if modified is not None:
            master.pop("LAST-MODIFIED", None)
            master.add("last-modified", modified)
        if "DTSTAMP" not in master:
            master.add("dtstamp", modified or dt.datetime.now(dt.UTC).replace(microsecond=0))
        return bytes(cal.to_ical())

    def _main(self, ev: Any, item: dict[str, Any]) -> None:
        for prop in ("SUMMARY", "DESCRIPTION", "LOCATION", "DTSTART", "DTEND", "DURATION"):
            ev.pop(prop, None)
        if str(item.get("subject") or "").strip():
            ev.add("summary", str(item["subject"]).strip())
        if _text(item.get("body")):
            ev.add("description", _text(item.get("body")))
        if _location(item):
            ev.add("location", _location(item))
        ev.add("dtstart", self.local(item.get("start")))
        ev.add("dtend", self.local(item.get("end")))

    def _attendees(self, ev: Any) -> None:
        ev.pop("ORGANIZER", None)
        ev.pop("ATTENDEE", None)
        org = ((self.master.get("organizer") or {}).get("emailAddress")) or {}
        if org.get("address"):
            prop = icalendar.vCalAddress(f"mailto:{org['address']}")
            if org.get("name"):
                prop.params["CN"] = org["name"]
            ev.add("organizer", prop)
        for a in self.master.get("attendees") or []:
            email = (a or {}).get("emailAddress") or {}
            if not email.get("address"):
                continue
            prop = icalendar.vCalAddress(f"mailto:{email['address']}")
            if email.get("name"):
                prop.params["CN"] = email["name"]
            prop.params["ROLE"] = "OPT-PARTICIPANT" if a.get("type") == "optional" else "REQ-PARTICIPANT"
            ev.add("attendee", prop)

    def _occurrences(self, cal: Any, master: Any) -> None:
        """Changed and cancelled occurrences inside the window from Graph; those outside it stay."""
        lo, hi = self.window

        def inside(value: Any) -> bool:
            return lo <= _aware(value).astimezone(dt.UTC) < hi

        for ev in [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" in e]:
            if inside(ev["RECURRENCE-ID"].dt):
                cal.subcomponents.remove(ev)
        exdates = master.get("EXDATE")
        kept = [d.dt for p in (exdates if isinstance(exdates, list) else [exdates] if exdates else []) for d in p.dts]
        master.pop("EXDATE", None)
        uid = str(master.get("UID", ""))
        for value in [d for d in kept if not inside(d)]:
            master.add("exdate", value)
        for cancelled in self.cancelled:
            master.add("exdate", cancelled.date() if self.all_day else cancelled.astimezone(self.tz))
        for exc in self.exceptions:
            ev = icalendar.Event()
            ev.add("uid", uid)
            original = utc_of(exc.get("originalStart"))
            assert original is not None
            ev.add("recurrence-id", original.date() if self.all_day else original.astimezone(self.tz))
            ev.add("dtstamp", dt.datetime.now(dt.UTC).replace(microsecond=0))
            self._main(ev, exc)
            cal.add_component(ev)
