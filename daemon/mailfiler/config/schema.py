"""The configuration schema.

Every model forbids unknown keys: a misspelt key is an error, never a
silently ignored setting.  Paths are resolved against the directory of the
config file by the loader, not here.

Checks that span several items (duplicate mailbox names or maildirs, a
folder tracked twice, references to undeclared entity types) live in
:mod:`mailfiler.config.loader`, not in model validators: there they can point
at the offending item's line instead of at the top of the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, create_model, field_validator, model_validator

from mailfiler.backends import registry
from mailfiler.config.base import ENTITY_RE, OptionalRef, Strict, never_track_entry
from mailfiler.config.syncschema import Sync
from mailfiler.util.retrypolicy import RetryPolicy

#: entity types every mailfiler store knows; custom ones are declared in config
BUILTIN_ENTITIES = ("user", "contact", "account", "lead", "opportunity", "case")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _route_domain(v: str) -> str:
    v = v.strip().lower().removeprefix("@")
    if not v or "@" in v or "/" in v or " " in v or v.startswith(".") or v.endswith("."):
        raise ValueError(f"{v!r} is not a domain such as contoso.com")
    return v


def _route_address(v: str) -> str:
    v = v.strip().lower()
    if v.count("@") != 1 or v.startswith("@") or v.endswith("@") or " " in v:
        raise ValueError(f"{v!r} is not an e-mail address")
    return v


def _route_text(v: str) -> str:
    if not v.strip() or any(ord(c) < 32 for c in v):
        raise ValueError(f"{v!r}: give some text, on one line")
    return v


class Route(Strict):
    """Which mail the server rule that mailfiler writes for this folder moves
    here (README: Inbox rules on the server).  The senders (from_domains,
    from_addresses) are alternatives; every other list given must match too."""

    from_domains: list[Annotated[str, AfterValidator(_route_domain)]] = Field(
        default_factory=list, description="Mail from these domains (and their subdomains)."
    )
    from_addresses: list[Annotated[str, AfterValidator(_route_address)]] = Field(
        default_factory=list, description="Mail from these addresses."
    )
    subject_contains: list[Annotated[str, AfterValidator(_route_text)]] = Field(
        default_factory=list, description="...whose subject contains one of these texts."
    )
    to_addresses: list[Annotated[str, AfterValidator(_route_address)]] = Field(
        default_factory=list, description="...sent to (To or Cc) one of these addresses."
    )

    def model_post_init(self, _context: object) -> None:
        if not (self.from_domains or self.from_addresses or self.subject_contains or self.to_addresses):
            raise ValueError(
                "a route needs at least one of from_domains, from_addresses, subject_contains, to_addresses"
            )


class TrackedFolder(Strict):
    folder: str = Field(description='Folder path, always written with "/" (e.g. Tracked/Contoso).')
    regarding: OptionalRef = Field(default=None, description="ENTITY:KEY of the record the folder stands for.")
    route: Route | None = Field(
        default=None, description="A rule on the mail server that moves matching mail into this folder."
    )

    @field_validator("folder")
    @classmethod
    def _folder(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("folder must not be empty")
        if v.startswith("/") or v.endswith("/") or "//" in v:
            raise ValueError(
                f"folder {v!r} must be a relative path like Tracked/Contoso (no leading, trailing or double /)"
            )
        if any(part in (".", "..") for part in v.split("/")):
            raise ValueError(f"folder {v!r} must not contain . or .. segments")
        return v


#: folders auto-tracking never reads: deleted mail, spam, unsent drafts
DEFAULT_AUTO_EXCLUDE = (
    "Trash",
    "Deleted Items",
    "Deleted Messages",
    "Junk",
    "Junk E-mail",
    "Junk Email",
    "Spam",
    "Drafts",
    "Outbox",
    "Templates",
    "Papperskorgen",
    "Skräppost",
    "Utkast",
    "Roskaposti",
    "Poistetut",
    "Luonnokset",
    "Papirkurv",
    "Uønsket mail",
    "Kladder",
)


class AutoTrack(Strict):
    """Tracking of mail outside tracked folders (the Inbox and any watched folder)."""

    policy: Literal["none", "replies", "known", "all"] = Field(
        default="replies",
        description=(
            "none: only what rules track; replies: replies to tracked mail (the default, as in Dynamics);"
            " known: also mail from or to records; all: every message."
        ),
    )
    folders: list[str] = Field(
        default_factory=lambda: ["**"],
        description="Folder patterns to watch (** any depth, * one segment); [] watches none.",
    )
    exclude: list[str] = Field(
        default_factory=lambda: list(DEFAULT_AUTO_EXCLUDE),
        description="Folder patterns never watched (matched case-insensitively, also as parents: Trash/**).",
    )

    @field_validator("folders", "exclude")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        from mailfiler.util.patterns import PatternError, compile_folder

        for pattern in v:
            try:
                compile_folder(pattern)
            except PatternError as exc:
                raise ValueError(str(exc)) from None
        return v


def _tag_name(v: str) -> str:
    # what every backend needs; the backend's own rules (an IMAP keyword is one atom,
    # an Outlook category may hold spaces) are checked by the loader (Backend.tag_name)
    if not v.strip() or len(v) > 255 or any(ord(c) < 32 for c in v):
        raise ValueError(f"{v!r} cannot be a tag: 1 to 255 characters, no control characters")
    return v


TagName = Annotated[str, AfterValidator(_tag_name)]


class TrackTags(Strict):
    """Track by tag (issue 20): the Track button without an add-in.  Any message
    the user tags is tracked wherever it is (IMAP: a keyword, as Thunderbird's
    tags are; EWS and Graph: an Outlook category)."""

    tag: TagName = Field(
        default="CRM", description="The tag that tracks a message; the rules and correlation decide its regarding."
    )
    set_regarding_prefix: TagName | None = Field(
        default="CRM:",
        description="Tags that start with it name the regarding record (CRM:account:contoso), as Set Regarding"
        " does; null: off.",
    )
    untrack_tag: TagName | None = Field(
        default="CRM-untrack",
        description="The tag that untracks a message (only for the mailbox that tracked it); removing the tag"
        " never does.  null: off.",
    )
    untrack_folder: str | None = Field(
        default=None, description="A folder whose messages are untracked (only for the mailbox that tracked them)."
    )
    interval: float = Field(
        default=10.0,
        gt=0,
        le=86400,
        description="Seconds between tag passes besides those a pushed flag change starts (the server does not"
        " always push one).",
    )

    @model_validator(mode="after")
    def _distinct(self) -> TrackTags:
        prefix = (self.set_regarding_prefix or "").lower()
        names = [n for n in (self.tag, self.untrack_tag) if n]
        if self.untrack_tag and self.untrack_tag.lower() == self.tag.lower():
            raise ValueError(f"tag and untrack_tag are both {self.tag!r}")
        for name in names:
            if prefix and name.lower().startswith(prefix):
                raise ValueError(f"{name!r} starts with set_regarding_prefix {self.set_regarding_prefix!r}")
        return self


class ManageSieve(Strict):
    """The mailbox's ManageSieve server (RFC 5804); the login is the imap: one."""

    host: str | None = Field(default=None, description="Default: the imap: host.")
    port: int = Field(default=4190, ge=1, le=65535)
    tls: Literal["starttls", "none"] = Field(default="starttls", description="none: only for a loopback host.")


class ServerRules(Strict):
    """Inbox rules on the mail server: read, checked against tracking, and
    mailfiler's own (from each folder's route:) kept in step."""

    managesieve: ManageSieve = Field(default_factory=ManageSieve)
    script: str = Field(
        default="mailfiler",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The Sieve script mailfiler writes its rules into (the active one includes it).",
    )
    interval: float = Field(default=300.0, ge=5, description="Seconds between the daemon's reads of the rules.")


class Retry(Strict):
    """How a mailbox's connections are retried after a failure (util/retrypolicy.py)."""

    initial: float = Field(default=1.0, gt=0, le=3600, description="Seconds before the first retry.")
    max: float = Field(default=60.0, gt=0, le=86400, description="Longest wait between retries (seconds).")
    healthy_after: float = Field(
        default=60.0,
        gt=0,
        le=86400,
        description="Seconds a connection must work before the next failure waits `initial` again.",
    )

    @model_validator(mode="after")
    def _order(self) -> Retry:
        if self.max < self.initial:
            raise ValueError(f"retry.max ({self.max:g}) is shorter than retry.initial ({self.initial:g})")
        return self

    def policy(self) -> RetryPolicy:
        return RetryPolicy(initial=self.initial, max=self.max, healthy_after=self.healthy_after)


class MailboxBase(Strict):
    """What every mailbox has, whatever its backend.  The backend is named by
    one key, a kind of :mod:`mailfiler.backends` (``maildir:``, ``imap:``...),
    added to :class:`Mailbox` from the registry."""

    name: str = Field(description="Short unique name of the mailbox (used in CLI output and logs).")
    owner: str = Field(description="E-mail address of the CRM user whose mailbox this is.")
    layout: Literal["maildir++", "fs"] = Field(
        default="maildir++",
        description="maildir++ (Dovecot/Courier: .Folder.Sub) or fs (nested directories).",
    )
    create_missing_folders: bool = Field(
        default=False, description="Create tracked folders missing inside the mailbox (never the mailbox root)."
    )
    tracked_folders: list[TrackedFolder] = Field(default_factory=list)
    auto_track: AutoTrack = Field(default_factory=AutoTrack)
    never_track: list[str] = Field(
        default_factory=list, description="Addresses and @domains whose mail is never auto-tracked."
    )
    sync: Sync | None = Field(default=None, description="Sync-back of contacts and appointments (issue 5).")
    server_rules: ServerRules | None = Field(
        default=None, description="Inbox rules on the server (default settings when a tracked folder has a route:)."
    )
    retry: Retry = Field(default_factory=Retry, description="Reconnects and sync retries: capped, jittered backoff.")
    track_tags: TrackTags | None = Field(
        default=None,
        description="Track any message the user tags (true, or {tag: CRM, set_regarding_prefix: 'CRM:',"
        " untrack_tag: CRM-untrack, untrack_folder: Untrack}); off by default.",
    )

    @field_validator("track_tags", mode="before")
    @classmethod
    def _track_tags_switch(cls, value: object) -> object:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @model_validator(mode="before")
    @classmethod
    def _folders_as_listed(cls, data: object) -> object:
        # a tracked or untrack folder spelled as the backend lists it (Inbox/X -> INBOX/X on
        # Exchange), so that status, auto-tracking and the server-rules check see one name
        if not isinstance(data, dict):
            return data
        spell = next((b.folder_name for kind, b in registry().items() if kind in data and b.folder_name), None)
        if spell is None:
            return data
        data = dict(data)
        folders = data.get("tracked_folders")
        if isinstance(folders, list):
            named = [isinstance(tf, dict) and isinstance(tf.get("folder"), str) for tf in folders]
            data["tracked_folders"] = [
                {**tf, "folder": spell(tf["folder"])} if ok else tf for tf, ok in zip(folders, named, strict=True)
            ]
        tags = data.get("track_tags")
        if isinstance(tags, dict) and isinstance(tags.get("untrack_folder"), str):
            data["track_tags"] = {**tags, "untrack_folder": spell(tags["untrack_folder"])}
        return data

    @model_validator(mode="after")
    def _one_backend(self) -> MailboxBase:
        given = [kind for kind in registry() if getattr(self, kind, None) is not None]
        if len(given) != 1:
            kinds = ", ".join(f"{k}:" for k in registry())
            got = f" (got {', '.join(f'{k}:' for k in given)})" if given else ""
            raise ValueError(f"give exactly one backend: one of {kinds}{got}")
        return self

    @property
    def backend(self) -> str:
        """The kind of the mailbox's backend (its key in the registry)."""
        return next(kind for kind in registry() if getattr(self, kind, None) is not None)

    @property
    def backend_config(self) -> Any:
        """The value under the backend's key."""
        return getattr(self, self.backend)

    @property
    def location(self) -> str:
        return registry()[self.backend].location(self)

    @field_validator("never_track")
    @classmethod
    def _never(cls, v: list[str]) -> list[str]:
        return [never_track_entry(x) for x in v]

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"mailbox name {v!r} may hold letters, digits, '.', '_' and '-' only")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        if "@" not in v or v.startswith("@") or v.endswith("@"):
            raise ValueError(f"owner {v!r} is not an e-mail address")
        return v.strip().lower()


if TYPE_CHECKING:
    # the type checker sees the common keys; a backend's own key is read as backend_config
    Mailbox = MailboxBase
else:
    #: a mailbox config: the common keys plus one optional key per registered backend
    Mailbox = create_model(
        "Mailbox",
        __base__=MailboxBase,
        __module__=__name__,
        **{kind: (b.config | None, Field(default=None, description=b.description)) for kind, b in registry().items()},
    )


class EntityType(Strict):
    name: str = Field(description="Lower-case name used in ENTITY:KEY references.")
    label: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ENTITY_RE.match(v):
            raise ValueError(f"entity type {v!r} must be lower-case letters, digits and _")
        if v in BUILTIN_ENTITIES:
            raise ValueError(f"entity type {v!r} is built in; declare only custom types")
        return v


class RecordSeed(Strict):
    """A record declared inline in the config; upserted at start-up."""

    entity: str
    key: str
    name: str
    emails: list[str] = Field(default_factory=list)
    domains: list[str] = Field(default_factory=list)
    parent: OptionalRef = Field(default=None, description="ENTITY:KEY of the parent record.")


class Limits(Strict):
    max_message_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, description="Larger messages are shunted with reason too-large."
    )
    backfill_memory: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "Bytes of mail a scan (backfill, catch-up) holds at once, read ahead, parsed and waiting"
            " for their commit; batches are cut to a quarter of it. A message larger than that is"
            " held alone. The daemon needs about 100 MiB, plus this, plus twice max_message_bytes."
        ),
    )
    parse_processes: int | Literal["auto"] = Field(
        default="auto",
        description=(
            "Helper processes that parse a backfill's messages while the worker stores others"
            " (0: parse in the daemon; auto: one per spare CPU core, at most 3)."
        ),
    )

    @field_validator("parse_processes")
    @classmethod
    def _processes(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 32:
            raise ValueError("parse_processes must be auto or a number from 0 to 32")
        return v


class Tracking(Strict):
    ambiguous_addresses: Literal["all", "none"] = Field(
        default="all", description="When several records share an address: link all of them, or none."
    )
    never_track: list[str] = Field(
        default_factory=list, description="Addresses and @domains never auto-tracked in any mailbox."
    )

    @field_validator("never_track")
    @classmethod
    def _never(cls, v: list[str]) -> list[str]:
        return [never_track_entry(x) for x in v]


class TokenSettings(Strict):
    enabled: bool = Field(default=False, description="Correlate by a token such as CRM:0001234 in the subject.")
    prefix: str = Field(default="CRM", min_length=1, max_length=20, pattern=r"^[A-Za-z0-9_-]+$")
    old_prefixes: list[str] = Field(default_factory=list, description="Earlier prefixes that still correlate.")


class SmartSettings(Strict):
    enabled: bool = Field(default=False, description="Match on the normalised subject plus shared addresses.")
    min_shared_addresses: int = Field(default=2, ge=1)
    days: int = Field(default=90, ge=1, description="Only activities first seen this many days back are candidates.")


class CorrelationSettings(Strict):
    in_reply_to: bool = True
    references: bool = True
    forwards_as_replies: bool = Field(
        default=True, description="Treat a forward (Fwd:, VS:, WG: ...) with In-Reply-To as a reply."
    )
    token: TokenSettings = Field(default_factory=TokenSettings)
    smart: SmartSettings = Field(default_factory=SmartSettings)


class Config(Strict):
    database: str = Field(description="sqlite:///PATH or postgresql://user@host:port/db")
    state_dir: Path = Field(description="Attachments and shunted messages live here.")
    database_password_file: str | None = Field(
        default=None,
        description="File holding the PostgreSQL password; ${CREDENTIALS_DIRECTORY} is expanded at start.",
    )
    entities: list[EntityType] = Field(default_factory=list, description="Custom entity types.")
    records: list[RecordSeed] = Field(default_factory=list, description="Records upserted at start-up.")
    limits: Limits = Field(default_factory=Limits)
    tracking: Tracking = Field(default_factory=Tracking)
    correlation: CorrelationSettings = Field(default_factory=CorrelationSettings)
    rules: list[Path] = Field(default_factory=list, description="Rule files or folders (read from issue 3 on).")
    mailboxes: list[Mailbox] = Field(default_factory=list)

    @field_validator("database")
    @classmethod
    def _database(cls, v: str) -> str:
        if not (v.startswith("sqlite:///") or v.startswith(("postgresql://", "postgres://"))):
            raise ValueError("database must be a URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
        return v

    def entity_types(self) -> list[str]:
        return list(BUILTIN_ENTITIES) + [e.name for e in self.entities]
