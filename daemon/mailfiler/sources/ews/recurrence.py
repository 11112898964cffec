"""RFC 5545 RRULEs <-> EWS recurrences (exchangelib's patterns and boundaries).

Exchange holds fewer rules than iCalendar: one of its patterns (daily,
weekly on some weekdays, monthly on a day or on the nth weekday, yearly on
a date or on the nth weekday of a month) and one end (a date, a count, or
none).  A rule outside them (BYHOUR, several BYMONTHDAYs, FREQ=HOURLY...)
is not written to Exchange (None): the event is then stored as its first
occurrence, and the rule stays in the kept copy."""

from __future__ import annotations

import datetime as dt
from typing import Any

from exchangelib.recurrence import (
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    EndDatePattern,
    NoEndPattern,
    NumberedPattern,
    Recurrence,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)

_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")  # exchangelib's weekdays are 1 (Monday) .. 7
_HANDLED = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYSETPOS", "WKST"}


def _one(rule: Any, key: str) -> Any:
    values = rule.get(key) or []
    if len(values) > 1:
        raise _Unmapped
    return values[0] if values else None


class _Unmapped(Exception):
    pass


def _weekday(text: str) -> tuple[int | None, int]:
    """'2TU' -> (2, 2); 'MO' -> (None, 1); '-1FR' -> (-1, 5)."""
    text = str(text).upper()
    day = _DAYS.index(text[-2:]) + 1
    nth = int(text[:-2]) if text[:-2] else None
    return nth, day


def from_rrule(rule: Any, start: dt.date | dt.datetime) -> Recurrence | None:
    """The EWS recurrence of an RRULE (icalendar's vRecur) starting at *start*; None if it has none."""
    try:
        return _from_rrule(rule, start)
    except (_Unmapped, ValueError, IndexError):
        return None


def _from_rrule(rule: Any, start: dt.date | dt.datetime) -> Recurrence:
    if set(rule) - _HANDLED:
        raise _Unmapped
    freq = _one(rule, "FREQ")
    interval = int(_one(rule, "INTERVAL") or 1)
    first = start.date() if isinstance(start, dt.datetime) else start
    days = [_weekday(d) for d in rule.get("BYDAY") or []]
    setpos = _one(rule, "BYSETPOS")
    if setpos is not None and len(days) == 1:
        days = [(int(setpos), days[0][1])]
    monthday = _one(rule, "BYMONTHDAY")
    month = _one(rule, "BYMONTH")
    pattern: Any
    if freq == "DAILY" and not days and monthday is None:
        pattern = DailyPattern(interval=interval)
    elif freq == "WEEKLY" and monthday is None and all(n is None for n, _ in days):
        weekdays = [d for _, d in days] or [first.isoweekday()]
        wkst = _DAYS.index(str(_one(rule, "WKST") or "MO").upper()) + 1
        pattern = WeeklyPattern(interval=interval, weekdays=weekdays, first_day_of_week=wkst)
    elif freq == "MONTHLY" and not days:
        pattern = AbsoluteMonthlyPattern(interval=interval, day_of_month=int(monthday or first.day))
    elif freq == "MONTHLY" and len(days) == 1 and days[0][0] is not None and monthday is None:
        nth, day = days[0]
        pattern = RelativeMonthlyPattern(interval=interval, weekday=day, week_number=5 if nth == -1 else nth)
    elif freq == "YEARLY" and interval == 1 and not days:
        pattern = AbsoluteYearlyPattern(day_of_month=int(monthday or first.day), month=int(month or first.month))
    elif freq == "YEARLY" and interval == 1 and len(days) == 1 and days[0][0] is not None:
        nth, day = days[0]
        pattern = RelativeYearlyPattern(
            weekday=day, week_number=5 if nth == -1 else nth, month=int(month or first.month)
        )
    else:
        raise _Unmapped
    if days and any(n is not None and not (1 <= n <= 4 or n == -1) for n, _ in days):
        raise _Unmapped
    count, until = _one(rule, "COUNT"), _one(rule, "UNTIL")
    if count is not None:
        return Recurrence(pattern=pattern, boundary=NumberedPattern(start=first, number=int(count)))
    if until is not None:
        last = until.date() if isinstance(until, dt.datetime) else until
        return Recurrence(pattern=pattern, boundary=EndDatePattern(start=first, end=last))
    return Recurrence(pattern=pattern, boundary=NoEndPattern(start=first))


def _nth(week_number: Any) -> int:
    return -1 if int(week_number) == 5 else int(week_number)


def to_rrule(recurrence: Recurrence, *, all_day: bool = False) -> str | None:
    """The RRULE text of an EWS recurrence; None for a pattern iCalendar is not given here
    (a task's regeneration)."""
    pattern, boundary = recurrence.pattern, recurrence.boundary
    parts: list[str]
    if isinstance(pattern, DailyPattern):
        parts = ["FREQ=DAILY"]
    elif isinstance(pattern, WeeklyPattern):
        days = ",".join(_DAYS[int(d) - 1] for d in pattern.weekdays)
        parts = ["FREQ=WEEKLY", f"BYDAY={days}"]
        if int(pattern.first_day_of_week or 1) != 1:
            parts.append(f"WKST={_DAYS[int(pattern.first_day_of_week) - 1]}")
    elif isinstance(pattern, AbsoluteMonthlyPattern):
        parts = ["FREQ=MONTHLY", f"BYMONTHDAY={pattern.day_of_month}"]
    elif isinstance(pattern, RelativeMonthlyPattern):
        parts = ["FREQ=MONTHLY", f"BYDAY={_nth(pattern.week_number)}{_DAYS[int(pattern.weekday) - 1]}"]
    elif isinstance(pattern, AbsoluteYearlyPattern):
        parts = ["FREQ=YEARLY", f"BYMONTH={int(pattern.month)}", f"BYMONTHDAY={pattern.day_of_month}"]
    elif isinstance(pattern, RelativeYearlyPattern):
        day = f"{_nth(pattern.week_number)}{_DAYS[int(pattern.weekday) - 1]}"
        parts = ["FREQ=YEARLY", f"BYMONTH={int(pattern.month)}", f"BYDAY={day}"]
    else:
        return None
    interval = getattr(pattern, "interval", None)
    if interval and int(interval) != 1:
        parts.insert(1, f"INTERVAL={interval}")
    if isinstance(boundary, NumberedPattern):
        parts.append(f"COUNT={boundary.number}")
    elif isinstance(boundary, EndDatePattern):
        end = boundary.end
        # UNTIL has DTSTART's value type (RFC 5545 3.3.10): the end of the last day for a time
        parts.append(f"UNTIL={end.year:04d}{end.month:02d}{end.day:02d}" + ("" if all_day else "T235959Z"))
    return ";".join(parts)
