"""Folder scans (backfill and catch-up) of tracked folders: diff a folder
against the store, read ahead, and commit in batches (one transaction per
batch, see :class:`_Commits`), the cursor token with the messages.
A part of :class:`~mailfiler.service.worker.MailboxWorker`."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import peewee as pw

from mailfiler.errors import (
    FolderMissing,
    MailboxUnavailable,
)
from mailfiler.service.readahead import NOT_READ, ReadAhead, batch_bytes, put_large_attachments
from mailfiler.service.storewriter import BACKFILL, writer_for
from mailfiler.service.workerpart import NOT_DONE, ScanResult, WorkerPart, count_outcome
from mailfiler.sources.base import Listing
from mailfiler.store.blobs import INLINE_MAX
from mailfiler.store.db import transaction
from mailfiler.tracking.batch import Item, track_batch
from mailfiler.tracking.folders import (
    folder_token,
    forget_seen,
    known_among,
    mark_gone,
    present_source_ids,
    save_token,
    seen_source_ids,
    set_folder_state,
    shunted_source_ids,
)
from mailfiler.tracking.offloop import parse_off_loop
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.pipeline import Outcome

#: a tracked folder's scan commits this many messages per transaction (at most:
#: a batch is also cut at readahead.batch_bytes(limits.backfill_memory) bytes)
COMMIT_BATCH = 50
#: a message waiting in a commit batch keeps its bytes (for the shunt, should it
#: fail) up to this size; a larger one is read again if it fails
KEEP_RAW_BYTES = 1024 * 1024
log = logging.getLogger("mailfiler.worker")


class Backfill(WorkerPart):
    """The worker's backfill and catch-up job."""

    async def _catch_up(self, folder: str, kind: str, *, backfill: bool = True) -> ScanResult | None:
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
        complete = await self._process_all(folder, todo, delta.added, result, token=delta.token, backfill=backfill)
        if not self.should_stop():
            with transaction(db):
                if complete and delta.added:
                    save_token(mb, folder, delta.token)
                set_folder_state(mb, folder, "ok", synced=True, kind=kind)
        return result

    async def _process_all(
        self,
        folder: str,
        todo: list[str],
        hints: dict[str, str | None],
        result: ScanResult,
        *,
        token: str | None,
        backfill: bool = True,
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
        # a backfill (a scan with a batch or more to track) logs a line per batch;
        # a few messages (a catch-up, a small folder) keep their lines
        quiet = backfill and len(todo) >= COMMIT_BATCH
        ahead = self._read_ahead(folder, todo, hints)
        commits = (
            _Commits(self, folder, result, quiet=quiet, ahead=ahead) if fctx is not None and fctx.tracked else None
        )
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
                        parsed = await _parse_or_none(read)
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
                count_outcome(result, outcome)
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
        todo = todo_of(listing, known)
        if self._was_renumbered(gone, set(listing.messages)):
            # the same mail under new ids: what the store knows is found by its headers
            todo = await self._reidentify(folder, todo, listing.messages, result)
        complete = await self._process_all(folder, todo, listing.messages, result, token=listing.token)
        if not self.should_stop():
            with transaction(self.services.db):
                if complete and listing.token is not None:
                    save_token(self.mailbox, folder, listing.token)
                set_folder_state(self.mailbox, folder, "ok", synced=True)
        return result


async def _parse_or_none(raw: bytes) -> ParsedMessage | None:
    """The parse, or None when it fails (process() parses again, meets the error and shunts)."""
    try:
        return await parse_off_loop(raw)
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

    def __init__(
        self,
        worker: Backfill,  # the MailboxWorker it is part of (process, _done)
        folder: str,
        result: ScanResult,
        *,
        quiet: bool = True,
        ahead: ReadAhead | None = None,
    ) -> None:
        #: the scan's read-ahead: a commit in flight counts against its budget
        self.ahead = ahead
        #: a backfill's batch logs a summary line, its messages' lines at debug;
        #: a catch-up after a push (pushed mail) logs each message at info
        self.quiet = quiet
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
            tracker = worker.services.tracker
            # on the store's writer thread: the event loop (pushes, reads ahead) goes on meanwhile
            # no new reading ahead while the batch commits (as when a commit blocked the
            # event loop): the mail in memory stays what the budget allows
            held = self.ahead.max_held if self.ahead is not None else 0
            if self.ahead is not None:
                self.ahead.hold(held)
            try:
                results = await writer_for(worker.services.db).run(BACKFILL, lambda: track_batch(tracker, items))
            finally:
                if self.ahead is not None:
                    self.ahead.unhold(held)
        except pw.DatabaseError:  # the commit failed (busy or restarting store): each alone, with its retries
            results = [None] * len(todo)
        committed: dict[str, int] = {}
        try:
            for i, (pending, res) in enumerate(zip(todo, results, strict=True)):
                if isinstance(res, Outcome):
                    worker._done(self.folder, pending.source_id, res, pending.parsed, in_batch=self.quiet)  # noqa: SLF001
                    count_outcome(self.result, res)
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
                count_outcome(self.result, outcome)
                return todo[i + 1 :]
            return []
        finally:
            self._summary(committed)

    def _summary(self, committed: dict[str, int]) -> None:
        """The batch's line at info: what it committed, by outcome."""
        if not self.quiet or not any(n for event, n in committed.items() if event != "known"):
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


def todo_of(listing: Listing, known: set[str]) -> list[str]:
    """What a full listing adds: in the backend's order when it gives cursor
    tokens (each message's token covers those before it), else by id."""
    if listing.token is not None:
        return [sid for sid in listing.messages if sid not in known]
    return sorted(sid for sid in listing.messages if sid not in known)
