"""The statements the tracking transaction runs for every message, as
prebuilt SQL (see :mod:`mailfiler.store.prepared`): where peewee spent
~3 ms a message building them, these cost a few microseconds each."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import peewee as pw

from mailfiler.store import prepared as p
from mailfiler.store.models import Activity, ActivityParty, FolderCursor, Location, SeenMessage, Shunt

_A, _L, _C = Activity, Location, FolderCursor


@dataclass(frozen=True)
class Seen:
    """What the store holds of a message before tracking it."""

    activity_id: int | None
    location_id: int | None
    location_activity_id: int | None
    location_gone: bool


def lookup(db: pw.Database, mailbox_id: int, folder: str, source_id: str, message_id: str) -> Seen:
    """The activity with ``message_id`` and the location (mailbox, folder,
    source_id), in one statement (both unique keys: at most one row)."""

    def build(param: str, pg: bool) -> str:
        return (
            f"SELECT a.{p.col(_A.id)}, l.{p.col(_L.id)}, l.{p.col(_L.activity)}, l.{p.col(_L.gone_at)}"
            f" FROM (SELECT 1 AS one) AS x"
            f" LEFT JOIN {p.table(_A)} AS a ON a.{p.col(_A.message_id)} = {param}"
            f" LEFT JOIN {p.table(_L)} AS l ON l.{p.col(_L.mailbox)} = {param}"
            f" AND l.{p.col(_L.folder)} = {param} AND l.{p.col(_L.source_id)} = {param}"
        )

    sql = p.cached(db, ("track-lookup",), build)
    row = db.execute_sql(sql, [message_id, mailbox_id, folder, source_id]).fetchone()
    return Seen(row[0], row[1], row[2], row[3] is not None)


def insert_location(
    db: pw.Database, activity_id: int, mailbox_id: int, folder: str, source_id: str, now: dt.datetime
) -> None:
    p.insert(
        db,
        Location,
        {
            "activity": activity_id,
            "mailbox": mailbox_id,
            "folder": folder,
            "source_id": source_id,
            "first_seen_at": now,
        },
    )


def reattach_location(db: pw.Database, location_id: int, activity_id: int) -> None:
    """The location holds this activity and is present again."""

    def build(param: str, pg: bool) -> str:
        return (
            f"UPDATE {p.table(_L)} SET {p.col(_L.activity)} = {param}, {p.col(_L.gone_at)} = NULL"
            f" WHERE {p.col(_L.id)} = {param}"
        )

    db.execute_sql(p.cached(db, ("track-reattach",), build), [activity_id, location_id])


def resolve_shunt(db: pw.Database, mailbox_id: int, folder: str, source_id: str, now: dt.datetime) -> None:
    def build(param: str, pg: bool) -> str:
        return (
            f"UPDATE {p.table(Shunt)} SET {p.col(Shunt.resolved_at)} = {param}"
            f" WHERE {p.col(Shunt.mailbox)} = {param} AND {p.col(Shunt.folder)} = {param}"
            f" AND {p.col(Shunt.source_id)} = {param} AND {p.col(Shunt.resolved_at)} IS NULL"
        )

    db.execute_sql(
        p.cached(db, ("track-shunt",), build), [Shunt.resolved_at.db_value(now), mailbox_id, folder, source_id]
    )


def forget_seen(db: pw.Database, mailbox_id: int, folder: str, source_id: str) -> None:
    def build(param: str, pg: bool) -> str:
        s = SeenMessage
        return (
            f"DELETE FROM {p.table(s)} WHERE {p.col(s.mailbox)} = {param}"
            f" AND {p.col(s.folder)} = {param} AND {p.col(s.source_id)} = {param}"
        )

    db.execute_sql(p.cached(db, ("track-unseen",), build), [mailbox_id, folder, source_id])


def bump_cursor(
    db: pw.Database,
    mailbox_id: int,
    folder: str,
    kind: str,
    now: dt.datetime,
    token: str | None,
    *,
    count: bool,
    n: int = 1,
) -> None:
    """Count ``n`` messages (``count``) and/or advance the token, creating the
    cursor row on first use (a conflict means another daemon created it:
    its row is then updated)."""
    sets = []
    if count:
        sets += [f"{p.col(_C.processed)} = {p.col(_C.processed)} + {n:d}", "last_sync_at"]
    sets.append("updated_at")
    if token is not None:
        sets.append("token")

    def build(param: str, pg: bool) -> str:
        parts = [s if " = " in s else f"{p.col(getattr(_C, s))} = {param}" for s in sets]
        return (
            f"UPDATE {p.table(_C)} SET {', '.join(parts)}"
            f" WHERE {p.col(_C.mailbox)} = {param} AND {p.col(_C.folder)} = {param}"
        )

    when = _C.updated_at.db_value(now)
    params: list = [when] * (2 if count else 1)
    if token is not None:
        params.append(token)
    cursor = db.execute_sql(
        p.cached(db, ("track-cursor", count, token is not None, n if count else 0), build),
        [*params, mailbox_id, folder],
    )
    if cursor.rowcount:
        return
    row: dict = {"mailbox": mailbox_id, "folder": folder, "updated_at": now, "state": "syncing", "kind": kind}
    row["token"] = token
    if count:
        row.update(processed=n, last_sync_at=now)
    p.insert_ignore(db, FolderCursor, [row])


def activity_id(db: pw.Database, message_id: str) -> int | None:
    """The id of the activity with ``message_id``, if tracked."""

    def build(param: str, pg: bool) -> str:
        return f"SELECT {p.col(_A.id)} FROM {p.table(_A)} WHERE {p.col(_A.message_id)} = {param}"

    row = db.execute_sql(p.cached(db, ("activity-id",), build), [message_id]).fetchone()
    return row[0] if row else None


def activity(db: pw.Database, activity_id: int) -> Activity:
    """The activity (all columns) for the second sighting of a message."""
    fields = _A._meta.sorted_fields

    def build(param: str, pg: bool) -> str:
        return f"SELECT {p.select_columns(fields)} FROM {p.table(_A)} WHERE {p.col(_A.id)} = {param}"

    row = db.execute_sql(p.cached(db, ("activity",), build), [activity_id]).fetchone()
    if row is None:
        # the model's own DoesNotExist, which peewee's metaclass adds (the stubs do not declare it)
        raise cast("Any", Activity).DoesNotExist(f"activity {activity_id}")
    return p.instance(Activity, fields, row)


def parties(db: pw.Database, activity_id: int) -> set[tuple[str, str]]:
    """(role, address) of the activity's parties."""
    ap = ActivityParty

    def build(param: str, pg: bool) -> str:
        return f"SELECT {p.col(ap.role)}, {p.col(ap.address)} FROM {p.table(ap)} WHERE {p.col(ap.activity)} = {param}"

    return {(r, a) for r, a in db.execute_sql(p.cached(db, ("parties",), build), [activity_id])}


#: an IN list takes at most this many values (bound parameters stay far below the limits)
_CHUNK = 200


def none_known(db: pw.Database, mailbox_id: int, folder: str, message_ids: list[str], source_ids: list[str]) -> bool:
    """No activity has any of ``message_ids`` and no location (present or gone) of
    the folder any of ``source_ids``: a batch of new mail, planned without a
    lookup per message (two statements per 200 messages)."""

    def activities(n: int):  # type: ignore[no-untyped-def]
        def build(param: str, pg: bool) -> str:
            marks = ", ".join([param] * n)
            return f"SELECT 1 FROM {p.table(_A)} WHERE {p.col(_A.message_id)} IN ({marks}) LIMIT 1"

        return build

    def locations(n: int):  # type: ignore[no-untyped-def]
        def build(param: str, pg: bool) -> str:
            marks = ", ".join([param] * n)
            return (
                f"SELECT 1 FROM {p.table(_L)} WHERE {p.col(_L.mailbox)} = {param}"
                f" AND {p.col(_L.folder)} = {param} AND {p.col(_L.source_id)} IN ({marks}) LIMIT 1"
            )

        return build

    for start in range(0, len(message_ids), _CHUNK):
        chunk = message_ids[start : start + _CHUNK]
        sql = p.cached(db, ("known-activities", len(chunk)), activities(len(chunk)))
        if db.execute_sql(sql, chunk).fetchone():
            return False
    for start in range(0, len(source_ids), _CHUNK):
        chunk = source_ids[start : start + _CHUNK]
        sql = p.cached(db, ("known-locations", len(chunk)), locations(len(chunk)))
        if db.execute_sql(sql, [mailbox_id, folder, *chunk]).fetchone():
            return False
    return True
