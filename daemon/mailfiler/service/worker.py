"""Per-mailbox work: diff a folder against the store (backfill and
catch-up), and turn pushed changes into tracked, moved or gone messages.

A scan starts from the folder's cursor token when the backend gave one (IMAP:
only what changed since, see :mod:`mailfiler.sources.base`) and lists the
folder in full otherwise.  What left the folder is applied first, then the
new messages in the backend's order, each committing its own token, so the
token never covers a message that is not committed; a message that vanished
before it could be read holds the token back until the next look.  After a
batch of pushed changes, a catch-up from the token moves it past them.

Every failure of one message ends in the shunt with its reason; only
mailbox-wide failures escape to the supervisor.  Marks in the user's mail
client (IMAP keywords, opt-in) follow the commits, best effort."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import peewee as pw

from mailfiler.errors import (
    FolderMissing,
    MailboxUnavailable,
    MessageError,
    MessageTooLarge,
    MessageVanished,
    ProcessingFailed,
    SourceError,
)
from mailfiler.service.readahead import NOT_READ, ReadAhead, batch_bytes, put_large_attachments, too_large
from mailfiler.service.runtime import MailboxRuntime, Services
from mailfiler.sources.base import Change, Listing, MarkState
from mailfiler.store.blobs import INLINE_MAX
from mailfiler.store.db import transaction
from mailfiler.store.models import FolderCursor, Location, SeenMessage, Shunt
from mailfiler.tracking import txsql
from mailfiler.tracking.batch import Item, track_batch
from mailfiler.tracking.context import watched_folder
from mailfiler.tracking.folders import (
    folder_token,
    forget_seen,
    known_among,
    mark_gone,
    present_source_ids,
    record_baseline,
    save_token,
    seen_source_ids,
    set_folder_state,
    shunted_source_ids,
)
from mailfiler.tracking.labels import label_at, label_of_raw, message_label
from mailfiler.tracking.parse import ParsedMessage, parse_message
from mailfiler.tracking.pipeline import Outcome

log = logging.getLogger("mailfiler.worker")

#: transient store errors (SQLite busy, PostgreSQL restart) are retried this
#: many times before the message is shunted as a persistent store error
STORE_RETRIES = 5
#: a tracked folder's scan commits this many messages per transaction (at most:
#: a batch is also cut at readahead.batch_bytes(limits.backfill_memory) bytes)
COMMIT_BATCH = 50
#: a message waiting in a commit batch keeps its bytes (for the shunt, should it
#: fail) up to this size; a larger one is read again if it fails
KEEP_RAW_BYTES = 1024 * 1024
#: what process() returns for a message it could not do (its cursor must not pass it)
NOT_DONE = frozenset({"vanished", "not-tracked"})


@dataclass
class ScanResult:
    folder: str
    kind: str = "tracked"
    new: int = 0
    #: judged by auto-tracking and not tracked
    skipped: int = 0
    gone: int = 0
    shunted: int = 0
    missing: bool = False


class MailboxWorker:
    def __init__(self, rt: MailboxRuntime, services: Services, *, should_stop: Callable[[], bool] = lambda: False):
        self.rt = rt
        self.services = services
        self.should_stop = should_stop
        #: called after each message of a scan with (folder, done, total)
        self.progress: Callable[[str, int, int], None] | None = None
        self.last_progress = time.monotonic()
        #: outcomes since start (tracked, relinked, shunted...), for STATUS=
        self.counts: dict[str, int] = {}
        #: watched folders seen for the first time: record, do not track
        self.baseline: set[str] = set()
        #: (folder, state) -> source ids to mark in the mailbox (Source.mark)
        self._marks: dict[tuple[str, MarkState], list[str]] = {}
        #: watched folders a scan found gone, for the next discover() to report
        self._dropped: set[str] = set()
        #: folders whose marks were checked since start (_remark)
        self._remarked: set[str] = set()
        #: watched folders whose message ids were renumbered (UIDVALIDITY) and that
        #: are being listed again: their mail is not judged again (_scan_watched)
        self._renumbered: set[str] = set()

    @property
    def mailbox(self):
        return self.rt.ctx.row

    # -- folder scan (backfill, catch-up) ----------------------------------------

    # -- watched folders (auto-tracking) ------------------------------------------

    async def discover(self, *, at_start: bool) -> tuple[list[str], list[str]]:
        """Find the folders auto-tracking watches; return (added, removed).

        At start, a folder auto-tracking has not watched before is first
        recorded as it is (its mail is not tracked retroactively); a folder
        that appears while the daemon runs is new mail, judged message by
        message."""
        rt = self.rt
        try:
            names = await rt.source.list_folders()
        except FolderMissing:
            names = []
        wanted = {f for f in names if f not in rt.folders and rt.auto_folders(f)}
        added = sorted(wanted - set(rt.watched))
        # a scan that found a watched folder gone dropped it already; it is still
        # reported as removed, so that the caller follows the change (its watcher)
        removed = sorted((set(rt.watched) | self._dropped) - wanted)
        self._dropped.clear()
        for folder in removed:
            rt.watched.pop(folder, None)
        if at_start:
            watched_before = {
                c.folder
                for c in FolderCursor.select(FolderCursor.folder).where(
                    (FolderCursor.mailbox == self.mailbox) & (FolderCursor.kind == "watched")
                )
            }
            self.baseline |= {f for f in added if f not in watched_before}
            # folders no longer watched (config or folder changes while we were away)
            stale = watched_before - wanted
            if stale:
                self._unwatch(sorted(stale), names)
        elif removed:
            self._unwatch(removed, names)
        for folder in added:
            rt.watched[folder] = watched_folder(folder)
        return added, removed

    def _unwatch(self, folders: list[str], names: list[str] | None = None) -> None:
        """Stop watching ``folders``.  ``names``: the mailbox's folders now; the mail
        of a folder not among them (deleted, renamed) has left it, and nothing
        would ever say so later (None: none of ``folders`` exists any more)."""
        with transaction(self.services.db):
            FolderCursor.update(kind="unwatched", state="unwatched", token=None).where(
                (FolderCursor.mailbox == self.mailbox) & (FolderCursor.folder.in_(folders))
            ).execute()
            SeenMessage.delete().where(
                (SeenMessage.mailbox == self.mailbox) & (SeenMessage.folder.in_(folders))
            ).execute()
        for folder in folders:
            if names is None or folder not in names:
                mark_gone(self.services.db, self.mailbox, folder, present_source_ids(self.mailbox, folder))

    # -- folder scan (backfill, catch-up) ----------------------------------------

    async def scan_folder(self, folder: str) -> ScanResult:
        """Bring the store up to date with a folder.  With a cursor token from
        the last scan, ask the backend only for what changed since (a catch-up);
        without one, or when the backend cannot use it, list the folder in full
        and diff the listing against the store."""
        kind = "watched" if folder in self.rt.watched else "tracked"
        result = None
        if kind == "tracked" or folder not in self.baseline:
            result = await self._catch_up(folder, kind)
        if result is None:
            result = await (self._scan_watched(folder) if kind == "watched" else self._scan_tracked(folder))
        if not result.missing and not self.should_stop():
            await self._remark(folder)
        return result

    async def _remark(self, folder: str) -> None:
        """Once per folder and start, mark again what the store holds and the
        mailbox does not show (marks follow commits: a crash in between, or a
        failed STORE, leaves a message unmarked).  One search per state."""
        source = self.rt.source
        if folder in self._remarked or not source.marks:
            return
        self._remarked.add(folder)
        mb = self.mailbox
        states: tuple[tuple[MarkState, Callable[..., set[str]]], ...] = (
            ("tracked", present_source_ids),
            ("failed", shunted_source_ids),
        )
        for state, held in states:
            try:
                lacking = await source.unmarked(folder, state)
            except MailboxUnavailable:
                raise
            except SourceError as exc:  # best effort, like every mark (a folder gone meanwhile...)
                log.warning("could not look for unmarked mail in %s/%s: %s", self.rt.name, folder, exc)
                return
            missing = sorted((lacking or set()) & held(mb, folder))
            if missing:
                log.info(
                    "marking %d message(s) in %s/%s as %s again",
                    len(missing),
                    self.rt.name,
                    folder,
                    state,
                    extra={"event": "remark", "mailbox": self.rt.name, "folder": folder, "count": len(missing)},
                )
                self._marks.setdefault((folder, state), []).extend(missing)
        await self.flush_marks()

    async def _catch_up(self, folder: str, kind: str) -> ScanResult | None:
        """Apply the changes since the folder's token; None when there is no
        usable token (then the caller lists the folder in full)."""
        mb = self.mailbox
        token = folder_token(mb, folder, kind=kind)
        if token is None:
            return None
        try:
            delta = await self.rt.source.list_changes(folder, token)
        except FolderMissing:
            delta = None
        if delta is None:
            with transaction(self.services.db):
                save_token(mb, folder, None)  # a full listing sets a new one
            return None
        result = ScanResult(folder, kind=kind)
        db = self.services.db
        if delta.empty:
            with transaction(db):
                if delta.token != token:
                    save_token(mb, folder, delta.token)
                set_folder_state(mb, folder, "ok", synced=True, kind=kind)
            return result
        set_folder_state(mb, folder, "syncing", kind=kind)
        gone = set(delta.gone)
        seen_gone = set(delta.gone)
        if delta.present is not None:  # the backend could only say what is there now
            gone = present_source_ids(mb, folder) - delta.present
            seen_gone = seen_source_ids(mb, folder) - delta.present if kind == "watched" else set()
        with transaction(db):
            # the gone first: a token commits "everything up to here", expunges included
            result.gone = mark_gone(db, mb, folder, gone)
            if kind == "watched":
                forget_seen(db, mb, folder, seen_gone)
            if not delta.added:
                save_token(mb, folder, delta.token)
        known = known_among(mb, folder, delta.added) if delta.added else set()
        todo = [sid for sid in delta.added if sid not in known]
        complete = await self._process_all(folder, todo, delta.added, result, token=delta.token)
        if not self.should_stop():
            with transaction(db):
                if complete and delta.added:
                    save_token(mb, folder, delta.token)
                set_folder_state(mb, folder, "ok", synced=True, kind=kind)
        return result

    async def _scan_watched(self, folder: str) -> ScanResult:
        result = ScanResult(folder, kind="watched")
        mb = self.mailbox
        try:
            listing = await self.rt.source.list_messages(folder)
        except FolderMissing:
            # a watched folder that went away is simply no longer watched
            self.rt.watched.pop(folder, None)
            self._dropped.add(folder)
            self._unwatch([folder])
            result.missing = True
            return result
        set_folder_state(mb, folder, "syncing", kind="watched")
        present = present_source_ids(mb, folder)
        seen = seen_source_ids(mb, folder)
        known = present | seen | shunted_source_ids(mb, folder)
        listed = set(listing.messages)
        todo = _todo(listing, known)
        if folder not in self.baseline and self._was_renumbered((present | seen) - listed, listed):
            return await self._rescan_renumbered(folder, listing, todo, present - listed, seen - listed, result)
        result.gone = mark_gone(self.services.db, mb, folder, present - listed)
        forget_seen(self.services.db, mb, folder, seen - listed)
        if folder in self.baseline:
            record_baseline(self.services.db, mb, folder, todo)
            self.baseline.discard(folder)
            log.info(
                "auto-tracking now watches %s/%s: %d message(s) already there are left as they are",
                self.rt.name,
                folder,
                len(todo),
                extra={"event": "watch-baseline", "mailbox": self.rt.name, "folder": folder, "count": len(todo)},
            )
            todo = []
        complete = await self._process_all(folder, todo, listing.messages, result, token=listing.token)
        if not self.should_stop():
            with transaction(self.services.db):
                if complete and listing.token is not None:
                    save_token(mb, folder, listing.token)
                set_folder_state(mb, folder, "ok", synced=True, kind="watched")
        return result

    async def _rescan_renumbered(
        self, folder: str, listing: Listing, todo: list[str], void_present: set[str], void_seen: set[str], result
    ) -> ScanResult:
        """A watched folder whose every id is void (a new UIDVALIDITY): the mail
        is the same mail, judged before or there from the start.  Each message
        is identified again, not judged: one tracked already is located, any
        other noted as seen.  The void notes and the old token stay until every
        message is done, so that a crash midway comes back here, not to judging."""
        mb = self.mailbox
        log.info(
            "the message ids of %s/%s were renumbered: its %d message(s) are identified again, not judged",
            self.rt.name,
            folder,
            len(todo),
            extra={"event": "watch-renumbered", "mailbox": self.rt.name, "folder": folder, "count": len(todo)},
        )
        self._renumbered.add(folder)
        try:
            await self._process_all(folder, todo, listing.messages, result, token=None)
        finally:
            self._renumbered.discard(folder)
        if self.should_stop():
            return result
        done = present_source_ids(mb, folder) | seen_source_ids(mb, folder) | shunted_source_ids(mb, folder)
        if set(todo) - done:  # some vanished meanwhile: the next look finishes it
            return result
        result.gone = mark_gone(self.services.db, mb, folder, void_present)
        forget_seen(self.services.db, mb, folder, void_seen)
        with transaction(self.services.db):
            if listing.token is not None:
                save_token(mb, folder, listing.token)
            set_folder_state(mb, folder, "ok", synced=True, kind="watched")
        return result

    def _was_renumbered(self, void: set[str], listed: set[str]) -> bool:
        """True when the ids a folder's notes hold and the ids listed now are of
        different generations only (IMAP: another UIDVALIDITY)."""
        gen = self.rt.source.id_generation
        old = {gen(s) for s in void} - {None}
        new = {gen(s) for s in listed} - {None}
        return bool(old) and bool(new) and old.isdisjoint(new)

    async def _process_all(
        self, folder: str, todo: list[str], hints: dict[str, str | None], result: ScanResult, *, token: str | None
    ) -> bool:
        """Process ``todo`` in order.  With the backend's ``token``, each message
        carries its own cursor token; a message that vanished before it could
        be read stops the cursor there (its fate is unknown until the next
        look).  True when the cursor may move to ``token``: every message done.

        The messages are read, parsed and their attachments written ahead, in
        batches (:class:`~mailfiler.service.readahead.ReadAhead`).  In a tracked
        folder they also commit in batches of :data:`COMMIT_BATCH`
        (:class:`_Commits`); a message that cannot join a batch (not read, not
        parseable) first commits the batch before it, so commits stay in
        ``todo`` order."""
        advancing = token is not None
        source = self.rt.source
        fctx = self.rt.context(folder)
        commits = _Commits(self, folder, result) if fctx is not None and fctx.tracked else None
        ahead = self._read_ahead(folder, todo, hints)
        stopped = False
        read: bytes | Exception | object | None = None
        parsed: ParsedMessage | None = None
        try:
            for done, sid in enumerate(todo, 1):
                if self.should_stop():
                    stopped = True
                    break
                read = parsed = None  # the last message's, not held while the next is read
                read = await ahead.get(sid)
                step = source.message_token(token, sid) if advancing and token is not None else None
                parsed = ahead.parsed(sid)
                if commits is not None and isinstance(read, bytes):
                    if parsed is None:
                        parsed = _parse_or_none(read)
                    if parsed is not None:
                        await commits.add(sid, hints[sid], read, parsed, step)
                        self._progress(folder, done, len(todo))
                        await asyncio.sleep(0)
                        continue
                if commits is not None:
                    await commits.flush()
                outcome = await self.process(folder, sid, hints[sid], token=step, read=read, parsed=parsed)
                if outcome.event in NOT_DONE:
                    advancing = False
                _count(result, outcome)
                self._progress(folder, done, len(todo))
                # let signals, the watchdog, other mailboxes and the read-ahead run
                await asyncio.sleep(0)
            if commits is not None:
                # what is parsed is committed, also when stopping (the batch "in flight")
                await commits.flush()
        except MailboxUnavailable:
            if commits is not None:  # the connection failed, not the store: keep what is read
                await commits.flush()
            raise
        finally:
            await ahead.aclose()
        await self.flush_marks()
        return advancing and not stopped and (commits is None or commits.complete)

    def _progress(self, folder: str, done: int, total: int) -> None:
        if self.progress:
            self.progress(folder, done, total)

    async def _scan_tracked(self, folder: str) -> ScanResult:
        result = ScanResult(folder)
        source = self.rt.source
        if not await source.folder_exists(folder):
            if self.rt.create_missing:
                await source.create_folder(folder)
                log.info("created missing folder %s/%s", self.rt.name, folder, extra={"event": "folder-created"})
            else:
                set_folder_state(self.mailbox, folder, "missing", f"folder {folder!r} does not exist in the mailbox")
                save_token(self.mailbox, folder, None)
                log.warning(
                    "tracked folder %s/%s does not exist; waiting for it to appear",
                    self.rt.name,
                    folder,
                    extra={"event": "folder-missing", "mailbox": self.rt.name, "folder": folder},
                )
                result.missing = True
                return result
        set_folder_state(self.mailbox, folder, "syncing", kind="tracked")
        try:
            listing = await source.list_messages(folder)
        except FolderMissing as exc:
            set_folder_state(self.mailbox, folder, "missing", str(exc))
            save_token(self.mailbox, folder, None)
            result.missing = True
            return result
        present = present_source_ids(self.mailbox, folder)
        known = present | shunted_source_ids(self.mailbox, folder)
        gone = present - set(listing.messages)
        result.gone = mark_gone(self.services.db, self.mailbox, folder, gone)
        todo = _todo(listing, known)
        complete = await self._process_all(folder, todo, listing.messages, result, token=listing.token)
        if not self.should_stop():
            with transaction(self.services.db):
                if complete and listing.token is not None:
                    save_token(self.mailbox, folder, listing.token)
                set_folder_state(self.mailbox, folder, "ok", synced=True)
        return result

    # -- pushed changes ---------------------------------------------------------

    async def handle(self, changes: list[Change]) -> None:
        i = 0
        while i < len(changes):
            change = changes[i]
            i += 1
            if self.should_stop():
                return
            fctx = self.rt.context(change.folder)
            if fctx is None:
                continue
            if change.kind == "rescan":
                await self.scan_folder(change.folder)
            elif change.kind == "gone" and change.source_id:
                if not fctx.tracked:
                    forget_seen(self.services.db, self.mailbox, change.folder, [change.source_id])
                n = mark_gone(self.services.db, self.mailbox, change.folder, [change.source_id])
                if n:
                    log.info(
                        "%s left %s/%s",
                        label_at(self.mailbox, change.folder, change.source_id),
                        self.rt.name,
                        change.folder,
                        extra={
                            "event": "left-folder",
                            "mailbox": self.rt.name,
                            "folder": change.folder,
                            "source_id": change.source_id,
                        },
                    )
            elif change.kind == "added" and change.source_id:
                # arrivals in a row in one folder (a mass move) are read ahead together
                run = [change]
                while i < len(changes) and changes[i].kind == "added" and changes[i].folder == change.folder:
                    run.append(changes[i])
                    i += 1
                todo = [c for c in run if c.source_id and not self._already_here(c.folder, c.source_id)]
                await self._process_pushed(change.folder, todo)
            await asyncio.sleep(0)
        await self.flush_marks()
        rescanned = {c.folder for c in changes if c.kind == "rescan"}
        for folder in dict.fromkeys(c.folder for c in changes):
            fctx = self.rt.context(folder)
            if fctx is None or folder in rescanned or self.should_stop():
                continue
            # a push is applied as it comes; a catch-up from the folder's token then
            # moves the token past it (and picks up anything the push left out)
            if await self._catch_up(folder, fctx.kind) is None:
                set_folder_state(self.mailbox, folder, "ok", synced=True, kind=fctx.kind)

    async def _process_pushed(self, folder: str, todo: list[Change]) -> None:
        hints = {c.source_id: c.hint for c in todo if c.source_id}
        ahead = self._read_ahead(folder, list(hints), hints)
        try:
            for sid, hint in hints.items():
                if self.should_stop():
                    return
                read = await ahead.get(sid)
                await self.process(folder, sid, hint, read=read, parsed=ahead.parsed(sid))
                await asyncio.sleep(0)
        finally:
            await ahead.aclose()

    def _read_ahead(self, folder: str, todo: list[str], hints: dict[str, str | None]) -> ReadAhead:
        fctx = self.rt.context(folder)
        services = self.services
        # attachments are written ahead only where every message is tracked: a
        # watched folder's mail may be judged not to be, and must leave nothing behind
        blobs = services.tracker.blobs if fctx is not None and fctx.tracked else None
        return ReadAhead(
            self.rt.source,
            folder,
            todo,
            hints,
            services.max_message_bytes,
            parser=services.parser,
            blobs=blobs,
            budget=services.backfill_memory,
        )

    def _already_here(self, folder: str, source_id: str) -> bool:
        loc = Location.select(Location.id).where(
            (Location.mailbox == self.mailbox)
            & (Location.folder == folder)
            & (Location.source_id == source_id)
            & (Location.gone_at.is_null())
        )
        shunt = Shunt.select(Shunt.id).where(
            (Shunt.mailbox == self.mailbox)
            & (Shunt.folder == folder)
            & (Shunt.source_id == source_id)
            & (Shunt.resolved_at.is_null())
        )
        seen = SeenMessage.select(SeenMessage.id).where(
            (SeenMessage.mailbox == self.mailbox)
            & (SeenMessage.folder == folder)
            & (SeenMessage.source_id == source_id)
        )
        return loc.exists() or shunt.exists() or seen.exists()

    # -- one message ---------------------------------------------------------------

    async def process(
        self,
        folder: str,
        source_id: str,
        hint: str | None,
        *,
        token: str | None = None,
        read: bytes | Exception | object | None = NOT_READ,
        parsed: ParsedMessage | None = None,
    ) -> Outcome:
        """Track one message; its outcome, always an :class:`Outcome`: the
        tracker's, or ``shunted``, or ``vanished`` when the message was gone
        before it could be read (a move in progress), or ``not-tracked`` when its
        folder no longer is (a reload); these two are not done (see :data:`NOT_DONE`).
        ``token``: the folder's cursor token to commit with it.  ``read``: what
        a read-ahead got for it (the bytes, the error reading it raised, None
        when it was gone); by default the message is read here.  ``parsed``:
        ``read`` parsed already (by a parse helper); else it is parsed here."""
        source = self.rt.source
        fctx = self.rt.context(folder)
        if fctx is None:
            return Outcome("not-tracked", None, "", detail=f"{folder} is no longer tracked")
        raw: bytes | None = None
        try:
            if read is NOT_READ:
                size = await source.size(folder, source_id, hint)
                if size > self.services.max_message_bytes:
                    raise too_large(size, self.services.max_message_bytes)
                raw = await source.fetch(folder, source_id, hint)
            elif read is None:
                raise MessageVanished(f"{folder}/{source_id} is gone", folder=folder, source_id=source_id)
            elif isinstance(read, Exception):
                raise read
            else:
                assert isinstance(read, bytes)
                raw = read
            if parsed is None:
                parsed = parse_message(raw)
            if folder in self._renumbered and not fctx.tracked and not self._tracked_already(parsed):
                reason = "in the folder before its message ids were renumbered (a new UIDVALIDITY)"
                outcome = self.services.tracker.note_seen(self.rt.ctx, fctx, source_id, parsed, reason, token)
            else:
                outcome = await self._track_with_retries(fctx, folder, source_id, parsed, token)
        except MessageVanished:
            return Outcome("vanished", None, "", detail=f"{folder}/{source_id} is gone")
        except MessageError as exc:
            return await self._shunt(folder, source_id, hint, raw, exc.code, str(exc))
        except RecursionError:
            return await self._shunt(folder, source_id, hint, raw, "not-parseable", "MIME structure nested too deeply")
        except MailboxUnavailable:
            # the connection failed, not the message: the supervisor reconnects and catches up
            raise
        except Exception as exc:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.debug("processing failed", exc_info=True)
            return await self._shunt(folder, source_id, hint, raw, ProcessingFailed.code, detail)
        self._done(folder, source_id, outcome, parsed)
        return outcome

    def _done(
        self, folder: str, source_id: str, outcome: Outcome, parsed: ParsedMessage, *, in_batch: bool = False
    ) -> None:
        """After a message's commit: counts, its log line, its mark.  ``in_batch``:
        committed in a backfill batch, whose summary line is at info (:class:`_Commits`);
        the message's own line is then at debug (it cost ~14 % of a backfill's time)."""
        self.last_progress = time.monotonic()
        self.counts[outcome.event] = self.counts.get(outcome.event, 0) + 1
        if not in_batch or log.isEnabledFor(logging.DEBUG):
            self._log_outcome(outcome, folder, parsed.subject, logging.DEBUG if in_batch else logging.INFO)
        if outcome.event != "skipped":
            self._note_mark(folder, source_id, "tracked")

    def _tracked_already(self, parsed: ParsedMessage) -> bool:
        return txsql.activity_id(self.services.db, parsed.message_id) is not None

    async def _track_with_retries(self, fctx, folder: str, source_id: str, parsed, token: str | None = None) -> Outcome:
        """Track, retrying a busy or restarting store; the wait between tries
        yields the event loop (pushes, signals, the watchdog and other mailboxes go on)."""
        delay = 0.05
        for attempt in range(STORE_RETRIES):
            try:
                # process() only sees locations that are not in the shunt
                return self.services.tracker.track(
                    self.rt.ctx, fctx, source_id, parsed, may_be_shunted=False, token=token
                )
            except pw.OperationalError:
                if attempt == STORE_RETRIES - 1:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 4, 2.0)
        raise AssertionError("unreachable")

    async def _shunt(self, folder, source_id, hint, raw, reason: str, detail: str) -> Outcome:
        raw_file: Path | None = None
        tmp: Path | None = None
        if raw is None and reason == MessageTooLarge.code:
            # never read into memory: stream a copy for the shunt
            fd, name = tempfile.mkstemp(dir=self.services.state_dir, prefix=".shunt-")
            os.close(fd)
            tmp = Path(name)
            try:
                if await self.rt.source.copy_raw(folder, source_id, hint, name):
                    raw_file = tmp
            except (OSError, MessageVanished):
                raw_file = None
        try:
            row = self.services.shunts.keep(
                self.mailbox, folder, source_id, reason=reason, detail=detail, raw=raw, raw_file=raw_file
            )
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        log.warning(
            "shunted %s in %s/%s: %s",
            label_of_raw(raw, place=f"{self.rt.name}/{folder}/{source_id}"),
            self.rt.name,
            folder,
            detail,
            extra={
                "event": "shunted",
                "mailbox": self.rt.name,
                "folder": folder,
                "source_id": source_id,
                "reason": reason,
                "shunt_id": row.id,
            },
        )
        self.last_progress = time.monotonic()
        self.counts["shunted"] = self.counts.get("shunted", 0) + 1
        self._note_mark(folder, source_id, "failed")
        return Outcome("shunted", None, "", detail=detail)

    # -- marks in the user's mail client (IMAP keywords, opt-in) --------------------

    def _note_mark(self, folder: str, source_id: str, state: MarkState) -> None:
        if self.rt.source.marks:
            self._marks.setdefault((folder, state), []).append(source_id)

    async def flush_marks(self) -> None:
        """Mark what was tracked or shunted since the last flush (after the
        commits: a mark is only ever shown for what the store holds).  Best
        effort: a failure is logged and tracking goes on."""
        marks, self._marks = self._marks, {}
        for (folder, state), sids in marks.items():
            try:
                await self.rt.source.mark(folder, sids, state)
            except Exception as exc:  # noqa: BLE001 - a mark never blocks tracking
                log.warning(
                    "could not mark %d message(s) in %s/%s as %s: %s",
                    len(sids),
                    self.rt.name,
                    folder,
                    state,
                    exc,
                    extra={"event": "mark-failed", "mailbox": self.rt.name, "folder": folder},
                )

    def _log_outcome(self, outcome: Outcome, folder: str, subject: str, level: int = logging.INFO) -> None:
        if outcome.event == "known":
            return
        if outcome.event == "skipped":
            # most mail outside tracked folders is not tracked: not news
            log.debug(
                "not tracked: %s in %s/%s: %s",
                message_label(outcome.message_id, subject),
                self.rt.name,
                folder,
                outcome.detail,
                extra={"event": "skipped", "message_id": outcome.message_id, "mailbox": self.rt.name},
            )
            return
        text = {
            "tracked": "tracked",
            "located": "also in",
            "relinked": "re-linked",
            "kept-regarding": "kept regarding of",
        }.get(outcome.event, outcome.event)
        log.log(
            level,
            "%s %s in %s/%s regarding %s%s",
            text,
            message_label(outcome.message_id, subject),
            self.rt.name,
            folder,
            outcome.regarding or "-",
            f" ({outcome.detail})" if outcome.detail else "",
            extra={
                "event": outcome.event,
                "message_id": outcome.message_id,
                "mailbox": self.rt.name,
                "folder": folder,
                "regarding": outcome.regarding,
                "activity_id": outcome.activity_id,
            },
        )


def _count(result: ScanResult, outcome: Outcome) -> None:
    if outcome.event == "shunted":
        result.shunted += 1
    elif outcome.event == "skipped":
        result.skipped += 1
    elif outcome.event not in NOT_DONE:
        result.new += 1


def _parse_or_none(raw: bytes) -> ParsedMessage | None:
    """The parse, or None when it fails (process() parses again, meets the error and shunts)."""
    try:
        return parse_message(raw)
    except (Exception, RecursionError):  # noqa: BLE001
        return None


@dataclass
class _Pending:
    source_id: str
    hint: str | None
    #: None: not kept (large); read again should the message fail
    raw: bytes | None
    parsed: ParsedMessage
    token: str | None
    #: what it holds in memory
    nbytes: int = 0


class _Commits:
    """A tracked folder's scan, committed :data:`COMMIT_BATCH` messages at a time,
    or fewer when they hold more than a batch's bytes (``limits.backfill_memory``).

    A message's large attachments are written to their files as it joins the
    batch (as the read-ahead does), and their bytes dropped; so is a large
    message's raw form.  What waits is then its rows, not its mail.

    One transaction per batch (:func:`track_batch`: a savepoint per message)
    instead of one per message: the commit and, on SQLite, the write lock
    are taken once.  Each message still carries its own cursor token, so
    the token committed is the last message's of the batch.  A message the
    batch cannot store is handled alone, as without batches (retried, then
    shunted with its reason), and the rest of the batch is committed after
    it; so is a batch whose commit failed on a busy store."""

    def __init__(self, worker: MailboxWorker, folder: str, result: ScanResult) -> None:
        self.worker, self.folder, self.result = worker, folder, result
        self.pending: list[_Pending] = []
        self.nbytes = 0
        self.max_bytes = batch_bytes(worker.services.backfill_memory)
        #: False once a message could not be committed (the cursor must not pass it)
        self.complete = True

    async def add(self, sid: str, hint: str | None, raw: bytes, parsed: ParsedMessage, token: str | None) -> None:
        blobs = self.worker.services.tracker.blobs
        if any(len(a.data) > INLINE_MAX for a in parsed.attachments):
            try:
                await asyncio.to_thread(put_large_attachments, blobs, parsed)
            except OSError:  # disk full...: the commit meets it again, for this message alone
                log.debug("writing a message's attachments ahead failed", exc_info=True)
        kept = raw if len(raw) <= KEEP_RAW_BYTES else None
        nbytes = len(kept or b"") + sum(len(a.data) for a in parsed.attachments) + len(parsed.body_text)
        self.pending.append(_Pending(sid, hint, kept, parsed, token, nbytes))
        self.nbytes += nbytes
        if len(self.pending) >= COMMIT_BATCH or self.nbytes >= self.max_bytes:
            await self.flush()

    async def flush(self) -> None:
        todo, self.pending, self.nbytes = self.pending, [], 0
        while todo:
            todo = await self._commit(todo)

    async def _commit(self, todo: list[_Pending]) -> list[_Pending]:
        """Commit ``todo``; what is left of it to commit after a failure."""
        worker = self.worker
        rt = worker.rt
        fctx = rt.context(self.folder)
        if fctx is None:  # no longer tracked (a reload): not committed, so not done
            self.complete = False
            return []
        items = [Item(rt.ctx, fctx, p.source_id, p.parsed, may_be_shunted=False, token=p.token) for p in todo]
        try:
            results = track_batch(worker.services.tracker, items)
        except pw.DatabaseError:  # the commit failed (busy or restarting store): each alone, with its retries
            results = [None] * len(todo)
        committed: dict[str, int] = {}
        try:
            for i, (pending, res) in enumerate(zip(todo, results, strict=True)):
                if isinstance(res, Outcome):
                    worker._done(self.folder, pending.source_id, res, pending.parsed, in_batch=True)  # noqa: SLF001
                    _count(self.result, res)
                    committed[res.event] = committed.get(res.event, 0) + 1
                    continue
                # this one failed (or the batch did): alone, as without batches; then the rest
                p = pending
                read = NOT_READ if p.raw is None else p.raw
                outcome = await worker.process(
                    self.folder, p.source_id, p.hint, token=p.token, read=read, parsed=p.parsed
                )
                if outcome.event in NOT_DONE:
                    self.complete = False
                _count(self.result, outcome)
                return todo[i + 1 :]
            return []
        finally:
            self._summary(committed)

    def _summary(self, committed: dict[str, int]) -> None:
        """The batch's line at info: what it committed, by outcome."""
        if not any(n for event, n in committed.items() if event != "known"):
            return
        rt = self.worker.rt
        n = sum(committed.values())
        what = ", ".join(f"{count} {event}" for event, count in sorted(committed.items()))
        log.info(
            "committed %d message(s) in %s/%s: %s",
            n,
            rt.name,
            self.folder,
            what,
            extra={"event": "batch-committed", "mailbox": rt.name, "folder": self.folder, "count": n, **committed},
        )


def _todo(listing: Listing, known: set[str]) -> list[str]:
    """What a full listing adds: in the backend's order when it gives cursor
    tokens (each message's token covers those before it), else by id."""
    if listing.token is not None:
        return [sid for sid in listing.messages if sid not in known]
    return sorted(sid for sid in listing.messages if sid not in known)
