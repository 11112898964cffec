"""From the config to sync runs: the collections and policies of each
mailbox, one sync pass (``mailfiler sync``), and the daemon's loop that
syncs on an interval and whenever a vdir folder changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import peewee as pw
import watchfiles

from mailfiler.config.loader import LoadedConfig
from mailfiler.config.schema import Mailbox as MailboxConfig
from mailfiler.config.schema import Sync
from mailfiler.store.db import transaction
from mailfiler.store.models import Mailbox, SyncCollection
from mailfiler.sync.engine import Collection, Policy, Result, SyncEngine
from mailfiler.sync.vdir import VdirTarget

log = logging.getLogger("mailfiler.sync")

#: a burst of saves (a client rewriting many files) becomes one sync
DEBOUNCE_MS = 300


def resolve(path: Path, base_dir: Path) -> Path:
    """Relative paths are relative to the config file, as everywhere in the config."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base_dir / path)


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


def collections(sync: Sync, base_dir: Path) -> list[Collection]:
    out: list[Collection] = []
    if sync.vdir is not None:
        for kind in ("contacts", "calendar"):
            path = getattr(sync.vdir, kind)
            if path is not None:
                out.append(Collection(VdirTarget(kind, resolve(path, base_dir))))
    for tracked in sync.tracked:
        kind = "contacts" if tracked.contacts is not None else "calendar"
        path = tracked.contacts if tracked.contacts is not None else tracked.calendar
        assert path is not None
        out.append(Collection(VdirTarget(kind, resolve(path, base_dir)), role="tracked", regarding=tracked.regarding))
    return out


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
    colls = collections(mb.sync, loaded.path.parent)
    with transaction(db):
        # a collection taken out of the config no longer counts (status, "linked elsewhere")
        locations = [c.target.location for c in colls]
        SyncCollection.update(active=False).where(
            (SyncCollection.mailbox == row) & SyncCollection.location.not_in(locations or [""])
        ).execute()
    engine = SyncEngine(db, row, policies(mb.sync), state_dir=Path(loaded.config.state_dir), force_delete=force_delete)
    return await engine.sync(colls)


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
    once when a vdir folder changes.  Reads the config each round, so a
    reload takes effect at the next round."""
    next_run: dict[str, float] = {}
    while not stop.is_set():
        loaded = current()
        paths = watched_paths(loaded)
        now = time.monotonic()
        for mb in loaded.config.mailboxes:
            if mb.sync is None or next_run.get(mb.name, 0.0) > now:
                continue
            try:
                await sync_mailbox(db, loaded, mb)
            except Exception:  # a sync bug must not take the daemon down; logged, retried next interval
                log.exception("sync of mailbox %s failed", mb.name, extra={"event": "sync-error", "mailbox": mb.name})
            next_run[mb.name] = time.monotonic() + mb.sync.interval
        if not paths:
            await _wait(stop, 30.0)  # no sync configured now; a reload may add some
            next_run.clear()
            continue
        timeout = max(0.1, min(next_run.values(), default=now + 30.0) - time.monotonic())
        changed = await _watch(paths, stop, timeout)
        for name in changed:
            next_run[name] = 0.0


async def _wait(stop: asyncio.Event, timeout: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=timeout)
    except TimeoutError:
        pass


async def _watch(paths: dict[str, list[Path]], stop: asyncio.Event, timeout: float) -> set[str]:
    """Mailboxes whose vdir folders changed within *timeout* seconds."""
    folders = {p: name for name, ps in paths.items() for p in ps if p.is_dir()}
    if not folders:
        await _wait(stop, timeout)
        return set()
    own_stop = asyncio.Event()

    async def first_change() -> set[str]:
        async for changes in watchfiles.awatch(
            *folders, stop_event=own_stop, debounce=DEBOUNCE_MS, step=50, recursive=False
        ):
            names = set()
            for _, changed in changes:
                parent = Path(changed).parent
                # temp files of our own atomic writes and the clients' are not items
                if not Path(changed).name.startswith(".") and parent in folders:
                    names.add(folders[parent])
            if names:
                return names
        return set()

    task = asyncio.create_task(first_change())
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return task.result() if task in done else set()
    finally:
        own_stop.set()
        stopper.cancel()
        task.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
