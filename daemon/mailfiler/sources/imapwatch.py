"""Push for IMAP folders: which connections listen, and how a push becomes changes.

Strategy (at most 1 + max(1, ``max_idle``) connections per mailbox, so 50
tracked folders fit Dovecot's default ``mail_max_userip_connections = 10``
with room for a mail client):

* **NOTIFY** (RFC 5465; Dovecot, Cyrus): one listener connection for every
  folder.  It EXAMINEs INBOX (aioimaplib only IDLEs in the SELECTED state),
  sets ``NOTIFY SET (selected (MessageNew MessageExpunge)) (personal
  (MessageNew MessageExpunge MailboxName))`` and IDLEs.  A ``STATUS name
  (...)`` push names the folder that changed; EXISTS/EXPUNGE/FETCH/VANISHED
  are INBOX.  Dovecot 2.3 names the folder in UTF-8 there, not modified
  UTF-7, so a push is matched against both spellings.  A ``LIST`` push (a
  folder deleted: Dovecot sends ``LIST (\\NonExistent)``; it sends nothing
  for a rename) asks for a sweep at once.  Flag changes are not subscribed
  to.  Sweeps catch what a push missed: every ``quick_sweep`` seconds (2),
  and every ``busy_sweep`` seconds (0.5) for 30 s after a push or a change,
  one ``LIST "" (folders...) RETURN (STATUS ...)`` (RFC 5819 LIST-STATUS, one
  round trip for every watched folder), because Dovecot's NOTIFY at times
  goes quiet after activity until its 30 s ``mailbox_idle_check_interval``
  (see bench/README.md); and every ``sweep_interval`` seconds (10) a STATUS per
  folder, which also notices renamed folders (aioimaplib drops untagged
  responses that arrive between commands).
* **IDLE + polling** (servers without NOTIFY: Gmail, Exchange): one IDLE
  connection for each of the first ``max_idle`` watched folders that exist
  (the caller's order is the priority), and a STATUS poll of the rest every
  ``poll_interval`` seconds over the command connection.

Either way a push is only a hint that "something happened in folder F": the
:class:`FolderDiffer` then EXAMINEs F on the command connection and compares
UIDVALIDITY, UIDNEXT, EXISTS and, when needed, the UID list with what it
knew, and reports ``added``/``gone`` (so a flag change reports nothing).  A
folder whose UIDVALIDITY changed, or that appeared or disappeared, is
reported as ``rescan``.  When the listeners are up and the baseline is
taken, every watched folder is reported as ``rescan`` once: the daemon
starts the watcher and its backfill together, and mail that landed between
the backfill's listing and the baseline would otherwise go unseen until the
next change in that folder.

A lost listener connection, a ``BYE`` or a timeout raises
:class:`~mailfiler.errors.MailboxUnavailable` out of ``watch()``; the
daemon's supervisor reconnects with backoff and catches up by a backfill,
which starts from each folder's stored cursor token (one EXAMINE for a
folder where nothing changed; see :mod:`~mailfiler.sources.imap`).  The
differ's own baseline is in memory only: one EXAMINE and one UID SEARCH ALL
per folder at each start (ranges with ESEARCH), never a FETCH.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aioimaplib import aioimaplib as core

from mailfiler.errors import FolderMissing, MailboxUnavailable
from mailfiler.sources import imapproto as proto
from mailfiler.sources.base import Change
from mailfiler.sources.imapconn import ImapConnection
from mailfiler.sources.imapsettings import ImapSettings

log = logging.getLogger("mailfiler.sources.imap")


class ImapSource(Protocol):
    """What the watchers use of :class:`mailfiler.sources.imap.ImapSource`: a
    protocol, since that module imports this one."""

    @property
    def settings(self) -> ImapSettings: ...

    def session(self) -> contextlib.AbstractAsyncContextManager[ImapConnection]: ...


#: a listener asks for a sweep of every watched folder
SWEEP_ALL = "*"
#: a listener saw a change that may be a flag change (track by tag: a tag pass is due)
TAGS = "#tags"
#: connections per mailbox, the command connection included, whatever max_idle
#: says: Dovecot allows 10 per user and IP, and the user's clients need some
MAX_CONNECTIONS = 5
_SELECTED_EVENTS = (b"EXISTS", b"EXPUNGE", b"FETCH", b"RECENT")
_UNKNOWN = object()  # a folder the differ has not looked at yet
#: with NOTIFY, sweep quickly (ImapSettings.busy_sweep) for this long after a push
#: or a change: Dovecot's NOTIFY can go quiet after activity until its 30 s
#: mailbox_idle_check_interval
BUSY_WINDOW = 30.0
#: more new UIDs than this since the last look: rescan rather than list them
PASSED_MAX = 10_000


@dataclass
class FolderState:
    uidvalidity: int
    uidnext: int
    uids: set[int] = field(default_factory=set)


class FolderDiffer:
    """What the watcher knows of each folder, and the diff against the server."""

    def __init__(self, source: ImapSource) -> None:
        self.source = source
        #: folder -> state; None when the folder does not exist
        self.states: dict[str, FolderState | None] = {}

    async def check(self, folder: str) -> list[Change]:
        prior = self.states.get(folder, _UNKNOWN)
        async with self.source.session() as conn:
            try:
                info = await conn.examine(folder)
            except FolderMissing:
                self.states[folder] = None
                return [Change("rescan", folder)] if isinstance(prior, FolderState) else []
            uv, uidnext, exists = info.get("UIDVALIDITY", 0), info.get("UIDNEXT", 0), info["EXISTS"]
            if not isinstance(prior, FolderState) or prior.uidvalidity != uv:
                # first look, a folder that (re)appeared, or all UIDs void
                uids = await self._all(conn, uidnext)
                self.states[folder] = FolderState(uv, uidnext or max(uids, default=0) + 1, uids)
                return [] if prior is _UNKNOWN else [Change("rescan", folder)]
            old = prior
            if uidnext and uidnext == old.uidnext and exists == len(old.uids):
                return []  # a flag change, or nothing
            new: set[int] = set()
            # UIDs given out since the last look that are gone already: a message
            # that came and left between two looks (a quick move).  The consumer
            # may have seen it (its own listing after our rescan), so it is
            # reported gone; a gone id it never saw costs nothing.
            passed: set[int] = set()
            if uidnext > old.uidnext:
                found = await conn.uid_search(f"UID {old.uidnext}:{uidnext - 1}")
                new = {u for u in found if old.uidnext <= u < uidnext}
                if uidnext - old.uidnext > PASSED_MAX:
                    # too much to list one by one: a fresh look, and the consumer rescans
                    uids = await self._all(conn, uidnext)
                    self.states[folder] = FolderState(uv, uidnext, uids)
                    return [Change("rescan", folder)]
                passed = set(range(old.uidnext, uidnext)) - new
            if uidnext and len(old.uids) + len(new) == exists:
                added, gone = new, passed  # nothing else expunged: the counts add up
            else:
                # something went (or the server sent no UIDNEXT): compare it all
                now = await self._all(conn, uidnext)
                added, gone = now - old.uids, (old.uids - now) | passed
            old.uids = (old.uids | added) - gone
            old.uidnext = uidnext or max(old.uids | {old.uidnext - 1}) + 1
        changes = [Change("added", folder, proto.make_source_id(uv, u)) for u in sorted(added)]
        changes.extend(Change("gone", folder, proto.make_source_id(uv, u)) for u in sorted(gone))
        return changes

    @staticmethod
    async def _all(conn: ImapConnection, uidnext: int) -> set[int]:
        # only what the EXAMINE saw: later arrivals come with their own push
        uids = await conn.uid_search("ALL")
        return {u for u in uids if not uidnext or u < uidnext}

    async def baseline(self, folder: str) -> None:
        self.states.pop(folder, None)
        await self.check(folder)

    async def sweep(self, folders: Sequence[str], *, quick: bool = False) -> list[Change]:
        """STATUS each folder (``quick``: all in one LIST-STATUS); diff those that
        differ from what is known."""
        stale: list[str] = []
        async with self.source.session() as conn:
            statuses = await conn.list_status(folders) if quick else {}
            for folder in folders:
                try:
                    status = statuses[folder] if quick else await conn.status(folder)
                except FolderMissing:
                    status = None
                state = self.states.get(folder)
                if status is None:
                    if state is not None:
                        stale.append(folder)
                elif (
                    state is None
                    or status.get("UIDVALIDITY") != state.uidvalidity
                    or status.get("UIDNEXT") != state.uidnext
                    or status.get("MESSAGES") != len(state.uids)
                ):
                    stale.append(folder)
        changes: list[Change] = []
        for folder in stale:
            changes.extend(await self.check(folder))
        return changes


# -- listeners ----------------------------------------------------------------------


class Listener:
    """One IDLEing connection that reports which folders saw activity."""

    def __init__(self, source: ImapSource, queue: asyncio.Queue, *, folder: str | None) -> None:
        self.source = source
        self.settings = source.settings
        self.queue = queue
        #: the folder this connection IDLEs on (None: NOTIFY for all, INBOX examined)
        self.folder = folder
        self.conn: ImapConnection | None = None
        self.ready = asyncio.Event()
        self.closing = False
        self.names: dict[str, str] = {}  # spelling in a push -> folder
        self.task: asyncio.Task[None] | None = None

    def watch_names(self, folders: Sequence[str], separator: str | None) -> None:
        for folder in folders:
            wire = proto.folder_to_wire(folder, separator)
            self.names[wire] = folder
            sep = separator or "/"
            self.names[sep.join(folder.split("/"))] = folder  # Dovecot's UTF-8 spelling

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"imap-listen:{self.folder or 'NOTIFY'}")

    async def _run(self) -> None:
        try:
            await self._listen()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - handed to the watch loop, which raises it
            self.queue.put_nowait(exc)

    async def _setup(self) -> ImapConnection:
        purpose = f"IDLE on {self.folder}" if self.folder else "NOTIFY"
        conn = await ImapConnection.connect(self.settings, purpose=purpose, keep_unsolicited=True)
        self.conn = conn
        if self.folder is None and self.settings.flag_changes and "CONDSTORE" in conn.capabilities:
            # before the EXAMINE (ENABLE is for the authenticated state); see the NOTIFY SET below
            await conn.simple("ENABLE", "CONDSTORE")
        await conn.examine(self.folder or proto.INBOX)
        if self.folder is None:
            # track by tag: flag changes too (RFC 5465 wants MessageNew and MessageExpunge with FlagChange).
            # Dovecot pushes a flag change in another folder reliably only as a new HIGHESTMODSEQ
            # (STATUS (HIGHESTMODSEQ n)): without CONDSTORE enabled it mostly sends nothing
            flags = " FlagChange" if self.settings.flag_changes else ""
            command = conn.command(
                "NOTIFY",
                "SET",
                f"(selected (MessageNew MessageExpunge{flags}))",
                f"(personal (MessageNew MessageExpunge MailboxName{flags}))",
            )
            response = await conn.execute(command)
            if response.result != "OK":
                raise MailboxUnavailable(f"NOTIFY SET refused by {self.settings.where()}: {response.lines[-1]!r}")
        return conn

    async def _listen(self) -> None:
        conn = await self._setup()
        assert conn.client is not None
        renew = self.settings.idle_renew
        while not self.closing:
            idle = await conn.run(conn.client.idle_start(timeout=renew), "IDLE")
            self.ready.set()
            while True:
                lines = await conn.next_push()
                if lines is None or lines == core.STOP_WAIT_SERVER_PUSH:
                    break  # renew the IDLE, or close
                self._report(lines)
            conn.client.idle_done()
            await conn.run(idle, "IDLE DONE", timeout=min(self.settings.timeout, 5.0))
            if self.closing:
                break
            # pushes that came between DONE and the next IDLE may be lost: sweep
            self.queue.put_nowait({SWEEP_ALL})
        await conn.logout(timeout=0.5)

    def _report(self, lines: list[bytes | bytearray]) -> None:
        touched: set[str] = set()
        for line in proto.join_literals(lines):
            word, _, rest = line.partition(b" ")
            upper = word.upper()
            if upper == b"BYE":
                assert self.conn is not None
                raise self.conn.unavailable("IDLE", f"was closed by the server ({rest.decode('utf-8', 'replace')})")
            if upper == b"STATUS":
                try:
                    name, _ = proto.parse_status(rest)
                except proto.ParseError:
                    touched.add(SWEEP_ALL)  # a literal name cut off outside IDLE
                    continue
                folder = self.names.get(name)
                if folder is not None:
                    touched.add(folder)
                if self.settings.flag_changes:
                    touched.add(TAGS)  # any folder: a tag may be set anywhere
            elif upper == b"VANISHED" or rest.split(b" ", 1)[0].upper() in _SELECTED_EVENTS:
                touched.add(self.folder or proto.INBOX)
                if self.settings.flag_changes and rest.split(b" ", 1)[0].upper() == b"FETCH":
                    touched.add(TAGS)
            elif upper == b"LIST":
                touched.add(SWEEP_ALL)
        if touched:
            self.queue.put_nowait(touched)

    async def close(self) -> None:
        """End IDLE and log out politely, within about a second."""
        self.closing = True
        conn = self.conn
        if conn is not None and conn.client is not None:
            conn.client.protocol.idle_queue.put_nowait(core.STOP_WAIT_SERVER_PUSH)
        if self.task is not None:
            await asyncio.wait({self.task}, timeout=1.0)
            if not self.task.done():
                self.task.cancel()
                await asyncio.wait({self.task}, timeout=1.0)
        if conn is not None:
            conn.abort()


# -- the watch loop ----------------------------------------------------------------------


async def watch(source: ImapSource, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
    wanted = list(dict.fromkeys(folders))
    settings = source.settings
    differ = FolderDiffer(source)
    queue: asyncio.Queue[set[str] | Exception] = asyncio.Queue()
    async with source.session() as conn:
        caps, separator = conn.capabilities, conn.separator
        present = {f for f in wanted if await _exists(conn, f)}
    listeners: list[Listener] = []
    quick = 0.0
    if settings.use_notify and "NOTIFY" in caps:
        listeners.append(Listener(source, queue, folder=None))
        polled: list[str] = []
        poll_every = settings.sweep_interval
        if "LIST-STATUS" in caps:
            quick = settings.quick_sweep
    else:
        slots = max(0, min(settings.max_idle, MAX_CONNECTIONS - 1))
        idle_on = [f for f in wanted if f in present][:slots] if "IDLE" in caps else []
        listeners.extend(Listener(source, queue, folder=f) for f in idle_on)
        polled = [f for f in wanted if f not in idle_on]
        poll_every = settings.poll_interval
    for listener in listeners:
        listener.watch_names(wanted, separator)
        listener.start()
    try:
        await _wait_ready(listeners, queue, settings.connect_timeout + settings.timeout)
        for folder in wanted:
            await differ.baseline(folder)
        yield [Change("rescan", f) for f in wanted]
        next_poll = time.monotonic() + poll_every
        next_sweep = time.monotonic() + settings.sweep_interval
        # with NOTIFY: a LIST-STATUS of every watched folder, one command, between full
        # sweeps; more often while the mailbox is busy
        next_quick = time.monotonic() + quick if quick else float("inf")
        busy_until = 0.0
        while not stop.is_set():
            touched = await _next_event(queue, stop, min(next_poll, next_sweep, next_quick) - time.monotonic())
            if stop.is_set():
                break
            now = time.monotonic()
            sweep: list[str] = []
            quick_sweep = False
            if SWEEP_ALL in touched or now >= next_sweep:
                sweep, next_sweep = wanted, now + settings.sweep_interval
            elif now >= next_quick:
                sweep, quick_sweep = wanted, True
            if touched:
                busy_until = now + BUSY_WINDOW
            if quick and (sweep or now >= next_quick):
                next_quick = now + (min(quick, settings.busy_sweep) if now < busy_until else quick)
            if polled and now >= next_poll and not sweep:
                sweep = polled
            if now >= next_poll:
                next_poll = now + poll_every
            changes: list[Change] = []
            if TAGS in touched:
                changes.append(Change("tags", "*"))
            for folder in wanted:
                if folder in touched and folder not in sweep:
                    changes.extend(await differ.check(folder))
            if sweep:
                changes.extend(await differ.sweep(sweep, quick=quick_sweep))
            if changes:
                busy_until = time.monotonic() + BUSY_WINDOW
                if quick:
                    next_quick = min(next_quick, time.monotonic() + settings.busy_sweep)
                yield changes
    finally:
        await asyncio.gather(*(listener.close() for listener in listeners), return_exceptions=True)


async def _exists(conn: ImapConnection, folder: str) -> bool:
    try:
        return await conn.status(folder) is not None
    except FolderMissing:
        return False


async def _wait_ready(listeners: list[Listener], queue: asyncio.Queue, timeout: float) -> None:
    """Until every listener IDLEs; a listener that failed raises its error."""
    deadline = time.monotonic() + timeout
    for listener in listeners:
        while not listener.ready.is_set():
            if not queue.empty():
                item = queue.get_nowait()
                if isinstance(item, Exception):
                    raise item
                queue.put_nowait(item)
            left = deadline - time.monotonic()
            if left <= 0:
                raise MailboxUnavailable(
                    f"IMAP watcher for {listener.settings.where()} did not start within {timeout:.0f} s"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.ready.wait(), min(left, 0.05))


async def _next_event(queue: asyncio.Queue, stop: asyncio.Event, timeout: float) -> set[str]:
    """Folders touched by the next push(es), or an empty set on timeout or stop."""
    touched: set[str] = set()
    if queue.empty():
        getter = asyncio.ensure_future(queue.get())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({getter, stopper}, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            _absorb(getter.result(), touched)
    while not queue.empty():  # everything that queued meanwhile: one diff per folder
        _absorb(queue.get_nowait(), touched)
    return touched


def _absorb(item: set[str] | Exception, touched: set[str]) -> None:
    if isinstance(item, Exception):
        raise item
    touched.update(item)
