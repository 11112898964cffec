"""Schema migrations on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import peewee as pw
import pytest

from mailfiler.errors import SchemaTooNew
from mailfiler.store import db as storedb
from mailfiler.store import models as m
from mailfiler.store import prepared
from mailfiler.store.blobs import BlobStore
from mailfiler.store.migrations import LATEST, MIGRATIONS, current_version, migrate
from mailfiler.store.registry import ALL_MODELS
from mailfiler.util.fsio import atomic_write
from tests.store.helpers import Store


def _tables(db: pw.Database) -> set[str]:
    return set(db.get_tables())


def test_fresh_migrate_reaches_latest(store: Store) -> None:
    # the fixture migrated already; a brand-new connection sees the same version
    assert current_version(store.db) == LATEST
    assert sorted(r.version for r in m.SchemaVersion.select()) == list(range(1, LATEST + 1))
    assert {model._meta.table_name for model in ALL_MODELS} <= _tables(store.db)
    assert set(MIGRATIONS) == set(range(1, LATEST + 1))


def test_migrate_from_empty_database_applies_every_step(store: Store) -> None:
    store.db.drop_tables(ALL_MODELS)
    assert current_version(store.db) == 0
    assert migrate(store.db) == list(range(1, LATEST + 1))
    assert current_version(store.db) == LATEST


def test_migrate_twice_is_a_noop(store: Store) -> None:
    before = [(r.version, r.applied_at, r.description) for r in m.SchemaVersion.select().order_by(m.SchemaVersion.id)]
    m.Record.create(entity="account", key="contoso", name="Contoso")
    assert migrate(store.db) == []
    assert migrate(store.db) == []
    after = [(r.version, r.applied_at, r.description) for r in m.SchemaVersion.select().order_by(m.SchemaVersion.id)]
    assert after == before
    # data survives: the store is migrated, never rebuilt
    assert m.Record.select().count() == 1


def test_reconnect_and_migrate_is_a_noop(store: Store) -> None:
    store.db.close()
    db = storedb.connect(store.url)
    try:
        assert migrate(db) == []
        assert current_version(db) == LATEST
    finally:
        db.close()
        # leave the models bound to the fixture's store, open, for its teardown (which closes it:
        # a new connection here would never be closed, and psycopg 3 warns when one is collected open)
        store.db.connect(reuse_if_open=True)
        m.database_proxy.initialize(store.db)


def test_newer_schema_raises_schema_too_new(store: Store) -> None:
    m.SchemaVersion.create(version=LATEST + 1, description="from the future")
    with pytest.raises(SchemaTooNew) as info:
        migrate(store.db)
    assert info.value.version == LATEST + 1
    assert info.value.latest == LATEST
    assert "upgrade mailfiler" in str(info.value)
    # nothing was touched: the version rows are as they were
    assert sorted(r.version for r in m.SchemaVersion.select()) == [*range(1, LATEST + 1), LATEST + 1]


def test_version_1_store_gains_the_correlation_columns(store: Store) -> None:
    # make the store look as schema 1 left it: no correlation columns, version 1
    store.db.execute_sql("DROP INDEX IF EXISTS activity_subject_key")
    if isinstance(store.db, pw.SqliteDatabase):
        # SQLite cannot drop a foreign-key column: rebuild the table from its
        # own DDL without the schema-2 parts
        ddl = store.db.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'activity'").fetchone()[0]
        for part in (
            ', "subject_key" VARCHAR(255)',
            ', "correlated_activity_id" INTEGER',
            ', "categories" TEXT',
            ', "owner" VARCHAR(320)',
            ', FOREIGN KEY ("correlated_activity_id") REFERENCES "activity" ("id") ON DELETE SET NULL',
        ):
            assert part in ddl
            ddl = ddl.replace(part, "")
        store.db.execute_sql("PRAGMA foreign_keys = OFF")
        store.db.execute_sql("DROP TABLE activity")
        store.db.execute_sql(ddl)
        store.db.execute_sql("PRAGMA foreign_keys = ON")
    else:
        for column in ("subject_key", "correlated_activity_id", "categories", "owner"):
            store.db.execute_sql(f"ALTER TABLE activity DROP COLUMN {column}")
    m.SchemaVersion.delete().where(m.SchemaVersion.version > 1).execute()
    m.Record.create(entity="account", key="contoso", name="Contoso")
    assert current_version(store.db) == 1

    assert migrate(store.db) == list(range(2, LATEST + 1))
    columns = {c.name for c in store.db.get_columns("activity")}
    assert {"subject_key", "correlated_activity_id", "categories", "owner"} <= columns
    assert "activity_subject_key" in {i.name for i in store.db.get_indexes("activity")}
    # existing data is untouched, and the new columns are usable
    assert m.Record.get(m.Record.key == "contoso").name == "Contoso"
    m.Activity.create(message_id="<a@b>", direction="incoming", subject_key="hello", categories="x")
    assert m.Activity.get(m.Activity.message_id == "<a@b>").subject_key == "hello"


def test_version_2_store_gains_the_auto_tracking_tables(store: Store) -> None:
    # as schema 2 left it: no seen table, no cursor kind
    cursor_table = m.FolderCursor._meta.table_name
    store.db.execute_sql(f"DROP TABLE {m.SeenMessage._meta.table_name}")
    store.db.execute_sql(f"ALTER TABLE {cursor_table} DROP COLUMN kind")
    mb = m.Mailbox.create(name="alice", owner="alice@example.com")
    store.db.execute_sql(
        f"INSERT INTO {cursor_table} (mailbox_id, folder, state, processed, updated_at)"
        f" VALUES ({mb.id}, 'Tracked', 'ok', 3, CURRENT_TIMESTAMP)"
    )
    m.SchemaVersion.delete().where(m.SchemaVersion.version > 2).execute()
    assert current_version(store.db) == 2

    assert migrate(store.db) == list(range(3, LATEST + 1))
    # the old cursor is a tracked folder's; the seen table works
    assert m.FolderCursor.get(m.FolderCursor.folder == "Tracked").kind == "tracked"
    m.SeenMessage.create(mailbox=mb, folder="INBOX", source_id="1", verdict="baseline")
    assert m.SeenMessage.select().count() == 1


def test_version_4_store_keeps_its_blob_files_and_stores_small_ones_inline(store: Store) -> None:
    # as schema 4 left it: every blob a file, no data column
    blobs = BlobStore(store.state_dir)
    old = b"an attachment tracked before version 5"
    old_sha = hashlib.sha256(old).hexdigest()
    atomic_write(blobs.path(old_sha), old)
    store.db.execute_sql(f"ALTER TABLE {m.Blob._meta.table_name} DROP COLUMN data")
    store.db.execute_sql(
        f"INSERT INTO {m.Blob._meta.table_name} (sha256, size, created_at)"
        f" VALUES ('{old_sha}', {len(old)}, CURRENT_TIMESTAMP)"
    )
    m.SchemaVersion.delete().where(m.SchemaVersion.version > 4).execute()
    assert current_version(store.db) == 4

    assert migrate(store.db) == list(range(5, LATEST + 1))
    assert m.Blob.get_by_id(old_sha).data is None
    assert blobs.get(old_sha) == old  # from its file
    new = b"an attachment tracked after"
    new_sha = blobs.put(new)
    prepared.insert_ignore(store.db, m.Blob, [BlobStore.row(new_sha, new)])
    assert not blobs.path(new_sha).exists()
    assert blobs.get(new_sha) == new  # from its row
