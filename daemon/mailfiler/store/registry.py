"""The model registry: every table of the CRM store, in the order they are
created (a table after those it refers to).  A new model module's tables are
added here; migration 1 creates them all, the later migrations their own."""

from __future__ import annotations

from mailfiler.store.detailmodels import AppointmentDetails, ContactDetails, ContactPhone, PostalAddress
from mailfiler.store.models import (
    Activity,
    ActivityParty,
    Attachment,
    BaseModel,
    Blob,
    DaemonState,
    FolderCursor,
    Location,
    Mailbox,
    Record,
    RecordAddress,
    SchemaVersion,
    SeenMessage,
    Shunt,
    TagCursor,
    TrackedFolder,
)
from mailfiler.store.syncmodels import SyncCollection, SyncItem, SyncShunt

ALL_MODELS: list[type[BaseModel]] = [
    SchemaVersion,
    Record,
    RecordAddress,
    Mailbox,
    TrackedFolder,
    Activity,
    ActivityParty,
    Blob,
    Attachment,
    Location,
    FolderCursor,
    TagCursor,
    Shunt,
    SeenMessage,
    DaemonState,
    ContactDetails,
    ContactPhone,
    PostalAddress,
    AppointmentDetails,
    SyncCollection,
    SyncItem,
    SyncShunt,
]
