"""peewee models of the CRM store: records, mailboxes, activities and what
tracking keeps beside them (locations, cursors, shunts), and the base every
table shares.  Schema 4's tables are in :mod:`~mailfiler.store.detailmodels`
(contacts and appointments) and :mod:`~mailfiler.store.syncmodels`
(sync-back); :mod:`~mailfiler.store.registry` lists them all.

Natural keys carry unique indexes so that every write can be an idempotent
upsert: replaying a message after a crash finds its rows instead of making
new ones.  Times are stored as UTC.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any, cast

import peewee as pw

database_proxy = pw.DatabaseProxy()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def with_aliases(query: Iterable[object]) -> Iterable[Any]:
    """The rows of a query that selects aliased columns (``COUNT(...).alias("n")``):
    the peewee stubs know only a model's own fields."""
    return cast("Iterable[Any]", query)


# Each model declares, as bare annotations, the attributes peewee makes itself: the
# implicit primary key (``id: pw.AutoField[int]``) and each foreign key's column
# (``mailbox_id: int``).  They only tell the type checker; peewee ignores annotations.
class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


def delete_from(model: type[BaseModel]) -> pw.ModelDelete:
    """``model.delete()``, built as peewee builds it.  types-peewee 4.5.1.20260909 is
    served in two builds under one version: one types ``Model.delete`` on ``Self``, which
    mypy rejects when reached through the class ("ambiguous"); this checks under both."""
    return pw.ModelDelete(model)


class SchemaVersion(BaseModel):
    id: pw.AutoField[int]
    version = pw.IntegerField()
    applied_at = pw.DateTimeField(default=utcnow)
    description = pw.TextField(default="")


class Record(BaseModel):
    """A CRM record of any entity type (account, contact, custom...)."""

    id: pw.AutoField[int]
    entity = pw.CharField(max_length=64)
    key = pw.CharField(max_length=255)
    name = pw.TextField()
    parent = pw.ForeignKeyField("self", null=True, backref="children", on_delete="SET NULL")
    parent_id: int | None
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    # backrefs (declared like id, see BaseModel)
    addresses: pw.ModelSelect[RecordAddress]
    children: pw.ModelSelect[Record]

    class Meta:
        indexes = ((("entity", "key"), True),)

    @property
    def ref(self) -> str:
        return f"{self.entity}:{self.key}"


class RecordAddress(BaseModel):
    """An e-mail address or a domain that identifies a record."""

    id: pw.AutoField[int]
    record = pw.ForeignKeyField(Record, backref="addresses", on_delete="CASCADE")
    record_id: int
    kind = pw.CharField(max_length=8)  # "email" | "domain"
    value = pw.CharField(max_length=320)  # lower-cased

    class Meta:
        indexes = ((("record", "kind", "value"), True), (("kind", "value"), False))


class Mailbox(BaseModel):
    id: pw.AutoField[int]
    name = pw.CharField(max_length=128, unique=True)
    #: "host:config path" whose config declares this mailbox: daemons sharing
    #: one PostgreSQL store retire only mailboxes they manage themselves
    managed_by = pw.CharField(max_length=255, default="")
    owner = pw.CharField(max_length=320)
    backend = pw.CharField(max_length=16, default="maildir")
    location = pw.TextField(default="")
    owner_record = pw.ForeignKeyField(Record, null=True, on_delete="SET NULL")
    owner_record_id: int | None
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)


class TrackedFolder(BaseModel):
    """A folder mapped to (optionally) the record it stands for."""

    id: pw.AutoField[int]
    mailbox = pw.ForeignKeyField(Mailbox, backref="tracked_folders", on_delete="CASCADE")
    mailbox_id: int
    folder = pw.TextField()
    regarding_ref = pw.CharField(max_length=320, null=True)  # "entity:key" as configured
    active = pw.BooleanField(default=True)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("mailbox", "folder"), True),)


class Activity(BaseModel):
    """An email activity: one per message, whatever holds it."""

    id: pw.AutoField[int]
    message_id = pw.CharField(max_length=998, unique=True)
    synthetic_id = pw.BooleanField(default=False)
    kind = pw.CharField(max_length=16, default="email")
    subject = pw.TextField(default="")
    sent_at = pw.DateTimeField(null=True)
    first_seen_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)
    direction = pw.CharField(max_length=8)  # "incoming" | "outgoing"
    body_text = pw.TextField(default="")
    body_html = pw.TextField(null=True)
    size = pw.IntegerField(default=0)
    in_reply_to = pw.TextField(null=True)
    references = pw.TextField(null=True)
    regarding = pw.ForeignKeyField(Record, null=True, backref="activities", on_delete="SET NULL")
    regarding_id: int | None
    # how the regarding was decided: "folder", later "rule:NAME", "in-reply-to"...
    correlation = pw.CharField(max_length=255, null=True)
    correlation_folder = pw.ForeignKeyField(TrackedFolder, null=True, on_delete="SET NULL")
    correlation_folder_id: int | None
    owner_mailbox = pw.ForeignKeyField(Mailbox, null=True, on_delete="SET NULL")
    owner_mailbox_id: int | None
    parse_defects = pw.TextField(null=True)
    # schema 2: correlation and rule results
    #: normalised subject (no Re:/Fwd: prefixes, folded case and space) for smart matching
    subject_key = pw.CharField(max_length=255, null=True, index=True)
    #: the tracked activity this one was correlated to (In-Reply-To, References, token, smart)
    correlated_activity = pw.ForeignKeyField("self", null=True, backref="correlated", on_delete="SET NULL")
    correlated_activity_id: int | None
    categories = pw.TextField(null=True)  # comma-separated, set by rules
    owner = pw.CharField(max_length=320, null=True)  # set by rules; default: the owner mailbox's user
    # schema 7: untracked by its owner (a tag or the untrack folder: issue 20); the row stays
    untracked_at = pw.DateTimeField(null=True)
    #: why, as `activities` shows it ("untrack tag CRM-untrack in Archive")
    untracked_reason = pw.TextField(null=True)


class ActivityParty(BaseModel):
    id: pw.AutoField[int]
    activity = pw.ForeignKeyField(Activity, backref="parties", on_delete="CASCADE")
    activity_id: int
    role = pw.CharField(max_length=8)  # from | sender | to | cc | bcc | reply_to
    address = pw.CharField(max_length=320)
    display_name = pw.TextField(default="")
    record = pw.ForeignKeyField(Record, null=True, on_delete="SET NULL")
    record_id: int | None

    class Meta:
        indexes = ((("address",), False),)


# NULLs are distinct in a plain unique index, so an unresolved party could be
# inserted twice by two daemons at once; COALESCE makes "no record" one value
ActivityParty.add_index(
    pw.SQL(
        "CREATE UNIQUE INDEX IF NOT EXISTS activity_party_unique"
        " ON activity_party (activity_id, role, address, COALESCE(record_id, 0))"
    )
)


class Blob(BaseModel):
    """An attachment's bytes, by SHA-256: in ``data`` up to ``blobs.INLINE_MAX``,
    else (``data`` NULL) a file under ``state_dir/blobs`` (see :mod:`mailfiler.store.blobs`)."""

    sha256 = pw.CharField(max_length=64, primary_key=True)
    size = pw.BigIntegerField()
    created_at = pw.DateTimeField(default=utcnow)
    data = pw.BlobField(null=True)


class Attachment(BaseModel):
    id: pw.AutoField[int]
    activity = pw.ForeignKeyField(Activity, backref="attachments", on_delete="CASCADE")
    activity_id: int
    position = pw.IntegerField()
    filename = pw.TextField(default="")
    content_type = pw.CharField(max_length=255)
    size = pw.BigIntegerField()
    blob = pw.ForeignKeyField(Blob, on_delete="RESTRICT")
    blob_id: int

    class Meta:
        indexes = ((("activity", "position"), True),)


class Location(BaseModel):
    """Where a message sits: mailbox, folder and the backend's id for it.

    Rows are kept when the message leaves (``gone_at``) so the history of
    moves stays visible."""

    id: pw.AutoField[int]
    activity = pw.ForeignKeyField(Activity, backref="locations", on_delete="CASCADE")
    activity_id: int
    mailbox = pw.ForeignKeyField(Mailbox, on_delete="CASCADE")
    mailbox_id: int
    folder = pw.TextField()
    source_id = pw.CharField(max_length=512)
    first_seen_at = pw.DateTimeField(default=utcnow)
    gone_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("mailbox", "folder", "source_id"), True),)


class FolderCursor(BaseModel):
    """Per-folder sync state, committed with the messages it covers.

    ``token`` is the backend's opaque cursor (for IMAP: UIDVALIDITY, last
    UID, HIGHESTMODSEQ as JSON); Maildir needs none because its locations
    are the cursor."""

    id: pw.AutoField[int]
    mailbox = pw.ForeignKeyField(Mailbox, on_delete="CASCADE")
    mailbox_id: int
    folder = pw.TextField()
    token = pw.TextField(null=True)
    state = pw.CharField(max_length=16, default="new")  # new | syncing | ok | missing | error
    last_sync_at = pw.DateTimeField(null=True)
    last_error = pw.TextField(null=True)
    #: the error's code (``login-refused``, ``server-unreachable``...): status shows its hint
    error_code = pw.CharField(max_length=32, null=True)
    processed = pw.BigIntegerField(default=0)
    updated_at = pw.DateTimeField(default=utcnow)
    #: tracked (a tracked folder) | watched (auto-tracking reads it) | unwatched (no longer)
    kind = pw.CharField(max_length=16, default="tracked")

    class Meta:
        indexes = ((("mailbox", "folder"), True),)


class TagCursor(BaseModel):
    """A folder's tag cursor (issue 20: track by tag), committed with the
    tracking it covers: the backend's opaque token (IMAP: UIDVALIDITY and the
    HIGHESTMODSEQ whose flag changes are handled).  One row per folder a tag
    pass has looked at, any folder of the mailbox, tracked or not."""

    id: pw.AutoField[int]
    mailbox = pw.ForeignKeyField(Mailbox, on_delete="CASCADE")
    mailbox_id: int
    folder = pw.TextField()
    token = pw.TextField(null=True)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("mailbox", "folder"), True),)


class Shunt(BaseModel):
    """A message that could not be tracked, kept aside with its reason."""

    id: pw.AutoField[int]
    mailbox = pw.ForeignKeyField(Mailbox, on_delete="CASCADE")
    mailbox_id: int
    folder = pw.TextField()
    source_id = pw.CharField(max_length=512)
    message_id = pw.CharField(max_length=998, null=True)
    reason = pw.CharField(max_length=64)
    detail = pw.TextField(default="")
    raw_path = pw.TextField(null=True)  # relative to state_dir
    size = pw.BigIntegerField(default=0)
    attempts = pw.IntegerField(default=1)
    created_at = pw.DateTimeField(default=utcnow)
    last_attempt_at = pw.DateTimeField(default=utcnow)
    resolved_at = pw.DateTimeField(null=True)

    class Meta:
        indexes = ((("mailbox", "folder", "source_id"), True),)


class SeenMessage(BaseModel):
    """A message outside tracked folders that auto-tracking looked at and did
    not track, so that it is judged once, not at every scan.

    ``verdict``: ``baseline`` (in the folder when auto-tracking first saw
    it: existing mail is not tracked retroactively) or ``skipped`` (judged;
    ``reason`` says why).  The row goes when the message leaves the folder."""

    id: pw.AutoField[int]
    mailbox = pw.ForeignKeyField(Mailbox, on_delete="CASCADE")
    mailbox_id: int
    folder = pw.TextField()
    source_id = pw.CharField(max_length=512)
    message_id = pw.CharField(max_length=998, null=True)
    verdict = pw.CharField(max_length=16)
    reason = pw.TextField(default="")
    seen_at = pw.DateTimeField(default=utcnow)

    class Meta:
        indexes = ((("mailbox", "folder", "source_id"), True),)


class DaemonState(BaseModel):
    """Small key/value facts the daemon publishes for ``mailfiler status``."""

    key = pw.CharField(max_length=128, primary_key=True)
    value = pw.TextField()
    updated_at = pw.DateTimeField(default=utcnow)
