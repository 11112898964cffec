"""SQL built once, run many times: the hot statements of tracking.

peewee builds a query's SQL afresh on every execution; for the tracker's
statements that costs ~0.3-0.6 ms each while SQLite runs them in ~20 us.
Here the text is built once per dialect and shape (from the models'
metadata, so renames follow the models) and run with ``execute_sql``;
values go through each field's ``db_value`` exactly as peewee converts them,
and rows come back through ``python_value``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, TypeVar, cast

import peewee as pw

M = TypeVar("M", bound=pw.Model)


def real(db: pw.Database | pw.DatabaseProxy) -> pw.Database:
    """The database behind the models' proxy."""
    while isinstance(db, pw.DatabaseProxy):
        db = db.obj
    return db


def dialect(db: pw.Database) -> tuple[str, bool]:
    """What the SQL text depends on: the parameter mark and whether the
    database is PostgreSQL (RETURNING, ON CONFLICT)."""
    db = real(db)
    return db.param, isinstance(db, pw.PostgresqlDatabase)


def q(name: str) -> str:
    """An identifier, quoted the way both SQLite and PostgreSQL read it."""
    return '"' + name.replace('"', '""') + '"'


def table(model: type[pw.Model]) -> str:
    return q(model._meta.table_name)


def col(field: pw.Field) -> str:
    return q(field.column_name)


_sql_cache: dict[tuple, str] = {}


def cached(db: pw.Database, key: tuple, build: Callable[[str, bool], str]) -> str:
    """The SQL ``build(param, is_postgres)`` returns, built once per ``key`` and dialect."""
    full = (*dialect(db), *key)
    sql = _sql_cache.get(full)
    if sql is None:
        if len(_sql_cache) > 4096:  # shapes vary with IN-list lengths: bound the memory
            _sql_cache.clear()
        sql = _sql_cache[full] = build(*full[:2])
    return sql


@lru_cache(maxsize=256)
def _insert_fields(model: type[pw.Model], given: frozenset[str]) -> tuple[pw.Field, ...]:
    """The given fields plus those with a default (as ``Model.insert`` adds), in declaration order."""
    meta = model._meta
    pk = meta.primary_key
    auto_pk = isinstance(pk, pw.AutoField)
    defaulted = {f.name for f in meta.defaults}
    return tuple(
        f for f in meta.sorted_fields if (f.name in given or f.name in defaulted) and not (auto_pk and f is pk)
    )


def _insert_sql(model: type[pw.Model], fields: Sequence[pw.Field], rows: int, ignore: bool, db: pw.Database) -> str:
    def build(param: str, pg: bool) -> str:
        row = "(" + ", ".join([param] * len(fields)) + ")"
        verb = "INSERT OR IGNORE INTO" if ignore and not pg else "INSERT INTO"
        sql = f"{verb} {table(model)} ({', '.join(col(f) for f in fields)}) VALUES {', '.join([row] * rows)}"
        if ignore and pg:
            sql += " ON CONFLICT DO NOTHING"
        pk = model._meta.primary_key
        if pg and rows == 1 and not ignore and isinstance(pk, pw.AutoField):
            sql += f" RETURNING {col(pk)}"
        return sql

    return cached(db, ("insert", model, tuple(f.name for f in fields), rows, ignore), build)


def _value(field: pw.Field, row: Mapping[str, Any]) -> Any:
    if field.name in row:
        return field.db_value(row[field.name])
    default = field.default
    return field.db_value(default() if callable(default) else default)


def insert(db: pw.Database, model: type[pw.Model], row: Mapping[str, Any]) -> int | None:
    """INSERT one row (defaults filled in as ``Model.insert`` does); the new
    auto-increment id, if the model has one."""
    fields = _insert_fields(model, frozenset(row))
    cursor = db.execute_sql(_insert_sql(model, fields, 1, False, db), [_value(f, row) for f in fields])
    if not isinstance(model._meta.primary_key, pw.AutoField):
        return None
    if dialect(db)[1]:
        return cursor.fetchone()[0]
    return cursor.lastrowid


def insert_ignore(db: pw.Database, model: type[pw.Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT rows that all name the same fields, skipping those that hit a
    unique index (``insert_many(...).on_conflict_ignore()``), in one statement."""
    if not rows:
        return
    fields = _insert_fields(model, frozenset(rows[0]))
    params = [_value(f, row) for row in rows for f in fields]
    db.execute_sql(_insert_sql(model, fields, len(rows), True, db), params)


def insert_returning(
    db: pw.Database, model: type[pw.Model], rows: Sequence[Mapping[str, Any]], returning: pw.Field
) -> list[tuple[int, Any]]:
    """INSERT rows that all name the same fields, in one statement; (new id,
    ``returning``'s value) per row, in no particular order (SQLite and
    PostgreSQL both leave RETURNING's order open).  A unique index hit raises."""
    fields = _insert_fields(model, frozenset(rows[0]))
    pk = model._meta.primary_key
    if pk is False:
        raise TypeError(f"{model.__name__} has no primary key to return")

    def build(param: str, pg: bool) -> str:
        row = "(" + ", ".join([param] * len(fields)) + ")"
        return (
            f"INSERT INTO {table(model)} ({', '.join(col(f) for f in fields)}) VALUES {', '.join([row] * len(rows))}"
            f" RETURNING {col(pk)}, {col(returning)}"
        )

    sql = cached(db, ("insert-returning", model, tuple(f.name for f in fields), len(rows), returning.name), build)
    params = [_value(f, row) for row in rows for f in fields]
    return [(r[0], r[1]) for r in db.execute_sql(sql, params).fetchall()]


def insert_many(db: pw.Database, model: type[pw.Model], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT rows that all name the same fields, in one statement; a unique index hit raises."""
    if not rows:
        return
    fields = _insert_fields(model, frozenset(rows[0]))
    params = [_value(f, row) for row in rows for f in fields]
    db.execute_sql(_insert_sql(model, fields, len(rows), False, db), params)


def select_columns(fields: Iterable[pw.Field], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + col(f) for f in fields)


def instance(model: type[M], fields: Sequence[pw.Field], values: Sequence[Any]) -> M:
    """A model built from a row of ``fields`` (converted as peewee reads them)."""
    data = {}
    for field, value in zip(fields, values, strict=True):
        data[field.name] = field.python_value(value) if value is not None else None
    obj = model(__no_default__=1, **data)
    # as peewee's own row reader does: a read row is clean (_dirty: peewee's, not in the stubs)
    cast("Any", obj)._dirty.clear()  # noqa: SLF001
    return obj


def create(db: pw.Database, model: type[M], row: Mapping[str, Any]) -> M:
    """``Model.create`` through a prebuilt INSERT: the saved instance."""
    obj = model(**row)
    # peewee's own names for the primary key and the unsaved fields (the stubs declare neither)
    saved = cast("Any", obj)
    saved._pk = insert(db, model, row)  # noqa: SLF001
    saved._dirty.clear()  # noqa: SLF001 - saved: nothing left to write
    return obj
