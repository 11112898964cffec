"""Schema versions and migrations.

The store is a system of record, so it is migrated, never rebuilt.  Each
migration is a function that takes the database and runs inside one
transaction with the version bump; ``MIGRATIONS[n]`` brings version n-1 to n.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import peewee as pw
from playhouse.migrate import SchemaMigrator
from playhouse.migrate import migrate as run_migrations

from mailfiler.errors import SchemaTooNew
from mailfiler.store import models as m
from mailfiler.store.db import transaction
from mailfiler.store.detailmodels import AppointmentDetails, ContactDetails, ContactPhone, PostalAddress
from mailfiler.store.registry import ALL_MODELS
from mailfiler.store.syncmodels import SyncCollection, SyncItem, SyncShunt

log = logging.getLogger(__name__)


def _v1_initial(db: pw.Database) -> None:
    db.create_tables(ALL_MODELS, safe=True)


def _add_columns(db: pw.Database, model: type[m.BaseModel], names: list[str]) -> None:
    """Add model fields missing from the table.

    Idempotent, because a store created at a later version already has them
    (version 1 creates tables from the current models)."""
    table = model._meta.table_name
    have = {c.name for c in db.get_columns(table)}
    migrator = SchemaMigrator.from_database(db)
    ops = []
    for name in names:
        field = model._meta.fields[name]
        if field.column_name not in have:
            ops.append(migrator.add_column(table, field.column_name, field))
    if ops:
        run_migrations(*ops)


def _v2_correlation(db: pw.Database) -> None:
    _add_columns(db, m.Activity, ["subject_key", "correlated_activity", "categories", "owner"])
    db.execute_sql(f"CREATE INDEX IF NOT EXISTS activity_subject_key ON {m.Activity._meta.table_name} (subject_key)")


def _v3_auto_tracking(db: pw.Database) -> None:
    db.create_tables([m.SeenMessage], safe=True)
    _add_columns(db, m.FolderCursor, ["kind"])


def _v4_sync_back(db: pw.Database) -> None:
    # new tables only; safe=True makes a store created at version 4 a no-op here
    db.create_tables(
        [
            ContactDetails,
            ContactPhone,
            PostalAddress,
            AppointmentDetails,
            SyncCollection,
            SyncItem,
            SyncShunt,
        ],
        safe=True,
    )


def _v5_inline_blobs(db: pw.Database) -> None:
    # blobs stored before stay files (data NULL); BlobStore.get reads either
    _add_columns(db, m.Blob, ["data"])


def _v6_error_codes(db: pw.Database) -> None:
    _add_columns(db, m.FolderCursor, ["error_code"])


def _v7_track_by_tag(db: pw.Database) -> None:
    db.create_tables([m.TagCursor], safe=True)
    _add_columns(db, m.Activity, ["untracked_at", "untracked_reason"])


MIGRATIONS: dict[int, tuple[str, Callable[[pw.Database], None]]] = {
    1: ("initial schema", _v1_initial),
    2: ("correlation: subject key, correlated activity, categories, owner", _v2_correlation),
    3: ("auto-tracking: seen messages, watched folder cursors", _v3_auto_tracking),
    4: ("sync-back: contact and appointment details, sync collections, status and shunt", _v4_sync_back),
    5: ("attachments up to 128 KiB stored in the database", _v5_inline_blobs),
    6: ("folder errors keep their code (login refused, server unreachable...)", _v6_error_codes),
    7: ("track by tag: tag cursors per folder, untracked activities", _v7_track_by_tag),
}
LATEST = max(MIGRATIONS)


def current_version(db: pw.Database) -> int:
    if not db.table_exists(m.SchemaVersion._meta.table_name):
        return 0
    row = m.SchemaVersion.select(pw.fn.MAX(m.SchemaVersion.version)).scalar()
    return int(row or 0)


def migrate(db: pw.Database) -> list[int]:
    """Bring the schema to :data:`LATEST`; return the versions applied."""
    applied: list[int] = []
    with transaction(db):
        if not isinstance(db, pw.SqliteDatabase):
            # several daemons may start at once against one PostgreSQL store
            db.execute_sql("SELECT pg_advisory_xact_lock(7305192)")
        version = current_version(db)
        if version > LATEST:
            raise SchemaTooNew(
                f"the database has schema version {version} but this mailfiler knows only up to {LATEST};"
                " upgrade mailfiler",
                version=version,
                latest=LATEST,
            )
        for target in range(version + 1, LATEST + 1):
            description, step = MIGRATIONS[target]
            step(db)
            m.SchemaVersion.create(version=target, description=description)
            applied.append(target)
            log.info("store migrated to schema %d (%s)", target, description, extra={"event": "migrated"})
    return applied
