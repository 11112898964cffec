"""The ``sync:`` part of the config schema: sync-back of contacts and
appointments (:mod:`mailfiler.sync`), its filters, fields and collections."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from mailfiler.config.base import OptionalRef, Strict, never_track_entry, parse_ref
from mailfiler.config.credentials import Credentials

# --- sync-back of contacts and appointments (mailfiler.sync) -----------------------

SyncDirection = Literal["both", "to_mailbox", "from_mailbox", "none"]
#: the fields a per-field direction can name (mailfiler.sync.items keeps the same lists)
SYNC_CONTACT_FIELDS = ("name", "given_name", "family_name", "additional_names", "prefix", "suffix", "emails",
                       "phones", "company", "job_title", "addresses", "notes")  # fmt: skip
SYNC_APPOINTMENT_FIELDS = ("subject", "start", "end", "location", "status", "body", "organizer", "attendees",
                           "rrule", "exdates", "overrides")  # fmt: skip


class SyncFilter(Strict):
    """One sync filter: every condition given must hold.  A list of filters is
    OR'ed, as Dynamics ORs its sync filters; an empty list syncs nothing."""

    all: bool | None = Field(default=None, description="true: every item.")
    owner: Literal["mailbox"] | list[str] | None = Field(
        default=None, description="mailbox: owned by the mailbox owner; or a list of owner addresses."
    )
    regarding: list[str] | None = Field(
        default=None,
        description="ENTITY:KEY list: appointments regarding one of them; contacts whose parent (or self) is one.",
    )
    party: Literal["mailbox"] | None = Field(
        default=None, description="mailbox: the mailbox owner organizes or attends (appointments) or is the contact."
    )

    @field_validator("regarding")
    @classmethod
    def _refs(cls, v: list[str] | None) -> list[str] | None:
        for ref in v or []:
            parse_ref(ref)
        return v

    @field_validator("owner")
    @classmethod
    def _owners(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            return [never_track_entry(x) for x in v]
        return v

    def model_post_init(self, _context: object) -> None:
        if self.all is None and self.owner is None and self.regarding is None and self.party is None:
            raise ValueError("a sync filter needs at least one of all, owner, regarding, party")


def _default_contact_filters() -> list[SyncFilter]:
    # Dynamics' "My Active Contacts": what the mailbox owner owns
    return [SyncFilter(owner="mailbox")]


def _default_appointment_filters() -> list[SyncFilter]:
    return [SyncFilter(owner="mailbox"), SyncFilter(party="mailbox")]


class SyncFilters(Strict):
    contacts: list[SyncFilter] = Field(default_factory=_default_contact_filters)
    appointments: list[SyncFilter] = Field(default_factory=_default_appointment_filters)


def _check_fields(v: dict[str, str], known: tuple[str, ...]) -> dict[str, str]:
    import difflib

    for name in v:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(known)}"
            raise ValueError(f"unknown field {name!r} ({hint})")
    return v


class SyncFields(Strict):
    """Per-field direction; a field not named syncs both ways."""

    contacts: dict[str, SyncDirection] = Field(default_factory=dict)
    appointments: dict[str, SyncDirection] = Field(default_factory=dict)

    @field_validator("contacts")
    @classmethod
    def _contacts(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_fields(v, SYNC_CONTACT_FIELDS)

    @field_validator("appointments")
    @classmethod
    def _appointments(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_fields(v, SYNC_APPOINTMENT_FIELDS)


class SyncVdir(Strict):
    """Folders of .vcf and .ics files, one item per file (vdirsyncer, khard, khal)."""

    contacts: Path | None = Field(default=None, description="Folder the CRM contacts go to.")
    calendar: Path | None = Field(default=None, description="Folder the CRM appointments go to.")


class SyncDav(Credentials):
    """A CalDAV calendar or CardDAV address book on a server (Radicale, Nextcloud,
    Fastmail, ...), synced with sync tokens (RFC 6578) and ETags.  Logs in with
    the shared credential model: username with password_file or password_command
    (Basic/Digest), or oauth2_token_command (a Bearer token)."""

    url: str = Field(description="The collection's own URL; made on the first sync if it does not exist.")
    username: str | None = Field(default=None, description="Login name (HTTP Basic or Digest auth).")
    ca_file: Path | None = Field(default=None, description="PEM file of the CA(s) to trust instead of the system's.")
    verify: bool = Field(default=True, description="Check the server's TLS certificate; false is for tests only.")
    interval: float | None = Field(
        default=None, ge=5, description="Seconds between sync-token polls of this server; default: sync.interval."
    )
    timeout: float = Field(default=60.0, gt=0, le=600, description="Seconds to wait for any one request.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an https:// URL of a calendar or address book, got {v!r}")
        if parts.username or parts.password:
            raise ValueError("the URL must not hold a user name or password: use username: and password_file:")
        if parts.query or parts.fragment:
            raise ValueError("the URL of a collection has no ?query or #fragment")
        return v.strip()

    def model_post_init(self, _context: object) -> None:
        problem = self.credential_problem(required=False)
        if problem is not None:
            raise ValueError(problem)
        password = self.password_file is not None or self.password_command is not None
        if (self.username is None) != (not password):
            raise ValueError(
                "give username: and password_file: together (or username: and password_command:;"
                " or neither, for a server without login or with oauth2_token_command)"
            )


class TrackedCollection(Strict):
    """An address book or calendar whose every item is tracked into the CRM
    (the collection-level twin of a tracked folder)."""

    contacts: Path | None = Field(default=None, description="A vdir folder of .vcf files.")
    calendar: Path | None = Field(default=None, description="A vdir folder of .ics files.")
    carddav: SyncDav | None = Field(default=None, description="An address book on a CardDAV server.")
    caldav: SyncDav | None = Field(default=None, description="A calendar on a CalDAV server.")
    regarding: OptionalRef = Field(default=None, description="ENTITY:KEY the tracked items are regarding.")

    def model_post_init(self, _context: object) -> None:
        given = [x for x in (self.contacts, self.calendar, self.carddav, self.caldav) if x is not None]
        if len(given) != 1:
            raise ValueError(
                "a tracked collection names exactly one of contacts: or calendar: (vdir folders),"
                " carddav: or caldav: (on a server)"
            )


class Sync(Strict):
    """Sync-back of CRM contacts and appointments to this mailbox's user (see README, Sync-back)."""

    vdir: SyncVdir | None = Field(default=None, description="The vdir target (the embedded default).")
    carddav: SyncDav | None = Field(default=None, description="The address book the CRM contacts go to, on a server.")
    caldav: SyncDav | None = Field(default=None, description="The calendar the CRM appointments go to, on a server.")
    tracked: list[TrackedCollection] = Field(default_factory=list)
    category: str | None = Field(
        default="Tracked", description="A contact or event with this category is tracked into the CRM; null: none."
    )
    filters: SyncFilters = Field(default_factory=SyncFilters)
    fields: SyncFields = Field(default_factory=SyncFields)
    conflicts: Literal["crm-wins", "mailbox-wins", "newest-wins"] = Field(
        default="crm-wins", description="Who wins when both sides changed one field since the last sync."
    )
    on_mailbox_delete: Literal["unlink", "restore", "delete-in-crm"] = Field(
        default="unlink",
        description=(
            "The user deleted a synced item: unlink (the CRM keeps it, it does not come back),"
            " restore (put it back), delete-in-crm (delete it in the CRM too)."
        ),
    )
    interval: float = Field(default=300.0, ge=5, description="Seconds between syncs (a vdir also syncs on change).")

    def model_post_init(self, _context: object) -> None:
        if self.vdir is not None and self.vdir.contacts is not None and self.carddav is not None:
            raise ValueError("the CRM contacts go to one address book: vdir.contacts or carddav, not both")
        if self.vdir is not None and self.vdir.calendar is not None and self.caldav is not None:
            raise ValueError("the CRM appointments go to one calendar: vdir.calendar or caldav, not both")
