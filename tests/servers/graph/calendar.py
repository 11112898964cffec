"""The user's primary calendar: events with recurrence and exceptions as Graph
represents them, ``calendarView`` (occurrences expanded over a window) and
``calendarView/delta``.

A series is one ``seriesMaster`` event carrying a ``recurrence`` (pattern +
range); the calendar view never shows the master but its ``occurrence``
instances (``seriesMasterId``, ``originalStart``), an edited instance as an
``exception``, and a cancelled one not at all.  Delta here compares snapshots
of the window: an instance whose etag changed is sent again, one that left the
window (or was cancelled or deleted) comes as ``@removed``.

Times: ``start``/``end`` are answered in UTC (no ``Prefer: outlook.timezone``);
input time zones are IANA names or "UTC" (Windows names are read as UTC).
Events do not move between calendars here, so their default and immutable ids
are the same.
"""

from __future__ import annotations

import calendar as cal
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tests.servers.graph import delta, extprops
from tests.servers.graph.mail import check_if_match
from tests.servers.graph.model import GraphError, Mailbox, new_change_key, new_id, now_iso
from tests.servers.graph.odata import Ctx, collection_page, json_response, one, read_json, select, select_list
from tests.servers.httpfake import Response

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
INDEX = ["first", "second", "third", "fourth"]
MAX_YEARS = 20  # expansion bound for series without an end


def parse_time(value: str) -> datetime:
    """ISO 8601 as Graph takes it (``2016-12-01T00:00:00Z``, ``...T00:00:00.0000000``, offsets)."""
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        frac = "".join(ch for ch in rest if ch.isdigit())[:6]
        tz = rest[len("".join(ch for ch in rest if ch.isdigit())) :]
        text = f"{head}.{frac}{tz}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise GraphError(400, "ErrorInvalidParameter", f"Invalid date/time {value!r}.") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def zone(name: str | None) -> Any:
    try:
        return ZoneInfo(name) if name and name != "UTC" else UTC
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def date_time_zone(value: dict[str, Any]) -> datetime:
    local = parse_time(value["dateTime"]).replace(tzinfo=None)
    return local.replace(tzinfo=zone(value.get("timeZone"))).astimezone(UTC)


def graph_time(when: datetime) -> dict[str, str]:
    return {"dateTime": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": "UTC"}


@dataclass
class Event:
    id: str
    change_key: str
    created: str
    modified: str
    start: datetime  # UTC
    end: datetime
    time_zone: str
    fields: dict[str, Any]
    recurrence: dict[str, Any] | None = None
    #: original start (UTC ISO) -> (change key, start, end, field overrides)
    exceptions: dict[str, tuple[str, datetime, datetime, dict[str, Any]]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)

    @property
    def etag(self) -> str:
        return f'W/"{self.change_key}"'


class Calendar:
    def __init__(self, mailbox: Mailbox):
        self.mailbox = mailbox
        self.events: dict[str, Event] = {}

    # -- changes (the test-facing API and the endpoints both use these) -----------------
    def add(self, fields: dict[str, Any]) -> Event:
        if "start" not in fields or "end" not in fields:
            raise GraphError(400, "ErrorInvalidRequest", "An event needs start and end.")
        stamp = now_iso()
        rest = {k: v for k, v in fields.items() if k not in ("start", "end", "recurrence")}
        event = Event(new_id("AAMkAE"), new_change_key(), stamp, stamp, date_time_zone(fields["start"]),
                      date_time_zone(fields["end"]), fields["start"].get("timeZone", "UTC"), rest, fields.get("recurrence"))  # fmt: skip
        self.events[event.id] = event
        self.mailbox.tenant.notify(self.mailbox, "event", "created", event)
        return event

    def edit(self, event: Event, fields: dict[str, Any]) -> Event:
        if "start" in fields:
            event.start = date_time_zone(fields["start"])
        if "end" in fields:
            event.end = date_time_zone(fields["end"])
        if "recurrence" in fields:
            event.recurrence = fields["recurrence"]
        event.fields.update({k: v for k, v in fields.items() if k not in ("start", "end", "recurrence")})
        event.change_key = new_change_key()
        event.modified = now_iso()
        self.mailbox.tenant.notify(self.mailbox, "event", "updated", event)
        return event

    def edit_occurrence(self, master: Event, original: str, fields: dict[str, Any]) -> None:
        start, end, overrides = self.instance_times(master, original)
        if "start" in fields:
            start = date_time_zone(fields["start"])
        if "end" in fields:
            end = date_time_zone(fields["end"])
        overrides = {**overrides, **{k: v for k, v in fields.items() if k not in ("start", "end", "recurrence")}}
        master.exceptions[original] = (new_change_key(), start, end, overrides)
        self.mailbox.tenant.notify(self.mailbox, "event", "updated", master)

    def cancel_occurrence(self, master: Event, original: str) -> None:
        master.cancelled.add(original)
        master.exceptions.pop(original, None)
        self.mailbox.tenant.notify(self.mailbox, "event", "deleted", master)

    def delete(self, event: Event) -> None:
        del self.events[event.id]
        self.mailbox.tenant.notify(self.mailbox, "event", "deleted", event)

    def instance_times(self, master: Event, original: str) -> tuple[datetime, datetime, dict[str, Any]]:
        if original in master.exceptions:
            _, start, end, overrides = master.exceptions[original]
            return start, end, overrides
        start = parse_time(original)
        return start, start + (master.end - master.start), {}

    # -- lookups -----------------------------------------------------------------------
    def find(self, ref: str) -> tuple[Event, str | None]:
        """An event id, or an occurrence id (``{master id}.{original start}``) -> (event, original)."""
        if ref in self.events:
            return self.events[ref], None
        master_id, _, stamp = ref.rpartition(".")
        master = self.events.get(master_id)
        if master is None or master.recurrence is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        original = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        key = now_iso(original)
        if key in master.cancelled or original not in self._starts(master, original, original + timedelta(seconds=1)):
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
        return master, key

    # -- expansion ---------------------------------------------------------------------
    def _starts(self, master: Event, window_start: datetime, window_end: datetime) -> list[datetime]:
        """Original starts of a series' occurrences whose original start lies in [start, end)."""
        rec = master.recurrence or {}
        pattern, rng = rec.get("pattern", {}), rec.get("range", {})
        tz = zone(rng.get("recurrenceTimeZone") or master.time_zone)
        local_start = master.start.astimezone(tz)
        first = date.fromisoformat(rng["startDate"]) if rng.get("startDate") else local_start.date()
        last = date.fromisoformat(rng["endDate"]) if rng.get("type") == "endDate" and rng.get("endDate") else None
        count = int(rng["numberOfOccurrences"]) if rng.get("type") == "numbered" else None
        limit = min(
            last or date.max,
            (window_end.astimezone(tz) + timedelta(days=1)).date(),
            first + timedelta(days=366 * MAX_YEARS),
        )
        interval = max(1, int(pattern.get("interval", 1)))
        kind = pattern.get("type", "daily")
        days = {d.lower() for d in pattern.get("daysOfWeek", [])}
        week0 = first - timedelta(
            days=(first.weekday() - DAYS.index(pattern.get("firstDayOfWeek", "sunday").lower())) % 7
        )
        out, seen, day = [], 0, first
        while day <= limit and (count is None or seen < count):
            months = (day.year - first.year) * 12 + day.month - first.month
            if kind == "daily":
                hit = (day - first).days % interval == 0
            elif kind == "weekly":
                hit = DAYS[day.weekday()] in days and ((day - week0).days // 7) % interval == 0
            elif kind == "absoluteMonthly":
                hit = day.day == int(pattern.get("dayOfMonth", first.day)) and months % interval == 0
            elif kind == "relativeMonthly":
                index = pattern.get("index", "first")
                last_week = day.day + 7 > cal.monthrange(day.year, day.month)[1]
                hit = (DAYS[day.weekday()] in days and months % interval == 0
                       and ((index == "last" and last_week) or (INDEX[min((day.day - 1) // 7, 3)] == index and index != "last")))  # fmt: skip
            elif kind == "absoluteYearly":
                hit = (day.month == int(pattern.get("month", first.month)) and day.day == int(pattern.get("dayOfMonth", first.day))
                       and (day.year - first.year) % interval == 0)  # fmt: skip
            else:
                raise GraphError(
                    400, "ErrorInvalidRecurrence", f"Recurrence pattern {kind!r} is not supported by this fake."
                )
            if hit:
                seen += 1
                start = (
                    datetime.combine(day, local_start.timetz().replace(tzinfo=None)).replace(tzinfo=tz).astimezone(UTC)
                )
                if window_start <= start < window_end:
                    out.append(start)
            day += timedelta(days=1)
        return out

    def instances(self, ctx: Ctx, window_start: datetime, window_end: datetime) -> list[dict[str, Any]]:
        """What ``calendarView`` shows for the window, in start order."""
        out: list[tuple[datetime, dict[str, Any]]] = []
        for event in self.events.values():
            if event.recurrence is None:
                if event.start < window_end and event.end > window_start:
                    out.append((event.start, event_json(ctx, event)))
                continue
            length = event.end - event.start
            # an exception may be moved into the window from an original start outside it
            starts = set(self._starts(event, window_start - timedelta(days=31), window_end + timedelta(days=31)))
            for original in sorted(starts):
                key = now_iso(original)
                if key in event.cancelled:
                    continue
                start, end, _ = self.instance_times(event, key)
                end = end if key in event.exceptions else start + length
                if start < window_end and end > window_start:
                    out.append((start, event_json(ctx, event, key)))
        out.sort(key=lambda pair: pair[0])
        return [item for _, item in out]


def event_json(ctx: Ctx, event: Event, original: str | None = None) -> dict[str, Any]:
    fields, change_key = dict(event.fields), event.change_key
    start, end, kind = event.start, event.end, "seriesMaster" if event.recurrence else "singleInstance"
    ident, master_id = event.id, None
    if original is not None:
        cal_ = ctx.need_mailbox().events
        assert isinstance(cal_, Calendar)
        start, end, overrides = cal_.instance_times(event, original)
        fields.update(overrides)
        kind = "exception" if original in event.exceptions else "occurrence"
        if kind == "exception":
            change_key = event.exceptions[original][0]
        else:
            end = start + (event.end - event.start)
        ident = f"{event.id}.{parse_time(original).strftime('%Y%m%dT%H%M%SZ')}"
        master_id = event.id
    mailbox = ctx.need_mailbox()
    body = fields.get("body") or {"contentType": "html", "content": ""}
    item = {
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": f'W/"{change_key}"',
        "id": ident,
        "createdDateTime": event.created,
        "lastModifiedDateTime": event.modified,
        "changeKey": change_key,
        "categories": fields.get("categories", []),
        "transactionId": None,
        "originalStartTimeZone": event.time_zone,
        "originalEndTimeZone": event.time_zone,
        "iCalUId": f"040000008200E00074C5B7101A82E008{abs(hash(event.id)) % 10**16:016d}",
        "reminderMinutesBeforeStart": fields.get("reminderMinutesBeforeStart", 15),
        "isReminderOn": fields.get("isReminderOn", True),
        "hasAttachments": False,
        "subject": fields.get("subject", ""),
        "bodyPreview": str(body.get("content", ""))[:255],
        "importance": fields.get("importance", "normal"),
        "sensitivity": fields.get("sensitivity", "normal"),
        "isAllDay": fields.get("isAllDay", False),
        "isCancelled": False,
        "isOrganizer": True,
        "responseRequested": True,
        "seriesMasterId": master_id,
        "showAs": fields.get("showAs", "busy"),
        "type": kind,
        "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
        "body": body,
        "start": graph_time(start),
        "end": graph_time(end),
        "location": fields.get("location", {"displayName": ""}),
        "locations": fields.get("locations", []),
        "recurrence": event.recurrence if kind == "seriesMaster" else None,
        "attendees": fields.get("attendees", []),
        "organizer": {"emailAddress": {"name": mailbox.display_name, "address": mailbox.upn}},
    }
    if original is not None:
        item["originalStart"] = original
    return item


def shown(ctx: Ctx, event: Event, original: str | None = None, sel: list[str] | None = None) -> dict[str, Any]:
    """An event as answered: ``$select`` applied, our extended properties when ``$expand`` asks."""
    item = select(event_json(ctx, event, original), sel)
    if original is None:
        item.update(extprops.expanded(ctx.request, event.fields.get(extprops.KEY)))
    return item


def calendar_of(ctx: Ctx) -> Calendar:
    mailbox = ctx.need_mailbox()
    if mailbox.events is None:
        mailbox.events = Calendar(mailbox)  # type: ignore[assignment]
    assert isinstance(mailbox.events, Calendar)
    return mailbox.events


def _window(ctx: Ctx) -> tuple[datetime, datetime]:
    start, end = one(ctx.request, "startDateTime"), one(ctx.request, "endDateTime")
    if not start or not end:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.",
        )
    return parse_time(start), parse_time(end)


# -- endpoints ------------------------------------------------------------------------
def calendar_view(ctx: Ctx) -> Response:
    cal_ = calendar_of(ctx)
    start, end = _window(ctx)
    with ctx.need_mailbox().tenant.lock:
        items = cal_.instances(ctx, start, end)
    return collection_page(ctx, items, "calendarView", "Collection(event)")


def calendar_view_delta(ctx: Ctx) -> Any:
    cal_ = calendar_of(ctx)
    mailbox = ctx.need_mailbox()

    def start_round(cursor: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
        window = (parse_time(cursor["window"][0]), parse_time(cursor["window"][1])) if cursor else _window(ctx)
        with mailbox.tenant.lock:
            current = {item["id"]: item for item in cal_.instances(ctx, *window)}
        seen = cursor["seen"] if cursor else {}
        entries: list[Any] = [item for ident, item in current.items() if seen.get(ident) != item["@odata.etag"]]
        entries += [delta.removed_entry("#microsoft.graph.event", ident) for ident in seen if ident not in current]
        return entries, {"window": [now_iso(window[0]), now_iso(window[1])],
                         "seen": {ident: item["@odata.etag"] for ident, item in current.items()}}  # fmt: skip

    return delta.serve(ctx, scope=f"{mailbox.id}/calendarView", path="calendarView/delta", context="event",
                       start=start_round, render=lambda entry, _sel: entry)  # fmt: skip


def list_events(ctx: Ctx) -> Response:
    """``GET /events``: single events and series masters (never occurrences), oldest first."""
    cal_ = calendar_of(ctx)
    sel = select_list(ctx.request)
    with ctx.need_mailbox().tenant.lock:
        events = [e for e in sorted(cal_.events.values(), key=lambda e: (e.start, e.id))
                  if extprops.matches(ctx.request, e.fields.get(extprops.KEY))]  # fmt: skip
        items = [shown(ctx, e, None, sel) for e in events]
    return collection_page(ctx, items, "events", "Collection(event)")


def event_instances(ctx: Ctx, ref: str) -> Response:
    """``GET /events/{id}/instances``: a series' occurrences and exceptions in the window."""
    cal_ = calendar_of(ctx)
    start, end = _window(ctx)
    sel = select_list(ctx.request)
    with ctx.need_mailbox().tenant.lock:
        event, original = cal_.find(ref)
        if original is not None or event.recurrence is None:
            items = []
        else:
            # as documented, instances come without the @odata.type that delta entries carry
            items = [{k: v for k, v in select(i, sel).items() if k != "@odata.type"}
                     for i in cal_.instances(ctx, start, end) if i.get("seriesMasterId") == event.id]  # fmt: skip
    return collection_page(ctx, items, f"events/{ref}/instances", "Collection(event)")


def get_event(ctx: Ctx, ref: str) -> Response:
    cal_ = calendar_of(ctx)
    with ctx.need_mailbox().tenant.lock:
        event, original = cal_.find(ref)
        item = shown(ctx, event, original, select_list(ctx.request))
    return json_response(
        {"@odata.context": f"{ctx.base}/$metadata#events/$entity", **item}, headers={"ETag": item["@odata.etag"]}
    )


def create_event(ctx: Ctx) -> Response:
    cal_ = calendar_of(ctx)
    body = read_json(ctx.request)
    if extprops.KEY in body:
        body[extprops.KEY] = extprops.merged(None, body[extprops.KEY])
    with ctx.need_mailbox().tenant.lock:
        item = shown(ctx, cal_.add(body))
    return json_response(
        {"@odata.context": f"{ctx.base}/$metadata#events/$entity", **item}, 201, {"ETag": item["@odata.etag"]}
    )


def patch_event(ctx: Ctx, ref: str) -> Response:
    cal_ = calendar_of(ctx)
    body = read_json(ctx.request)
    with ctx.need_mailbox().tenant.lock:
        event, original = cal_.find(ref)
        check_if_match(ctx, event_json(ctx, event, original)["@odata.etag"])
        if extprops.KEY in body:  # a PATCH adds or replaces properties by id, keeping the others
            old = event.fields.get(extprops.KEY) if original is None else None
            body[extprops.KEY] = extprops.merged(old, body[extprops.KEY])
        if original is None:
            cal_.edit(event, body)
        else:
            cal_.edit_occurrence(event, original, body)
        item = event_json(ctx, event, original)
    return json_response(
        {"@odata.context": f"{ctx.base}/$metadata#events/$entity", **item}, headers={"ETag": item["@odata.etag"]}
    )


def delete_event(ctx: Ctx, ref: str) -> Response:
    cal_ = calendar_of(ctx)
    with ctx.need_mailbox().tenant.lock:
        event, original = cal_.find(ref)
        check_if_match(ctx, event_json(ctx, event, original)["@odata.etag"])
        if original is None:
            cal_.delete(event)
        else:
            cal_.cancel_occurrence(event, original)
    return Response(204)
