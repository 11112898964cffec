"""Build the daemon's working state from a validated config: open the
store, migrate it, and bring mailboxes, tracked folders and seed records in
line with the config (re-linking folders whose regarding changed)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import peewee as pw

from mailfiler.backends import make_source
from mailfiler.config.credentials import config_secret_warnings
from mailfiler.config.schema import Config
from mailfiler.config.schema import Mailbox as MailboxConfig
from mailfiler.rules import RuleSet, load_rules
from mailfiler.service.readahead import batch_bytes
from mailfiler.sources.base import Source
from mailfiler.store import db as storedb
from mailfiler.store.blobs import BlobStore
from mailfiler.store.migrations import migrate
from mailfiler.store.models import Mailbox, RecordAddress, TrackedFolder, utcnow
from mailfiler.store.records import RecordInput, ensure_user, get_by_ref, upsert_records
from mailfiler.tracking.autotrack import FolderFilter, NeverTrack
from mailfiler.tracking.context import FolderContext, MailboxContext, precedence
from mailfiler.tracking.folders import relink_folder
from mailfiler.tracking.parsepool import ParsePool, parse_workers
from mailfiler.tracking.pipeline import Tracker
from mailfiler.tracking.shunt import ShuntStore
from mailfiler.tracking.tags import TagSettings
from mailfiler.util.retrypolicy import RetryPolicy
from mailfiler.util.secrets import read_secret
from mailfiler.util.text import plural

log = logging.getLogger("mailfiler.runtime")


def open_store(config: Config) -> pw.Database:
    """Connect to the store named by the config and migrate it."""
    password = None
    if config.database_password_file:
        password = read_secret(config.database_password_file, what="database_password_file")
    elif urlparse(config.database).password:
        log.warning(
            "the database URL holds a password; put it in database_password_file instead",
            extra={"event": "insecure-config"},
        )
    db = storedb.connect(config.database, password=password)
    migrate(db)
    return db


@dataclass
class MailboxRuntime:
    ctx: MailboxContext
    source: Source
    folders: dict[str, FolderContext]
    create_missing: bool = False
    #: which other folders auto-tracking watches (a pattern test)
    auto_folders: Callable[[str], bool] = lambda folder: False
    #: the watched folders found in the mailbox (set by the worker)
    watched: dict[str, FolderContext] = field(default_factory=dict)
    #: how the supervisor retries it after a mailbox-wide failure (config: retry:)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: track by tag (config: track_tags:), None when off; seconds between unpushed tag passes
    tags: TagSettings | None = None
    tag_interval: float = 10.0

    def context(self, folder: str) -> FolderContext | None:
        """The tracked or watched folder's context, or None."""
        return self.folders.get(folder) or self.watched.get(folder)

    @property
    def name(self) -> str:
        return self.ctx.row.name


@dataclass
class Services:
    db: pw.Database
    state_dir: Path
    tracker: Tracker
    shunts: ShuntStore
    max_message_bytes: int
    mailboxes: dict[str, MailboxRuntime] = field(default_factory=dict)
    #: limits.backfill_memory: the mail a scan holds at once (service/readahead.py)
    backfill_memory: int = 64 * 1024 * 1024
    #: parses scans' batches in helper processes (off: ParsePool(0))
    parser: ParsePool = field(default_factory=lambda: ParsePool(0))


def _seed_records(config: Config) -> None:
    if not config.records:
        return
    items = [
        RecordInput(
            r.entity,
            r.key,
            r.name,
            [e.lower() for e in r.emails],
            [d.lower() for d in r.domains],
            r.parent,
            origin=f"config records {r.entity}:{r.key}",
        )
        for r in config.records
    ]
    upsert_records(items, known_entities=config.entity_types())


def _folder_context(row: TrackedFolder) -> FolderContext:
    record = get_by_ref(row.regarding_ref) if row.regarding_ref else None
    return FolderContext(row=row, regarding=record)


def manager_id(config_path: Path | None = None) -> str:
    """Who manages the mailboxes of a config: this host and config file.

    Daemons sharing one PostgreSQL store each retire only the mailboxes
    that their own config used to list."""
    host = socket.gethostname()
    return f"{host}:{config_path}" if config_path else host


def sync_config(db: pw.Database, config: Config, *, manager: str | None = None) -> dict[str, MailboxRuntime]:
    """Make the store match the config; return the per-mailbox runtime."""
    _seed_records(config)
    runtimes: dict[str, MailboxRuntime] = {}
    with storedb.transaction(db):
        configured = {m.name for m in config.mailboxes}
        host = manager or manager_id()
        retired = Mailbox.update(active=False).where(Mailbox.managed_by == host)
        retired.where(Mailbox.name.not_in(configured) if configured else True).execute()
        for mbc in config.mailboxes:
            user = ensure_user(mbc.owner)
            row, _ = Mailbox.get_or_create(name=mbc.name, defaults={"owner": mbc.owner})
            row.owner, row.backend, row.location = mbc.owner, mbc.backend, mbc.location
            row.owner_record, row.active, row.managed_by = user, True, host
            row.save()
            owner_addresses = {mbc.owner} | {
                a.value
                for a in RecordAddress.select().where((RecordAddress.record == user) & (RecordAddress.kind == "email"))
            }
            folders: dict[str, FolderContext] = {}
            wanted = {tf.folder for tf in mbc.tracked_folders}
            TrackedFolder.update(active=False).where(
                (TrackedFolder.mailbox == row) & (TrackedFolder.folder.not_in(wanted) if wanted else True)
            ).execute()
            for tf in mbc.tracked_folders:
                frow, created = TrackedFolder.get_or_create(
                    mailbox=row, folder=tf.folder, defaults={"regarding_ref": tf.regarding}
                )
                changed = not created and frow.regarding_ref != tf.regarding
                if changed or not frow.active:
                    if changed:
                        log.info(
                            "folder %s/%s regarding changed from %s to %s",
                            mbc.name,
                            tf.folder,
                            frow.regarding_ref,
                            tf.regarding,
                            extra={"event": "folder-regarding-changed", "mailbox": mbc.name, "folder": tf.folder},
                        )
                    frow.regarding_ref, frow.active, frow.updated_at = tf.regarding, True, utcnow()
                    frow.save()
                fctx = _folder_context(frow)
                if tf.regarding and fctx.regarding is None:
                    log.warning(
                        "folder %s/%s: regarding record %s does not exist; its mail is tracked without a regarding"
                        " until the record is imported",
                        mbc.name,
                        tf.folder,
                        tf.regarding,
                        extra={"event": "regarding-missing", "mailbox": mbc.name, "folder": tf.folder},
                    )
                if fctx.regarding is not None:
                    n = relink_folder(db, frow, fctx.regarding.id)
                    if n:
                        log.info(
                            "re-linked %s in %s/%s to %s",
                            plural(n, "message"),
                            mbc.name,
                            tf.folder,
                            fctx.regarding.ref,
                            extra={"event": "relinked", "mailbox": mbc.name, "folder": tf.folder, "count": n},
                        )
                folders[tf.folder] = fctx
            runtimes[mbc.name] = MailboxRuntime(
                ctx=MailboxContext(
                    row=row,
                    owner_addresses=frozenset(owner_addresses),
                    policy=mbc.auto_track.policy,
                    never=NeverTrack(mbc.never_track) | NeverTrack(config.tracking.never_track),
                ),
                source=make_source(mbc),
                folders=folders,
                create_missing=mbc.create_missing_folders,
                auto_folders=FolderFilter(mbc.auto_track),
                retry=mbc.retry.policy(),
                tags=_tag_settings(mbc),
                tag_interval=mbc.track_tags.interval if mbc.track_tags else 10.0,
            )
    return runtimes


def _tag_settings(mbc: MailboxConfig) -> TagSettings | None:
    tt = mbc.track_tags
    if tt is None:
        return None
    return TagSettings(tt.tag, tt.set_regarding_prefix, tt.untrack_tag, tt.untrack_folder)


def load_ruleset(config: Config) -> RuleSet | None:
    """The config's rules; raises ConfigError listing every problem."""
    if not config.rules:
        return None
    return load_rules(config.rules, known_entities=config.entity_types())


def build_services(
    db: pw.Database,
    config: Config,
    *,
    manager: str | None = None,
    rules: RuleSet | None = None,
    parser: ParsePool | None = None,
) -> Services:
    """``rules``: an already loaded rule set (else the config's are loaded).
    ``parser``: the parse helpers to keep (a reload), else new ones (not started yet)."""
    if rules is None:
        rules = load_ruleset(config)
    for warning in config_secret_warnings(config):
        log.warning("%s", warning, extra={"event": "insecure-secret"})
    state_dir = Path(config.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker(
        db,
        BlobStore(state_dir),
        precedence=precedence(config),
        ambiguous=config.tracking.ambiguous_addresses,
        correlation=config.correlation,
        rules=rules,
    )
    services = Services(
        db=db,
        state_dir=state_dir,
        tracker=tracker,
        shunts=ShuntStore(db, state_dir),
        max_message_bytes=config.limits.max_message_bytes,
        backfill_memory=config.limits.backfill_memory,
        parser=parser or ParsePool(parse_workers(config.limits.parse_processes)),
    )
    services.parser.max_bytes = batch_bytes(config.limits.backfill_memory)
    services.mailboxes = sync_config(db, config, manager=manager)
    if rules is not None:
        log.info(
            "%s loaded from %s",
            plural(len(rules.rules), "rule"),
            plural(len(rules.sources), "file"),
            extra={"event": "rules-loaded"},
        )
    return services


__all__ = ["MailboxRuntime", "Services", "build_services", "open_store", "sync_config"]
