"""Recurring series: a calendar item with a Recurrence is a series master; its occurrences are
named by OccurrenceItemId (the master's id and a 1-based InstanceIndex), an occurrence updated
becomes an exception (ModifiedOccurrences), one deleted a DeletedOccurrence (how-to-access-a-
recurring-series-by-using-ews, occurrenceitemid.md, modifiedoccurrences.md, deletedoccurrence.md).

Occurrences are expanded in the series' StartTimeZone (a few Windows zone names are known;
others count as UTC), so a weekly 09:00 stays at 09:00 across a DST change, as in Exchange.
Setting the master's Recurrence (or deleting it) drops its exceptions, as a changed pattern does."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo

from dateutil import rrule

from tests.servers.ews.model import Item, Mailbox, Store, _opaque, format_time
from tests.servers.ews.soap import EwsError, el, local, q, sub

WINDOWS_ZONES = {
    "UTC": "UTC", "W. Europe Standard Time": "Europe/Berlin", "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest", "GMT Standard Time": "Europe/London",
    "FLE Standard Time": "Europe/Helsinki", "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago", "Pacific Standard Time": "America/Los_Angeles",
}  # fmt: skip
MAX_OCCURRENCES = 1000
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip
_NTH = {"First": 1, "Second": 2, "Third": 3, "Fourth": 4, "Last": -1}


def _time(item: Item, name: str) -> dt.datetime | None:
    value = item.fields.get(name)
    if value is None or not value.text:
        return None
    parsed = dt.datetime.fromisoformat(value.text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _zone(item: Item) -> dt.tzinfo:
    elem = item.fields.get("StartTimeZone")
    return ZoneInfo(WINDOWS_ZONES.get(elem.get("Id", "") if elem is not None else "", "UTC"))


def _text(elem: ET.Element, name: str) -> str:
    return (elem.findtext(q(f"t:{name}")) or "").strip()


def starts(master: Item) -> list[dt.datetime]:
    """The original start of every occurrence, in order (index 1 first); [] for a single item."""
    recurrence, start = master.fields.get("Recurrence"), _time(master, "Start")
    if recurrence is None or start is None or len(recurrence) < 2:
        return []
    pattern, boundary = recurrence[0], recurrence[1]
    kind = local(pattern)
    kw: dict = {"interval": int(_text(pattern, "Interval") or 1)}
    days = [_DAYS.index(d) for d in _text(pattern, "DaysOfWeek").split() if d in _DAYS]
    if kind == "DailyRecurrence":
        freq = rrule.DAILY
    elif kind == "WeeklyRecurrence":
        freq, kw["byweekday"] = rrule.WEEKLY, days
        if _text(pattern, "FirstDayOfWeek") in _DAYS:
            kw["wkst"] = _DAYS.index(_text(pattern, "FirstDayOfWeek"))
    elif kind in ("AbsoluteMonthlyRecurrence", "AbsoluteYearlyRecurrence"):
        freq = rrule.MONTHLY if kind.startswith("AbsoluteMonthly") else rrule.YEARLY
        kw["bymonthday"] = int(_text(pattern, "DayOfMonth"))
    elif kind in ("RelativeMonthlyRecurrence", "RelativeYearlyRecurrence"):
        freq = rrule.MONTHLY if kind.startswith("RelativeMonthly") else rrule.YEARLY
        kw["byweekday"] = [rrule.weekday(d, _NTH[_text(pattern, "DayOfWeekIndex")]) for d in days]
    else:
        return []
    if kind.endswith("YearlyRecurrence"):
        kw["bymonth"] = _MONTHS.index(_text(pattern, "Month")) + 1
        kw.pop("interval")
    zone = _zone(master)
    first = start.astimezone(zone)
    begin = dt.date.fromisoformat(_text(boundary, "StartDate")[:10])
    dtstart = first.replace(year=begin.year, month=begin.month, day=begin.day)
    kw["count"] = min(int(_text(boundary, "NumberOfOccurrences") or MAX_OCCURRENCES), MAX_OCCURRENCES)
    if local(boundary) == "EndDateRecurrence":
        last = dt.date.fromisoformat(_text(boundary, "EndDate")[:10])
        kw["until"] = dt.datetime.combine(last, dt.time(23, 59, 59), zone)
    return [when.astimezone(dt.UTC) for when in rrule.rrule(freq, dtstart=dtstart, **kw)]


def occurrence(store: Store, mailbox: Mailbox, master: Item, index: int) -> Item:
    """The occurrence at ``index``: its exception, or a new occurrence item (an id of its own)."""
    if index in master.exceptions:
        return master.exceptions[index]
    if index in master.deleted:
        raise EwsError("ErrorCalendarOccurrenceIsDeletedFromRecurrence", "Occurrence was deleted from the recurrence.")
    times = starts(master)
    if not 1 <= index <= len(times):
        raise EwsError(
            "ErrorCalendarOccurrenceIndexIsOutOfRecurrenceRange", "Occurrence index is out of recurrence range."
        )
    begin, end = _time(master, "Start"), _time(master, "End")
    length = (end - begin) if begin is not None and end is not None else dt.timedelta(0)
    fields = {k: v for k, v in master.fields.items() if k not in ("Recurrence", "Start", "End")}
    fields["Start"] = el("t:Start", format_time(times[index - 1]))
    fields["End"] = el("t:End", format_time(times[index - 1] + length))
    fields["OriginalStart"] = el("t:OriginalStart", format_time(times[index - 1]))
    key = next(store._numbers)
    occ = Item(key, _opaque("I", mailbox.user.smtp.lower(), key), "CalendarItem", master.folder, fields=fields)
    occ.master, occ.index = master, index
    mailbox.items[occ.id] = occ
    return occ


def resolve(store: Store, elem: ET.Element) -> tuple[Mailbox, Item]:
    """An <t:OccurrenceItemId>: (mailbox, occurrence)."""
    mailbox, master = store.item(elem.get("RecurringMasterId") or "")
    try:
        index = int(elem.get("InstanceIndex") or "0")
    except ValueError:
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.") from None
    return mailbox, occurrence(store, mailbox, master, index)


def changed(store: Store, mailbox: Mailbox, occ: Item) -> None:
    """An occurrence was updated: it is an exception of its series (the master changes too)."""
    assert occ.master is not None
    occ.master.exceptions[occ.index] = occ
    occ.version += 1
    store.update_item(mailbox.user.smtp, occ.master)


def deleted(store: Store, mailbox: Mailbox, occ: Item) -> None:
    assert occ.master is not None
    occ.master.exceptions.pop(occ.index, None)
    occ.master.deleted.add(occ.index)
    mailbox.items.pop(occ.id, None)
    store.update_item(mailbox.user.smtp, occ.master)


def reset(mailbox: Mailbox, master: Item) -> None:
    """The master's pattern changed: its exceptions are gone."""
    for occ in master.exceptions.values():
        mailbox.items.pop(occ.id, None)
    master.exceptions.clear()
    master.deleted.clear()


def properties(item: Item) -> dict[str, ET.Element]:
    """CalendarItemType, and a master's ModifiedOccurrences and DeletedOccurrences."""
    out = {}
    if item.master is not None:
        kind = "Exception" if item.index in item.master.exceptions else "Occurrence"
    else:
        kind = "RecurringMaster" if "Recurrence" in item.fields else "Single"
    out["CalendarItemType"] = el("t:CalendarItemType", kind)
    if item.exceptions:
        mods = el("t:ModifiedOccurrences")
        for _, occ in sorted(item.exceptions.items()):
            one = sub(mods, "t:Occurrence")
            sub(one, "t:ItemId", Id=occ.id, ChangeKey=occ.change_key)
            for name in ("Start", "End", "OriginalStart"):
                sub(one, f"t:{name}", occ.fields[name].text or "")
        out["ModifiedOccurrences"] = mods
    if item.deleted:
        times = starts(item)
        gone = el("t:DeletedOccurrences")
        for index in sorted(i for i in item.deleted if i <= len(times)):
            sub(sub(gone, "t:DeletedOccurrence"), "t:Start", format_time(times[index - 1]))
        out["DeletedOccurrences"] = gone
    return out
