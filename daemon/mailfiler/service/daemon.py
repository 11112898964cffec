"""The daemon: backfill every tracked folder, then follow pushed changes.

One asyncio loop.  Each mailbox runs under a supervisor that restarts it
after a mailbox-wide failure under the mailbox's retry policy (capped,
jittered, reset once it has been up for ``retry.healthy_after``:
util/retrypolicy.py).  Tracking a
message is a synchronous transaction run between awaits, so SIGTERM (which
only sets an event) always lets the transaction in flight finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from mailfiler.config.loader import LoadedConfig, load_config
from mailfiler.errors import AlreadyRunning, ConfigError, MailfilerError
from mailfiler.serverrules.runner import server_rules_loop
from mailfiler.service.filewatch import ConfigWatcher
from mailfiler.service.instancelock import InstanceLock
from mailfiler.service.notify import LoopLagMonitor, Notifier, watchdog_interval, watchdog_loop
from mailfiler.service.runtime import (
    MailboxRuntime,
    Services,
    build_services,
    load_ruleset,
    manager_id,
    open_store,
)
from mailfiler.service.worker import MailboxWorker
from mailfiler.store.db import redact
from mailfiler.store.models import DaemonState, utcnow
from mailfiler.tracking.folders import folder_token, set_folder_state
from mailfiler.tracking.parsepool import ParsePool, parse_workers
from mailfiler.util import retrypolicy
from mailfiler.util.heap import fix_malloc_thresholds
from mailfiler.util.text import plural

log = logging.getLogger("mailfiler.daemon")

HEARTBEAT_EVERY = 10.0
#: how often to look for folders auto-tracking should start or stop watching
DISCOVER_EVERY = float(os.environ.get("MAILFILER_DISCOVER_EVERY", "30"))
#: after a watcher restart, diff the new folders again this much later
CATCH_UP_AFTER = 1.0


def daemon_key() -> str:
    return f"daemon:{socket.gethostname()}"


class Daemon:
    def __init__(self, loaded: LoadedConfig, *, progress: bool | None = None) -> None:
        self.loaded = loaded
        #: when the config in force was loaded (status shows which version runs)
        self.loaded_at = utcnow()
        self.notifier = Notifier()
        self.stop_event = asyncio.Event()
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.services: Services | None = None
        self.lock: InstanceLock | None = None
        self.mailbox_tasks: dict[str, asyncio.Task] = {}
        self.mailbox_stops: dict[str, asyncio.Event] = {}
        self.workers: dict[str, MailboxWorker] = {}
        self.lag = LoopLagMonitor(threshold=30.0)
        self.config_error: str | None = None
        self.started_at = utcnow()
        self._reload_requested = asyncio.Event()
        # SIGHUP and a save may ask at once; two reloads must not restart the mailboxes over each other
        self._reload_lock = asyncio.Lock()

    # -- life cycle ---------------------------------------------------------------

    async def run(self) -> int:
        # before the store is touched, held to the end: a second `run` or `once` on this
        # state_dir or SQLite store stops here with AlreadyRunning
        with InstanceLock(self.loaded.config, "run", config_path=self.loaded.path) as self.lock:
            fix_malloc_thresholds()
            return await self._run()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        # sync-back (CalDAV/CardDAV, iCalendar) is the daemon's alone: `once` and the other
        # commands that import this module do not pay for its imports (~0.1 s of CPU)
        from mailfiler.sync.runner import sync_loop

        db = open_store(self.loaded.config)
        self.services = build_services(db, self.loaded.config, manager=manager_id(self.loaded.path))
        self._publish("starting")
        self.lag.start()
        helpers = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._reloader(), name="reloader"),
            asyncio.create_task(
                ConfigWatcher(lambda: self.loaded, self.reload_on_save, self.stop_event).run(), name="config-watch"
            ),
            # sync-back of contacts and appointments: on its interval and on vdir changes
            asyncio.create_task(sync_loop(db, lambda: self.loaded, self.stop_event), name="sync"),
            # inbox rules on the server: re-read on an interval, mailfiler's own kept in step with the config
            asyncio.create_task(server_rules_loop(lambda: self.loaded, self.stop_event), name="server-rules"),
        ]
        interval = watchdog_interval()
        if interval:
            helpers.append(asyncio.create_task(watchdog_loop(self.notifier, self.health, interval), name="watchdog"))
        self._start_mailboxes()
        n_folders = sum(len(rt.folders) for rt in self.services.mailboxes.values())
        self.notifier.ready()
        n_mailboxes = plural(len(self.services.mailboxes), "mailbox", "mailboxes")
        self.notifier.status(f"watching {plural(n_folders, 'tracked folder')} in {n_mailboxes}")
        log.info(
            "mailfiler started: %s, %s, store %s",
            n_mailboxes,
            plural(n_folders, "tracked folder"),
            self._store_label(),
            extra={"event": "started", "pid": os.getpid()},
        )
        await self.stop_event.wait()
        self.notifier.stopping()
        await self._stop_mailboxes(list(self.mailbox_tasks))
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await self.lag.stop()
        await self.services.parser.close()
        self._publish("stopped")
        db.close()
        log.info("mailfiler stopped", extra={"event": "stopped"})
        return 0

    def _on_stop(self, signame: str) -> None:
        log.info("%s received: finishing the message in flight, then exiting", signame, extra={"event": "stopping"})
        self.stop_event.set()
        for ev in self.mailbox_stops.values():
            ev.set()

    def _store_label(self) -> str:
        return redact(self.loaded.config.database)

    # -- mailboxes ------------------------------------------------------------------

    def _start_mailboxes(self) -> None:
        assert self.services is not None
        for name, rt in self.services.mailboxes.items():
            stop = asyncio.Event()
            self.mailbox_stops[name] = stop
            self.mailbox_tasks[name] = asyncio.create_task(self._supervise(rt, stop), name=f"mailbox:{name}")

    async def _stop_mailboxes(self, names: list[str]) -> None:
        for name in names:
            self.mailbox_stops[name].set()
        tasks = [self.mailbox_tasks.pop(n) for n in names if n in self.mailbox_tasks]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=20)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for name in names:
            self.mailbox_stops.pop(name, None)
            self.workers.pop(name, None)

    async def _supervise(self, rt: MailboxRuntime, stop: asyncio.Event) -> None:
        backoff = rt.retry.backoff()
        while not stop.is_set():
            try:
                await self._run_mailbox(rt, stop, backoff.healthy)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                message = str(exc) if isinstance(exc, MailfilerError) else f"{type(exc).__name__}: {exc}"
                delay = backoff.failed()
                log.error(
                    "mailbox %s failed: %s; retrying in %.0f s",
                    rt.name,
                    message,
                    delay,
                    exc_info=not isinstance(exc, MailfilerError),
                    extra={"event": "mailbox-error", "mailbox": rt.name},
                )
                for folder in rt.folders:
                    try:
                        code = exc.code if isinstance(exc, MailfilerError) else None
                        set_folder_state(rt.ctx.row, folder, "error", message, code=code)
                    except Exception:  # noqa: BLE001 - the store itself may be what failed
                        pass
                await retrypolicy.wait(delay, stop)

    async def _run_mailbox(self, rt: MailboxRuntime, stop: asyncio.Event, connected: Callable[[], None]) -> None:
        assert self.services is not None
        source = rt.source
        await source.open(create=rt.create_missing)
        tokens = {f: t for f in rt.folders if (t := folder_token(rt.ctx.row, f, kind="tracked")) is not None}
        await source.resume(tokens)
        connected()  # healthy from here: a failure after retry.healthy_after starts the backoff afresh
        worker = MailboxWorker(rt, self.services, should_stop=stop.is_set)
        self.workers[rt.name] = worker
        await worker.discover(at_start=True)
        queue: asyncio.Queue = asyncio.Queue()

        def start_watcher() -> asyncio.Task:
            folders = [*rt.folders, *rt.watched]
            # its own stop event: watchfiles sets the event it is given when
            # cancelled, and a watcher restart must not stop the mailbox
            own_stop = asyncio.Event()

            async def pump() -> None:
                try:
                    async for batch in source.watch(folders, own_stop):
                        queue.put_nowait(batch)
                finally:
                    own_stop.set()

            return asyncio.create_task(pump(), name=f"watch:{rt.name}")

        pump_task = start_watcher()
        # the watcher registers inotify watches when it first runs; let it
        # start before the backfill so nothing that lands meanwhile is missed
        for _ in range(3):
            await asyncio.sleep(0)
        try:
            await self._backfill(rt, worker)
            self.notifier.status(f"{rt.name}: backfill done; following changes")
            log.info(
                "mailbox %s: backfill done, watching %d tracked and %s",
                rt.name,
                len(rt.folders),
                plural(len(rt.watched), "other folder"),
                extra={"event": "watching", "mailbox": rt.name},
            )
            next_discovery = time.monotonic() + DISCOVER_EVERY
            # folders to diff once more after a watcher restart (see below)
            catch_up: list[str] = []
            catch_up_at = float("inf")
            # track by tag: a pass now (tags set while no daemon ran), then on pushes and on its interval
            tagging = rt.tags is not None and source.tags
            next_tags = time.monotonic() if tagging else float("inf")
            while not stop.is_set():
                if time.monotonic() >= next_tags:
                    await worker.tag_pass()
                    next_tags = time.monotonic() + rt.tag_interval
                get = asyncio.create_task(queue.get())
                stopper = asyncio.create_task(stop.wait())
                timeout = max(0.0, min(next_discovery, catch_up_at, next_tags) - time.monotonic())
                done, _ = await asyncio.wait(
                    {get, stopper, pump_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                stopper.cancel()
                if get in done:
                    await worker.handle(get.result())
                else:
                    get.cancel()
                if pump_task in done and not stop.is_set():
                    exc = pump_task.exception()
                    raise exc or RuntimeError("the folder watcher stopped")
                if stop.is_set():
                    break
                if time.monotonic() >= catch_up_at:
                    for folder in catch_up:
                        if rt.context(folder) is not None:
                            await worker.scan_folder(folder)
                    catch_up, catch_up_at = [], float("inf")
                if time.monotonic() >= next_discovery:
                    next_discovery = time.monotonic() + DISCOVER_EVERY
                    added, removed = await worker.discover(at_start=False)
                    if added or removed:
                        # the watcher follows a fixed folder list: restart it
                        pump_task.cancel()
                        await asyncio.gather(pump_task, return_exceptions=True)
                        pump_task = start_watcher()
                        log.info(
                            "mailbox %s: now also watching %s%s",
                            rt.name,
                            ", ".join(added) or "-",
                            f"; no longer {', '.join(removed)}" if removed else "",
                            extra={"event": "watch-changed", "mailbox": rt.name},
                        )
                        # diff every folder for what landed while no watcher
                        # ran, and the new ones once more when the new watcher
                        # is surely up (it has no "ready" signal)
                        for folder in [*rt.folders, *rt.watched]:
                            await worker.scan_folder(folder)
                        catch_up, catch_up_at = added, time.monotonic() + CATCH_UP_AFTER
        finally:
            pump_task.cancel()
            await asyncio.gather(pump_task, return_exceptions=True)
            await source.close()

    async def _backfill(self, rt: MailboxRuntime, worker: MailboxWorker) -> None:
        progress_ctx = None
        if self.progress:
            from rich.console import Console
            from rich.progress import Progress, TaskID

            progress_ctx = Progress(console=Console(stderr=True), transient=True)
            progress_ctx.start()
            tasks: dict[str, TaskID] = {}

            def report(folder: str, done: int, total: int) -> None:
                if folder not in tasks:
                    tasks[folder] = progress_ctx.add_task(f"{rt.name}/{folder}", total=total)
                progress_ctx.update(tasks[folder], completed=done)

            worker.progress = report
        try:
            for folder in [*rt.folders, *rt.watched]:
                if worker.should_stop():
                    return
                t0 = time.monotonic()
                result = await worker.scan_folder(folder)
                if result.new or result.gone or result.shunted:
                    log.info(
                        "backfill %s/%s: %d new, %d gone, %d shunted in %.2f s",
                        rt.name,
                        folder,
                        result.new,
                        result.gone,
                        result.shunted,
                        time.monotonic() - t0,
                        extra={"event": "backfill", "mailbox": rt.name, "folder": folder, "new": result.new},
                    )
        finally:
            worker.progress = None
            if progress_ctx is not None:
                progress_ctx.stop()

    # -- reload -----------------------------------------------------------------------

    async def _reloader(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            async with self._reload_lock:
                await self.reload()

    async def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.loaded.path)
            # load the rules before touching the running mailboxes: a broken
            # rule file keeps the last good config and rules in force
            new_rules = load_ruleset(new.config)
        except ConfigError as exc:
            self._reject(exc)
            self.notifier.ready()
            return
        if self.lock is not None and Path(new.config.state_dir) != Path(self.loaded.config.state_dir):
            try:
                self.lock.move_state_dir(Path(new.config.state_dir))
            except AlreadyRunning as exc:
                self._reject(ConfigError(f"state_dir: {exc}"))
                self.notifier.ready()
                return
        if new.config.database != self.loaded.config.database:
            log.warning(
                "database changed in the config; restart mailfiler to switch stores",
                extra={"event": "config-needs-restart"},
            )
        cleared = self.config_error is not None
        self.config_error = None
        log.info("reloading configuration from %s", new.path, extra={"event": "reloading"})
        await self._stop_mailboxes(list(self.mailbox_tasks))
        assert self.services is not None
        db = self.services.db
        self.loaded = new
        self.loaded_at = utcnow()
        old = self.services.parser
        parser: ParsePool | None = old  # kept unless its size changes
        if old.workers != parse_workers(new.config.limits.parse_processes):
            await old.close()
            parser = None
        self.services = build_services(db, new.config, manager=manager_id(new.path), rules=new_rules, parser=parser)
        self._start_mailboxes()
        self._publish("running")
        self.notifier.ready()
        log.info(
            "configuration reloaded%s",
            "; the earlier config error is cleared" if cleared else "",
            extra={"event": "reloaded", "error_cleared": cleared},
        )

    def _reject(self, exc: ConfigError) -> None:
        """Log each problem as FILE:LINE:COL: message; `status` shows them until a good save."""
        self.config_error = "; ".join(str(p) for p in exc.problems) or str(exc)
        for problem in exc.problems or [exc]:
            log.error("config reload rejected: %s", problem, extra={"event": "config-invalid"})
        log.error("keeping the previous configuration", extra={"event": "config-kept"})
        self._publish("running")

    async def reload_on_save(self) -> None:
        """The config or a rule file was saved (service/filewatch.py).  A changed
        config reloads in full; otherwise only the rules are swapped into the
        tracker, and the mailboxes go on without a restart (and a rescan)."""
        async with self._reload_lock:
            if self.stop_event.is_set():
                return  # stopping: starting mailboxes now would orphan them
            try:
                new = load_config(self.loaded.path)
                config_changed = new.text_sha256 != self.loaded.text_sha256
                rules = None if config_changed else load_ruleset(new.config)
            except ConfigError as exc:
                self._reject(exc)
                return
            if config_changed:
                await self.reload()
                return
            assert self.services is not None
            # the tracker reads its rules once per message, between awaits: the swap is atomic for it
            self.services.tracker.rules = rules
            cleared = self.config_error is not None
            self.config_error = None
            self._publish("running")
            n_rules, n_files = (len(rules.rules), len(rules.sources)) if rules else (0, 0)
            # after a rejected save, say that the file is good again, not only that the rules are
            what = "rules reloaded"
            if cleared:
                what = f"configuration {new.path} reloaded, the earlier config error is cleared"
            log.info(
                "%s: %s from %s",
                what,
                plural(n_rules, "rule"),
                plural(n_files, "file"),
                extra={"event": "rules-reloaded", "rules": n_rules, "files": n_files, "error_cleared": cleared},
            )

    # -- health and status ------------------------------------------------------------

    def health(self) -> str | None:
        """None when healthy; else why the watchdog must not be fed."""
        lagging = self.lag.health()
        if lagging:
            return lagging
        for name, task in self.mailbox_tasks.items():
            if task.done() and not self.mailbox_stops[name].is_set():
                return f"mailbox {name} supervisor exited"
        return None

    async def _heartbeat(self) -> None:
        last = ""
        while True:
            self._publish("running")
            totals: dict[str, int] = {}
            for worker in self.workers.values():
                for event, n in worker.counts.items():
                    totals[event] = totals.get(event, 0) + n
            if totals:
                text = "since start: " + ", ".join(f"{n} {event}" for event, n in sorted(totals.items()))
                if text != last:
                    self.notifier.status(text)
                    last = text
            await asyncio.sleep(HEARTBEAT_EVERY)

    def _publish(self, state: str) -> None:
        value = json.dumps(
            {
                "state": state,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": self.started_at.isoformat() + "Z",
                "heartbeat_at": utcnow().isoformat() + "Z",
                "config": str(self.loaded.path),
                # the version in force: `status` compares it with the file as it is now
                "config_sha256": self.loaded.text_sha256,
                "config_loaded_at": self.loaded_at.isoformat() + "Z",
                "config_error": self.config_error,
            }
        )
        try:
            DaemonState.insert(key=daemon_key(), value=value, updated_at=utcnow()).on_conflict(
                conflict_target=[DaemonState.key], update={DaemonState.value: value, DaemonState.updated_at: utcnow()}
            ).execute()
        except Exception:
            log.debug("could not publish daemon state", exc_info=True)


async def run_once(loaded: LoadedConfig, *, progress: bool = False) -> dict[str, list]:
    """One full pass over every tracked folder (for cron and tests)."""
    # as `run`: never beside a daemon (or another `once`) on this state_dir or SQLite store
    with InstanceLock(loaded.config, "once", config_path=loaded.path):
        fix_malloc_thresholds()
        return await _pass(loaded)


async def _pass(loaded: LoadedConfig) -> dict[str, list]:
    db = open_store(loaded.config)
    services = build_services(db, loaded.config, manager=manager_id(loaded.path))
    summary: dict[str, list] = {}
    try:
        for name, rt in services.mailboxes.items():
            await rt.source.open(create=rt.create_missing)
            worker = MailboxWorker(rt, services)
            await worker.discover(at_start=True)
            summary[name] = [await worker.scan_folder(folder) for folder in [*rt.folders, *rt.watched]]
            if rt.tags is not None and rt.source.tags:
                await worker.tag_pass()
            await rt.source.close()
    finally:
        await services.parser.close()
        db.close()
    return summary
