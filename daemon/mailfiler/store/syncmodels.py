"""peewee models of sync-back (schema 4, :mod:`mailfiler.sync`): the address
books and calendars kept in step, each item's last agreed state, and the items
the sync could not read."""

from __future__ import annotations

import peewee as pw

from mailfiler.store.models import Activity, BaseModel, Mailbox, Record, utcnow


class SyncCollection(BaseModel):
    """An address book or calendar of a mailbox that sync-back keeps in step.

    ``role``: ``main`` receives the CRM items the mailbox's sync filters
    select; ``tracked`` only brings the user's items into the CRM (the
    collection-level twin of a tracked folder)."""

    id: pw.AutoField[int]
    mailbox = pw.ForeignKeyField(Mailbox, backref="sync_collections", on_delete="CASCADE")
    mailbox_id: int
    kind = pw.CharField(max_length=16)  # contacts | calendar
    backend = pw.CharField(max_length=16)  # vdir | caldav | carddav
    location = pw.TextField()
    role = pw.CharField(max_length=16, default="main")
    active = pw.BooleanField(default=True)
    state = pw.CharField(max_length=16, default="new")  # new | ok | error | stopped
    last_sync_at = pw.DateTimeField(null=True)
    last_error = pw.TextField(null=True)
    #: the backend's sync token (RFC 6578), when it has one
    token = pw.TextField(null=True)
    items = pw.IntegerField(default=0)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("mailbox", "kind", "location"), True),)


class SyncItem(BaseModel):
    """The sync status: the last state both sides agreed on, per item.

    ``state``: ``linked`` (a CRM item and the user's copy), ``unlinked`` (the
    user deleted their copy and ``on_mailbox_delete: unlink`` keeps it from
    coming back; no href) or ``ignored`` (the user's own item, not tracked;
    remembered by etag so it is read again only when it changes).  ``base``
    is the agreed content (JSON of the synced fields), the base of the
    three-way merge; the hashes say cheaply whether a side moved from it."""

    id: pw.AutoField[int]
    collection = pw.ForeignKeyField(SyncCollection, backref="items_status", on_delete="CASCADE")
    collection_id: int
    state = pw.CharField(max_length=16, default="linked")
    href = pw.CharField(max_length=512, null=True)
    etag = pw.CharField(max_length=255, null=True)
    uid = pw.CharField(max_length=255, null=True)
    record = pw.ForeignKeyField(Record, null=True, on_delete="SET NULL")
    record_id: int | None
    activity = pw.ForeignKeyField(Activity, null=True, on_delete="SET NULL")
    activity_id: int | None
    #: set on first link: a null record/activity with this set means the CRM item was deleted
    crm_id = pw.IntegerField(null=True)
    crm_hash = pw.CharField(max_length=64, null=True)
    mbox_hash = pw.CharField(max_length=64, null=True)
    base = pw.TextField(default="{}")
    synced_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("collection", "href"), True), (("collection", "uid"), False))


class SyncShunt(BaseModel):
    """A vCard or iCalendar item the sync could not read, with its reason.

    Kept apart from the mail shunt: ``shunt retry`` would try to track it
    as a message.  The sync reads the item again when its etag changes and
    resolves the row when it parses or goes away."""

    id: pw.AutoField[int]
    collection = pw.ForeignKeyField(SyncCollection, backref="shunts", on_delete="CASCADE")
    collection_id: int
    href = pw.CharField(max_length=512)
    etag = pw.CharField(max_length=255, null=True)
    reason = pw.CharField(max_length=64)
    detail = pw.TextField(default="")
    raw_path = pw.TextField(null=True)  # relative to state_dir
    attempts = pw.IntegerField(default=1)
    created_at = pw.DateTimeField(default=utcnow)
    last_attempt_at = pw.DateTimeField(default=utcnow)
    resolved_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("collection", "href"), True),)
