"""Prebuilt SQL (store.prepared, tracking.txsql) writes and reads what peewee's
own queries would, on both backends."""

from __future__ import annotations

import datetime as dt

from mailfiler.store import models as m
from mailfiler.store import prepared
from mailfiler.tracking import txsql
from tests.store.helpers import Store

NOW = dt.datetime(2024, 1, 2, 9, 15, 30, 123456)


def _mailbox() -> m.Mailbox:
    return m.Mailbox.create(name="anna", owner="anna@example.com")


def test_insert_fills_defaults_and_returns_the_id(store: Store) -> None:
    values = {"message_id": "<a@x>", "subject": "Hej", "direction": "incoming", "sent_at": NOW, "regarding": None}
    made = prepared.create(store.db, m.Activity, values)
    via_peewee = m.Activity.create(message_id="<b@x>", subject="Hej", direction="incoming", sent_at=NOW)
    assert made.id is not None and made.id != via_peewee.id
    got = m.Activity.get_by_id(made.id)
    ref = m.Activity.get_by_id(via_peewee.id)
    for field in m.Activity._meta.sorted_fields:
        if field.name in ("id", "message_id", "first_seen_at", "updated_at"):
            continue
        assert getattr(got, field.name) == getattr(ref, field.name), field.name
    assert got.sent_at == NOW
    assert got.first_seen_at is not None  # callable default applied
    assert made.kind == "email" and not made.is_dirty()


def test_insert_ignore_skips_rows_that_hit_a_unique_index(store: Store) -> None:
    prepared.insert_ignore(store.db, m.Blob, [{"sha256": "ab" * 32, "size": 3}])
    prepared.insert_ignore(store.db, m.Blob, [{"sha256": "ab" * 32, "size": 99}, {"sha256": "cd" * 32, "size": 4}])
    assert {(b.sha256, b.size) for b in m.Blob.select()} == {("ab" * 32, 3), ("cd" * 32, 4)}
    prepared.insert_ignore(store.db, m.Blob, [])


def test_instance_reads_a_row_as_peewee_does(store: Store) -> None:
    mb = _mailbox()
    a = m.Activity.create(message_id="<a@x>", direction="incoming", sent_at=NOW, owner_mailbox=mb)
    read = txsql.activity(store.db, a.id)
    ref = m.Activity.get_by_id(a.id)
    assert read.__data__ == ref.__data__
    assert not read.is_dirty()
    assert read.owner_mailbox.name == "anna"  # foreign keys still load lazily


def test_lookup_finds_the_activity_and_the_location_apart_or_together(store: Store) -> None:
    mb = _mailbox()
    assert txsql.lookup(store.db, mb.id, "INBOX", "1", "<a@x>") == txsql.Seen(None, None, None, False)
    a = m.Activity.create(message_id="<a@x>", direction="incoming")
    assert txsql.lookup(store.db, mb.id, "INBOX", "1", "<a@x>") == txsql.Seen(a.id, None, None, False)
    b = m.Activity.create(message_id="<b@x>", direction="incoming")
    loc = m.Location.create(activity=b, mailbox=mb, folder="INBOX", source_id="1", gone_at=NOW)
    assert txsql.lookup(store.db, mb.id, "INBOX", "1", "<a@x>") == txsql.Seen(a.id, loc.id, b.id, True)
    assert txsql.lookup(store.db, mb.id, "INBOX", "1", "<c@x>") == txsql.Seen(None, loc.id, b.id, True)
    txsql.reattach_location(store.db, loc.id, a.id)
    assert txsql.lookup(store.db, mb.id, "INBOX", "1", "<a@x>") == txsql.Seen(a.id, loc.id, a.id, False)
    assert txsql.lookup(store.db, mb.id, "Sent", "1", "<a@x>").location_id is None
    assert txsql.activity_id(store.db, "<b@x>") == b.id
    assert txsql.activity_id(store.db, "<c@x>") is None


def test_bump_cursor_creates_then_counts_and_saves_the_token(store: Store) -> None:
    mb = _mailbox()

    def cursor() -> m.FolderCursor:
        return m.FolderCursor.get((m.FolderCursor.mailbox == mb) & (m.FolderCursor.folder == "INBOX"))

    txsql.bump_cursor(store.db, mb.id, "INBOX", "tracked", NOW, None, count=True)
    assert (cursor().processed, cursor().token, cursor().last_sync_at, cursor().state) == (1, None, NOW, "syncing")
    txsql.bump_cursor(store.db, mb.id, "INBOX", "tracked", NOW, "t2", count=True)
    assert (cursor().processed, cursor().token) == (2, "t2")
    later = NOW + dt.timedelta(seconds=5)
    txsql.bump_cursor(store.db, mb.id, "INBOX", "tracked", later, "t3", count=False)
    assert (cursor().processed, cursor().token, cursor().updated_at, cursor().last_sync_at) == (2, "t3", later, NOW)
    txsql.bump_cursor(store.db, mb.id, "Other", "watched", NOW, "t1", count=False)
    other = m.FolderCursor.get(m.FolderCursor.folder == "Other")
    assert (other.processed, other.token, other.kind, other.last_sync_at) == (0, "t1", "watched", None)
