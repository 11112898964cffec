"""The exceptions of a recurring event: iCalendar's EXDATEs and RECURRENCE-ID overrides
<-> Exchange's deleted and modified occurrences.

Exchange names an occurrence by its 1-based index in the series (OccurrenceItemId's
InstanceIndex), so each EXDATE and RECURRENCE-ID is looked up in the expansion of the
master's RRULE from its DTSTART (in its own zone: a weekly 09:00 stays 09:00 across a
DST change).  One that is no occurrence of the rule (a client's stray EXDATE) is not
written to Exchange; it stays in the kept copy.  All-day series keep their exceptions in
the kept copy only (Exchange would hold them as midnight instants of a zone)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from dateutil import rrule  # type: ignore[import-untyped]  # no stubs in the test extra

#: occurrences expanded to find an index (Exchange's own limit for a numbered series is 999)
MAX_OCCURRENCES = 2000


def instant(value: dt.date | dt.datetime) -> str:
    """A comparable key: an aware time as its UTC instant, a floating time or date as written."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC).replace(tzinfo=None).isoformat()
    return value.isoformat()


def indices(master: Any) -> dict[str, int] | None:
    """instant -> index of every occurrence of the master VEVENT's RRULE; None: no timed rule."""
    rules = master.get("RRULE")
    start = master.get("DTSTART")
    if rules is None or start is None or not isinstance(start.dt, dt.datetime):
        return None
    rule = rules[0] if isinstance(rules, list) else rules
    try:
        expansion = rrule.rrulestr(rule.to_ical().decode(), dtstart=start.dt)
    except (ValueError, TypeError):
        return None
    return {instant(when): n for n, when in enumerate(itertools.islice(expansion, MAX_OCCURRENCES), start=1)}


def exceptions(cal: Any, master: Any) -> tuple[dict[int, dt.datetime], dict[int, Any]]:
    """(index -> original start) of the EXDATEs and (index -> override VEVENT) of the
    RECURRENCE-IDs that are occurrences of the master's rule."""
    found = indices(master)
    if not found:
        return {}, {}
    deleted: dict[int, dt.datetime] = {}
    exdates = master.get("EXDATE")
    for prop in exdates if isinstance(exdates, list) else [exdates] if exdates is not None else []:
        for one in prop.dts:
            index = found.get(instant(one.dt))
            if index is not None:
                deleted[index] = one.dt
    overrides: dict[int, Any] = {}
    for ev in cal.walk("VEVENT"):
        if "RECURRENCE-ID" in ev:
            index = found.get(instant(ev["RECURRENCE-ID"].dt))
            if index is not None and index not in deleted:
                overrides[index] = ev
    return deleted, overrides


def override_key(original: Any, subject: Any, start: Any, end: Any, location: Any, body: Any) -> tuple[Any, ...]:
    """What must be equal for two changed occurrences to be the same."""

    def text(value: Any) -> str | None:
        return str(value).strip() or None if value is not None else None

    def when(value: Any) -> str | None:
        return instant(value) if value is not None else None

    return (when(original), text(subject), when(start), when(end), text(location), text(body))
