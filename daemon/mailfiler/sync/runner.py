"""From the config to sync runs: the collections and policies of each
mailbox, one sync pass (``mailfiler sync``), and the daemon's loop that
syncs on an interval and whenever a vdir folder changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import peewee as pw
import watchfiles

from mailfiler.backends import backend_of
from mailfiler.config.loader import LoadedConfig
from mailfiler.config.schema import Mailbox as MailboxConfig
from mailfiler.config.syncschema import Sync, SyncDav
from mailfiler.errors import SyncTargetUnavailable
from mailfiler.sources.target import Target
from mailfiler.store.db import transaction
from mailfiler.store.models import Mailbox
from mailfiler.store.syncmodels import SyncCollection
from mailfiler.sync.engine import Collection, Policy, Result, SyncEngine
from mailfiler.sync.vdir import VdirTarget
from mailfiler.util.retrypolicy import Backoff
from mailfiler.util.secrets import SecretUnavailable

log = logging.getLogger("mailfiler.sync")

#: a burst of saves (a client rewriting many files) becomes one sync
DEBOUNCE_MS = 300


def resolve(path: Path, base_dir: Path) -> Path:
    """Relative paths are relative to the config file, as everywhere in the
    config; ``..`` is folded (normpath, not resolve(): symlinks stay as written)."""
    path = Path(path).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else (base_dir / path)))


def policies(sync: Sync) -> dict[str, Policy]:
    return {
        "contacts": Policy(
            filters=list(sync.filters.contacts),
            directions=dict(sync.fields.contacts),
            conflicts=sync.conflicts,
            on_mailbox_delete=sync.on_mailbox_delete,
            category=sync.category,
        ),
        "calendar": Policy(
            filters=list(sync.filters.appointments),
            directions=dict(sync.fields.appointments),
            conflicts=sync.conflicts,
            on_mailbox_delete=sync.on_mailbox_delete,
            category=sync.category,
        ),
    }


def dav_target(kind: str, dav: SyncDav, base_dir: Path) -> Target:
    """A CalDAV/CardDAV target from its config; the secret is read when it opens."""
    from mailfiler.sync.dav import DavTarget  # httpx is imported only when a server is configured

    resolved = dav.model_copy(update=dav.resolved_credentials(base_dir))
    provider = resolved.provider(f"{'carddav' if kind == 'contacts' else 'caldav'}")

    def secret() -> str:
        assert provider is not None
        try:
            return provider()
        except SecretUnavailable as exc:
            raise SyncTargetUnavailable(str(exc), location=dav.url) from None

    bearer = provider is not None and provider.mechanism == "oauth2"
    return DavTarget(
        kind,
        dav.url,
        username=dav.username,
        password=secret if provider is not None and not bearer else None,
        bearer=secret if bearer else None,
        client_cert=resolved.client_cert,
        client_key=resolved.client_key,
        ca_file=resolve(dav.ca_file, base_dir) if dav.ca_file is not None else None,
        verify=dav.verify,
        timeout=dav.timeout,
    )


def collections(sync: Sync, base_dir: Path) -> list[Collection]:
    out: list[Collection] = []
    if sync.vdir is not None:
        for kind in ("contacts", "calendar"):
            path = getattr(sync.vdir, kind)
            if path is not None:
                out.append(Collection(VdirTarget(kind, resolve(path, base_dir))))
    if sync.carddav is not None:
        out.append(Collection(dav_target("contacts", sync.carddav, base_dir)))
    if sync.caldav is not None:
        out.append(Collection(dav_target("calendar", sync.caldav, base_dir)))
    for tracked in sync.tracked:
        if tracked.carddav is not None or tracked.caldav is not None:
            kind = "contacts" if tracked.carddav is not None else "calendar"
            dav = tracked.carddav or tracked.caldav
            assert dav is not None
            out.append(Collection(dav_target(kind, dav, base_dir), role="tracked", regarding=tracked.regarding))
            continue
        kind = "contacts" if tracked.contacts is not None else "calendar"
        path = tracked.contacts if tracked.contacts is not None else tracked.calendar
        assert path is not None
        out.append(Collection(VdirTarget(kind, resolve(path, base_dir)), role="tracked", regarding=tracked.regarding))
    return out


def poll_interval(sync: Sync) -> float:
    """Seconds between syncs of a mailbox: the shortest of its servers' intervals and its own."""
    servers = [sync.carddav, sync.caldav, *(t.carddav or t.caldav for t in sync.tracked)]
    return min([sync.interval, *(d.interval for d in servers if d is not None and d.interval is not None)])


def watched_paths(loaded: LoadedConfig) -> dict[str, list[Path]]:
    """Per mailbox, the vdir folders to watch."""
    out: dict[str, list[Path]] = {}
    for mb in loaded.config.mailboxes:
        if mb.sync is not None:
            out[mb.name] = [
                Path(c.target.location)
                for c in collections(mb.sync, loaded.path.parent)
                if isinstance(c.target, VdirTarget)
            ]
    return out


async def sync_mailbox(
    db: pw.Database, loaded: LoadedConfig, mb: MailboxConfig, *, force_delete: bool = False
) -> list[Result]:
    """One sync of every collection of one mailbox (the mailbox row must exist)."""
    assert mb.sync is not None
    row = Mailbox.get(Mailbox.name == mb.name)
    # the backend's own targets (an Exchange address book, say) sync under the same policies
    colls = collections(mb.sync, loaded.path.parent) + [
        Collection(target) for target in backend_of(mb).targets(mb, loaded.path.parent)
    ]
    with transaction(db):
        # a collection taken out of the config no longer counts (status, "linked elsewhere")
        locations = [c.target.location for c in colls]
        SyncCollection.update(active=False).where(
            (SyncCollection.mailbox == row) & SyncCollection.location.not_in(locations or [""])
        ).execute()
    engine = SyncEngine(db, row, policies(mb.sync), state_dir=Path(loaded.config.state_dir), force_delete=force_delete)
    try:
        return await engine.sync(colls)
    finally:
        for coll in colls:  # a server's connections
            await coll.target.close()


async def sync_all(
    db: pw.Database, loaded: LoadedConfig, *, mailbox: str | None = None, force_delete: bool = False
) -> dict[str, list[Result]]:
    out: dict[str, list[Result]] = {}
    for mb in loaded.config.mailboxes:
        if mb.sync is None or (mailbox is not None and mb.name != mailbox):
            continue
        out[mb.name] = await sync_mailbox(db, loaded, mb, force_delete=force_delete)
    return out


async def sync_loop(db: pw.Database, current: Callable[[], LoadedConfig], stop: asyncio.Event) -> None:
    """The daemon's sync: every mailbox with ``sync:`` on its interval, and at
    once when one of its vdir folders changes (see :class:`SyncLoop`)."""
    await SyncLoop(db, current, stop).run()


class SyncLoop:
    """The folder watcher runs all the time, across syncs, so a save that lands
    while a sync runs is not missed; it is restarted only when a reload
    changes the folders.  The config is read each round, so a reload takes
    effect at the next one (within 30 s, or at once on a change).  A sync
    that failed, or found a server unreachable, is tried again under the
    mailbox's retry policy (never later than its interval)."""

    def __init__(self, db: pw.Database, current: Callable[[], LoadedConfig], stop: asyncio.Event) -> None:
        self.db = db
        self.current = current
        self.stop = stop
        self.next_run: dict[str, float] = {}
        #: per mailbox: retries after a failed sync (util/retrypolicy.py)
        self.backoffs: dict[str, Backoff] = {}
        self.dirty: set[str] = set()
        self.woken = asyncio.Event()
        self.watcher: asyncio.Task | None = None
        self.watching: dict[Path, str] = {}

    async def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    await self.round()
                except Exception:  # the loop must outlive any one round's bug; logged, tried again soon
                    log.exception("sync round failed", extra={"event": "sync-error"})
                    await self.wait(5.0)
        finally:
            await self._stop_watcher()

    async def round(self) -> None:
        loaded = self.current()
        await self._watch_folders(loaded)
        now = time.monotonic()
        for mb in loaded.config.mailboxes:
            if mb.sync is None or (mb.name not in self.dirty and self.next_run.get(mb.name, 0.0) > now):
                continue
            self.dirty.discard(mb.name)
            results: list[Result] | None = None
            try:
                results = await sync_mailbox(self.db, loaded, mb)
            except Exception:  # one mailbox's failure must not stop the others; logged, retried
                log.exception("sync of mailbox %s failed", mb.name, extra={"event": "sync-error", "mailbox": mb.name})
            self.next_run[mb.name] = time.monotonic() + self._next_in(mb, results)
        if self.dirty:
            return  # changed while syncing: again at once
        due = min(self.next_run.values(), default=now + 30.0) - time.monotonic()
        if await self.wait(max(0.05, min(due, 30.0))):
            await asyncio.sleep(DEBOUNCE_MS / 1000)  # a client saving many files: one sync

    def _next_in(self, mb: MailboxConfig, results: list[Result] | None) -> float:
        """Seconds to the mailbox's next sync: its interval, or sooner under its
        retry policy after a failure or a server it could not reach."""
        assert mb.sync is not None
        interval = poll_interval(mb.sync)
        policy = mb.retry.policy()
        backoff = self.backoffs.get(mb.name)
        if backoff is None or backoff.policy != policy:  # new, or retry: changed by a reload
            backoff = self.backoffs[mb.name] = policy.backoff()
        if results is None or any(r.state == "unavailable" for r in results):
            return min(backoff.failed(), interval)
        backoff.healthy()
        return interval

    async def wait(self, timeout: float) -> bool:
        """Sleep until a watched folder changes (True), the timeout, or stop."""
        self.woken.clear()
        waiter = asyncio.create_task(self.woken.wait())
        stopper = asyncio.create_task(self.stop.wait())
        await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        stopper.cancel()
        return self.woken.is_set()

    async def _watch_folders(self, loaded: LoadedConfig) -> None:
        folders = {p: name for name, ps in watched_paths(loaded).items() for p in ps}
        for folder in folders:
            # the engine makes missing folders too; made here first so the watcher sees them
            with contextlib.suppress(OSError):
                folder.mkdir(parents=True, exist_ok=True)
        if folders == self.watching and self.watcher is not None and not self.watcher.done():
            return
        await self._stop_watcher()
        self.watching = folders
        self.watcher = asyncio.create_task(_watch(folders, self.dirty, self.woken), name="sync-watch")
        for _ in range(3):  # let it register its watches before the sync reads the folders
            await asyncio.sleep(0)

    async def _stop_watcher(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
            self.watcher = None


async def _watch(folders: dict[Path, str], dirty: set[str], woken: asyncio.Event) -> None:
    """Mark a mailbox dirty when one of its folders changes (until cancelled)."""
    existing = [p for p in folders if p.is_dir()]
    if not existing:
        return
    own_stop = asyncio.Event()
    try:
        async for changes in watchfiles.awatch(*existing, stop_event=own_stop, debounce=50, step=20, recursive=False):
            for _, changed in changes:
                path = Path(changed)
                # temp files of atomic writes (ours and the clients') are not items
                if not path.name.startswith(".") and path.parent in folders:
                    dirty.add(folders[path.parent])
                    woken.set()
    finally:
        own_stop.set()
