"""The mailbox's Exchange calendar as a sync target: iCalendar <-> EWS CalendarItem.

What Exchange holds of an event: the summary, start and end (a time zone
each, by its Windows name; all day as dates), location, description,
categories, required and optional attendees, the recurrence rule (daily,
weekly, monthly by day or by weekday, yearly; ended by a date, a count or
never; ``recurrence.py``) and its changed and cancelled occurrences
(``occurrences.py``).  The organizer and everything else stay in the kept
copy (see ``target.py``).  Writes never mail attendees (SendToNone)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import icalendar
from exchangelib import CalendarItem, EWSDate, EWSDateTime, EWSTimeZone
from exchangelib.errors import UnknownTimeZone
from exchangelib.items import AUTO_RESOLVE
from exchangelib.properties import Attendee, ItemId, Mailbox

from mailfiler.sources.ews import occurrences
from mailfiler.sources.ews.recurrence import from_rrule, to_rrule
from mailfiler.sources.ews.settings import EwsSettings
from mailfiler.sources.ews.target import EwsItemTarget, canon, plain_utc

PRODID = "-//mailfiler//sync-back ews//EN"
#: Exchange field -> the VEVENT properties it is written to
_PROPS = {
    "subject": ("SUMMARY",),
    "start": ("DTSTART",),
    "end": ("DTEND", "DURATION"),
    "is_all_day": ("DTSTART", "DTEND", "DURATION"),
    "location": ("LOCATION",),
    "body": ("DESCRIPTION",),
    "categories": ("CATEGORIES",),
    "required_attendees": ("ATTENDEE",),
    "optional_attendees": ("ATTENDEE",),
    "recurrence": ("RRULE",),
}
_OPTIONAL = {"OPT-PARTICIPANT", "NON-PARTICIPANT"}
#: what a changed occurrence holds (the rest is the master's)
_OCCURRENCE_FIELDS = ("subject", "start", "end", "location", "body")


def read_calendar(data: bytes) -> tuple[Any, Any]:
    """The calendar and its master VEVENT."""
    try:
        cal = icalendar.Calendar.from_ical(data.decode("utf-8", "replace"))
    except Exception as exc:  # icalendar raises several types on broken input
        raise ValueError(f"broken iCalendar: {exc}") from exc
    masters = [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" not in e]
    if not masters:
        raise ValueError("the item holds no master VEVENT")
    return cal, masters[0]


def _zone(value: dt.datetime) -> EWSTimeZone:
    tz = value.tzinfo
    key = getattr(tz, "key", None) or getattr(tz, "zone", None)
    if key:
        try:
            return EWSTimeZone(key)
        except (UnknownTimeZone, ValueError):  # a zone exchangelib cannot map to a Windows name
            pass
    return EWSTimeZone("UTC")


def _ews_time(value: dt.date | dt.datetime) -> EWSDate | EWSDateTime:
    if not isinstance(value, dt.datetime):
        return EWSDate(value.year, value.month, value.day)
    if value.tzinfo is None:  # a floating time: read as UTC (the kept copy keeps it floating)
        value = value.replace(tzinfo=dt.UTC)
    zone = _zone(value)
    local = value.astimezone(zone)
    return EWSDateTime(local.year, local.month, local.day, local.hour, local.minute, local.second, tzinfo=zone)


def _address(value: Any) -> tuple[str, str]:
    text = str(value).strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    return text.strip(), str(getattr(value, "params", {}).get("CN", "")).strip()


def event_values(data: bytes) -> dict[str, Any]:
    """exchangelib CalendarItem fields for an iCalendar item."""
    cal, ev = read_calendar(data)
    values: dict[str, Any] = {name: None for name in CalendarTarget.fields}
    start_prop = ev.get("DTSTART")
    if start_prop is None:
        raise ValueError("the event has no DTSTART")
    start = start_prop.dt
    if ev.get("DTEND") is not None:
        end = ev["DTEND"].dt
    elif ev.get("DURATION") is not None:
        end = start + ev["DURATION"].dt
    else:
        end = start if isinstance(start, dt.datetime) else start + dt.timedelta(days=1)
    all_day = not isinstance(start, dt.datetime)
    values["is_all_day"] = all_day
    values["start"], values["end"] = _ews_time(start), _ews_time(end)
    values["uid"] = str(ev.get("UID", "")).strip() or None
    values["subject"] = str(ev.get("SUMMARY", "")).strip() or None
    values["location"] = str(ev.get("LOCATION", "")).strip() or None
    values["body"] = str(ev.get("DESCRIPTION", "")).strip() or None
    categories = [str(c).strip() for prop in _as_list(ev.get("CATEGORIES")) for c in getattr(prop, "cats", [prop])]
    values["categories"] = [c for c in categories if c] or None  # Outlook's categories (a user marks "Tracked")
    required: list[Attendee] = []
    optional: list[Attendee] = []
    for att in _as_list(ev.get("ATTENDEE")):
        address, name = _address(att)
        if address:
            who = Attendee(mailbox=Mailbox(email_address=address, name=name or None), response_type="Unknown")
            (optional if str(att.params.get("ROLE", "")).upper() in _OPTIONAL else required).append(who)
    values["required_attendees"] = required or None
    values["optional_attendees"] = optional or None
    rules = _as_list(ev.get("RRULE"))
    values["recurrence"] = from_rrule(rules[0], start) if rules else None
    values["_deleted"], values["_overrides"] = {}, {}
    if values["recurrence"] is not None and not all_day:
        deleted, overrides = occurrences.exceptions(cal, ev)
        values["_deleted"] = deleted
        values["_overrides"] = {i: _override(o, end - start) for i, o in overrides.items()}
    return values


def _override(ev: Any, length: dt.timedelta) -> dict[str, Any]:
    """A RECURRENCE-ID VEVENT as the fields of a changed occurrence."""
    start = ev["DTSTART"].dt if ev.get("DTSTART") is not None else ev["RECURRENCE-ID"].dt
    end = ev["DTEND"].dt if ev.get("DTEND") is not None else start + length
    return {
        "original": ev["RECURRENCE-ID"].dt,
        "subject": str(ev.get("SUMMARY", "")).strip() or None,
        "start": _ews_time(start),
        "end": _ews_time(end),
        "location": str(ev.get("LOCATION", "")).strip() or None,
        "body": str(ev.get("DESCRIPTION", "")).strip() or None,
    }


def _key(o: dict[str, Any]) -> tuple[Any, ...]:
    return occurrences.override_key(o["original"], o["subject"], o["start"], o["end"], o["location"], o["body"])


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _ical_time(value: Any, zone: Any, all_day: bool) -> dt.date | dt.datetime:
    if isinstance(value, dt.datetime):
        value = plain_utc(value) if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        value = value.astimezone(zone if zone is not None else dt.UTC)
    if all_day or not isinstance(value, dt.datetime):
        return dt.date(value.year, value.month, value.day)
    return value


def _kept_zone(ev: Any | None, ms_id: str | None) -> Any:
    """The kept copy's zone when it is the one Exchange has (Europe/Stockholm, not the
    Europe/Berlin exchangelib names "W. Europe Standard Time" by); else Exchange's."""
    if ev is not None and ev.get("DTSTART") is not None:
        kept = ev["DTSTART"].dt
        if isinstance(kept, dt.datetime) and kept.tzinfo is not None and _zone(kept).ms_id == ms_id:
            return kept.tzinfo
    if ms_id is None:
        return None
    try:
        return EWSTimeZone.from_ms_id(ms_id)
    except (UnknownTimeZone, ValueError):  # a Windows zone exchangelib does not know: UTC
        return dt.UTC


def render_event(
    values: dict[str, Any], kept: bytes | None, uid: str, changed: set[str], zones: tuple[str | None, str | None]
) -> bytes:
    """An iCalendar item of an event's Exchange fields: the kept copy with the properties of
    the *changed* fields replaced in its master event (the rest, overrides too, stays)."""
    if kept is not None:
        cal, ev = read_calendar(kept)
    else:
        cal, ev = icalendar.Calendar(), icalendar.Event()
        cal.add("prodid", PRODID)
        cal.add("version", "2.0")
        ev.add("uid", uid)
        ev.add("dtstamp", dt.datetime.now(dt.UTC).replace(microsecond=0))
        cal.add_component(ev)
    old = ev.copy() if kept is not None else None
    props = {prop for name in changed for prop in _PROPS.get(name, ())}
    for name in props:
        while name in ev:
            del ev[name]
    all_day = bool(values.get("is_all_day"))
    if "DTSTART" in props and values.get("start") is not None:
        ev.add("dtstart", _ical_time(values["start"], _kept_zone(old, zones[0]), all_day))
    if "DTEND" in props and values.get("end") is not None:
        ev.add("dtend", _ical_time(values["end"], _kept_zone(old, zones[1]), all_day))
    for prop, name in (("SUMMARY", "subject"), ("LOCATION", "location"), ("DESCRIPTION", "body")):
        if prop in props and values.get(name):
            ev.add(prop, str(values[name]))
    if "CATEGORIES" in props and values.get("categories"):
        ev.add("categories", list(values["categories"]))
    for role, key in (("REQ-PARTICIPANT", "required_attendees"), ("OPT-PARTICIPANT", "optional_attendees")):
        for who in (values.get(key) or []) if "ATTENDEE" in props else []:
            params = {"ROLE": role}
            if who.mailbox.name:
                params["CN"] = who.mailbox.name
            ev.add("attendee", f"mailto:{who.mailbox.email_address}", parameters=params)
    if "RRULE" in props and values.get("recurrence") is not None:
        rule = to_rrule(values["recurrence"], all_day=all_day)
        if rule is not None:
            ev.add("rrule", icalendar.vRecur.from_ical(rule))
    zone = _kept_zone(old, zones[0])
    if "exdates" in changed:
        while "EXDATE" in ev:
            del ev["EXDATE"]
        gone = sorted(values.get("_deleted", {}).values(), key=occurrences.instant)
        if gone:
            ev.add("exdate", [_ical_time(t, zone, False) for t in gone])
    if "overrides" in changed:
        _replace_overrides(cal, values.get("_overrides", {}), uid, zone)
    return cal.to_ical()


def _replace_overrides(cal: Any, overrides: dict[Any, dict[str, Any]], uid: str, zone: Any) -> None:
    for comp in [c for c in cal.subcomponents if c.name == "VEVENT" and "RECURRENCE-ID" in c]:
        cal.subcomponents.remove(comp)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for o in sorted(overrides.values(), key=lambda o: occurrences.instant(o["original"])):
        one = icalendar.Event()
        one.add("uid", uid)
        one.add("dtstamp", now)
        one.add("recurrence-id", _ical_time(o["original"], zone, False))
        one.add("dtstart", _ical_time(o["start"], zone, False))
        if o.get("end") is not None:
            one.add("dtend", _ical_time(o["end"], zone, False))
        for prop, name in (("summary", "subject"), ("location", "location"), ("description", "body")):
            if o.get(name):
                one.add(prop, str(o[name]))
        cal.add_component(one)


class CalendarTarget(EwsItemTarget):
    """The mailbox's Calendar (or a calendar of that name below it)."""

    item_cls = CalendarItem
    fields = (
        "subject",
        "start",
        "end",
        "is_all_day",
        "location",
        "body",
        "categories",
        "required_attendees",
        "optional_attendees",
        "recurrence",
    )
    distinguished = "calendar"
    folder_class = "IPF.Appointment"

    def __init__(self, settings: EwsSettings, folder: str | None = None) -> None:
        super().__init__("calendar", settings, folder)
        #: master id -> (occurrence, its fields) of its changed occurrences, from ``_fetch``
        self._occurrences: dict[str, list[tuple[Any, Any]]] = {}

    def uid_of(self, data: bytes) -> str:
        _, ev = read_calendar(data)
        uid = str(ev.get("UID", "")).strip()
        if not uid:
            raise ValueError("the event has no UID")
        return uid

    def to_values(self, data: bytes) -> dict[str, Any]:
        return event_values(data)

    def snapshot(self, values: dict[str, Any]) -> dict[str, Any]:
        out = super().snapshot(values)
        if not values.get("is_all_day"):  # a time is its instant and its zone (by Windows name)
            for key in ("start", "end"):
                out[key] = (out[key], _ms_id(values.get(key)))
        out["exdates"] = tuple(sorted(occurrences.instant(t) for t in values.get("_deleted", {}).values()))
        out["overrides"] = tuple(sorted(_key(o) for o in values.get("_overrides", {}).values()))
        return out

    def read_values(self, item: Any) -> dict[str, Any]:
        values = super().read_values(item)
        if item.is_all_day:  # exchangelib answers midnight instants in the item's zone
            for key, zone in (("start", _zone_of(item, "start")), ("end", _zone_of(item, "end"))):
                if isinstance(values[key], dt.datetime):
                    local = values[key].astimezone(zone) if zone is not None else values[key]
                    values[key] = EWSDate(local.year, local.month, local.day)
        else:
            for key, zone in (("start", _zone_of(item, "start")), ("end", _zone_of(item, "end"))):
                if isinstance(values[key], dt.datetime) and zone is not None:
                    values[key] = values[key].astimezone(zone)
        values["_deleted"], values["_overrides"] = {}, {}
        if not item.is_all_day:
            values["_deleted"] = {n: d.start for n, d in enumerate(item.deleted_occurrences or [])}
            for n, (occ, got) in enumerate(self._occurrences.pop(item.id, [])):
                fields = {name: getattr(got, name, None) for name in _OCCURRENCE_FIELDS}
                values["_overrides"][n] = {"original": occ.original_start, **fields}
        return values

    # -- exceptions: one request per changed or deleted occurrence, after the master's write --
    def _fetch(self, ids: list[str]) -> list[Any]:
        items = super()._fetch(ids)
        wanted = [(i, o) for i in items if not isinstance(i, Exception) for o in (i.modified_occurrences or [])]
        if wanted:
            account = self.client.account
            got = list(account.fetch([ItemId(o.id) for _, o in wanted], only_fields=list(_OCCURRENCE_FIELDS)))
            for (item, occ), one in zip(wanted, got, strict=True):
                if not isinstance(one, Exception):
                    self._occurrences.setdefault(item.id, []).append((occ, one))
        return items

    def split(self, values: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        return values, (values.pop("_deleted", {}), values.pop("_overrides", {}))

    async def after_write(self, item_id: str, key: str, later: Any) -> str:
        """Delete and change the occurrences, one request each; the master's ChangeKey after
        them.  The master was written a moment before with NeverOverwrite (which also dropped
        its old exceptions: its Recurrence was set), so these follow it with AutoResolve."""
        deleted, overrides = later or ({}, {})
        if not deleted and not overrides:
            return key
        for index in sorted(deleted):
            await self._run(self._delete_occurrence, item_id, key, index)
        for index, fields in sorted(overrides.items()):
            await self._run(self._change_occurrence, item_id, key, index, fields)
        return str(await self._run(self._changekey, item_id))

    def _delete_occurrence(self, item_id: str, key: str, index: int) -> None:
        CalendarItem(account=self.client.account, id=item_id, changekey=key).occurrence(index).delete()

    def _change_occurrence(self, item_id: str, key: str, index: int, fields: dict[str, Any]) -> None:
        occ = CalendarItem(account=self.client.account, id=item_id, changekey=key).occurrence(index)
        for name in _OCCURRENCE_FIELDS:
            setattr(occ, name, fields[name])
        occ.save(update_fields=list(_OCCURRENCE_FIELDS), conflict_resolution=AUTO_RESOLVE)

    def _changekey(self, item_id: str) -> str:
        [fresh] = list(self.client.account.fetch([ItemId(item_id)], only_fields=["changekey"]))
        if isinstance(fresh, Exception):
            raise fresh
        return str(fresh.changekey)

    def render(self, values: dict[str, Any], kept: bytes | None, uid: str, changed: set[str]) -> bytes:
        zones = (_ms_id(values.get("start")), _ms_id(values.get("end")))
        return render_event(values, kept, uid, changed, zones)

    def extra_only(self, only: list[str]) -> list[str]:
        return [*only, "uid", "_start_timezone", "_end_timezone", "modified_occurrences", "deleted_occurrences"]

    def update_fields(self, item: Any, names: list[str]) -> list[str]:
        return [n for n in names if n != "uid"]


def _zone_of(item: Any, which: str) -> Any:
    # exchangelib keeps StartTimeZone / EndTimeZone as private fields of CalendarItem
    return getattr(item, f"_{which}_timezone", None)


def _ms_id(value: Any) -> str | None:
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        tz = value.tzinfo
        return str(getattr(tz, "ms_id", None) or _zone(value).ms_id)
    return None


__all__ = ["CalendarTarget", "canon"]
