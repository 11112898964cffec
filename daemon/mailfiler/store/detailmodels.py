"""peewee models of what only a contact or an appointment has (schema 4),
beside its ``Record`` or ``Activity`` (:mod:`~mailfiler.store.models`):
names, phones and postal addresses; times, recurrence and status."""

from __future__ import annotations

import peewee as pw

from mailfiler.store.models import Activity, BaseModel, Record, utcnow


class ContactDetails(BaseModel):
    """What only a contact has, beside its ``Record`` (entity ``contact``).

    A contact stays a Record so that mail resolves to it, it can be the
    regarding of activities and the child of an account, and ``records
    import`` keeps working; a contact without this row is a name and its
    e-mail addresses (those stay in RecordAddress, where resolution looks).
    The company is free text; ``Record.parent`` is the parent account."""

    record = pw.ForeignKeyField(Record, primary_key=True, backref="contact_details", on_delete="CASCADE")
    record_id: int
    #: the vCard UID, kept so that the user's copy is recognised (None: derived from the key)
    uid = pw.CharField(max_length=255, null=True, unique=True)
    given_name = pw.TextField(default="")
    family_name = pw.TextField(default="")
    additional_names = pw.TextField(default="")
    prefix = pw.TextField(default="")
    suffix = pw.TextField(default="")
    company = pw.TextField(default="")
    job_title = pw.TextField(default="")
    notes = pw.TextField(default="")
    #: the CRM user (e-mail) who owns the contact; sync filters say ``owner: mailbox``
    owner = pw.CharField(max_length=320, null=True, index=True)
    updated_at = pw.DateTimeField(default=utcnow)


class ContactPhone(BaseModel):
    id: pw.AutoField[int]
    record = pw.ForeignKeyField(Record, backref="phones", on_delete="CASCADE")
    record_id: int
    position = pw.IntegerField()
    kind = pw.CharField(max_length=32, default="")  # vCard TYPE: work, home, cell, ... (comma-separated)
    number = pw.CharField(max_length=64)

    class Meta:
        indexes = ((("record", "position"), True),)


class PostalAddress(BaseModel):
    """A postal address of a record (a contact may have several)."""

    id: pw.AutoField[int]
    record = pw.ForeignKeyField(Record, backref="postal_addresses", on_delete="CASCADE")
    record_id: int
    position = pw.IntegerField()
    kind = pw.CharField(max_length=32, default="")  # work | home | ...
    po_box = pw.TextField(default="")
    extended = pw.TextField(default="")
    street = pw.TextField(default="")
    locality = pw.TextField(default="")
    region = pw.TextField(default="")
    postal_code = pw.TextField(default="")
    country = pw.TextField(default="")

    class Meta:
        indexes = ((("record", "position"), True),)


class AppointmentDetails(BaseModel):
    """What only an appointment has, beside its ``Activity`` (kind ``appointment``).

    Subject, body, regarding and owner are the activity's; the organizer is
    its ``from`` party and the required and optional attendees its ``to``
    and ``cc`` parties, as Outlook addresses a meeting request.  Times keep
    the form they were given in (``2024-03-31``, ``2024-03-31T09:00:00``,
    ``...Z``, ``...[Europe/Stockholm]``), because a recurring event must
    recur in its own zone across a DST change; ``starts_at``/``ends_at`` are
    the UTC instants of the first occurrence, for sorting and ranges."""

    activity = pw.ForeignKeyField(Activity, primary_key=True, backref="appointment_details", on_delete="CASCADE")
    activity_id: int
    uid = pw.CharField(max_length=255, unique=True)
    start = pw.CharField(max_length=80)
    end = pw.CharField(max_length=80, null=True)
    starts_at = pw.DateTimeField(null=True, index=True)
    ends_at = pw.DateTimeField(null=True)
    all_day = pw.BooleanField(default=False)
    location = pw.TextField(default="")
    status = pw.CharField(max_length=16, default="confirmed")  # tentative | confirmed | cancelled
    #: RRULE value (RFC 5545), e.g. FREQ=WEEKLY;COUNT=10;BYDAY=MO
    rrule = pw.TextField(null=True)
    #: JSON list of cancelled occurrences (EXDATE), in the time form above
    exdates = pw.TextField(null=True)
    #: JSON list of moved or changed occurrences (RECURRENCE-ID overrides): recurrence_id plus the fields they change
    overrides = pw.TextField(null=True)
