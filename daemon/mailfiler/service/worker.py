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
from pathlib import Path

import peewee as pw

from mailfiler.errors import (
    MailboxUnavailable,
    MessageError,
    MessageTooLarge,
    MessageVanished,
    ProcessingFailed,
)
from mailfiler.service.backfill import COMMIT_BATCH, KEEP_RAW_BYTES, NOT_DONE, Backfill, ScanResult
from mailfiler.service.marks import Marks
from mailfiler.service.pushed import Pushed
from mailfiler.service.readahead import NOT_READ, ReadAhead, too_large
from mailfiler.service.reidentify import RENUMBERED, Reidentify
from mailfiler.service.runtime import MailboxRuntime, Services
from mailfiler.service.storewriter import PUSH, writer_for
from mailfiler.service.tags import Tags
from mailfiler.service.watch import Watch
from mailfiler.sources.base import MarkState
from mailfiler.tracking import txsql
from mailfiler.tracking.context import FolderContext
from mailfiler.tracking.labels import label_of_raw, message_label
from mailfiler.tracking.offloop import parse_off_loop
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.pipeline import Outcome

log = logging.getLogger("mailfiler.worker")

#: transient store errors (SQLite busy, PostgreSQL restart) are retried this
#: many times before the message is shunted as a persistent store error
STORE_RETRIES = 5


class MailboxWorker(Backfill, Watch, Reidentify, Pushed, Marks, Tags):
    """One mailbox's work, by job: backfill and catch-up (:mod:`.backfill`),
    watched folders (:mod:`.watch`), renumbered ids (:mod:`.reidentify`), pushed changes (:mod:`.pushed`), marks
    (:mod:`.marks`), tags (:mod:`.tags`); here the scan's entry and one message's processing."""

    def __init__(
        self, rt: MailboxRuntime, services: Services, *, should_stop: Callable[[], bool] = lambda: False
    ) -> None:
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
                parsed = await parse_off_loop(raw)
            if folder in self._renumbered and not fctx.tracked and not self._tracked_already(parsed):
                tracker, ctx, seen = self.services.tracker, self.rt.ctx, parsed
                outcome = await writer_for(self.services.db).run(
                    PUSH, lambda: tracker.note_seen(ctx, fctx, source_id, seen, RENUMBERED, token)
                )
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

    async def _track_with_retries(
        self, fctx: FolderContext, folder: str, source_id: str, parsed: ParsedMessage, token: str | None = None
    ) -> Outcome:
        """Track, retrying a busy or restarting store; neither the write nor the wait
        between tries blocks the event loop (pushes, signals, the watchdog and other
        mailboxes go on)."""
        tracker, ctx = self.services.tracker, self.rt.ctx

        def track() -> Outcome:
            return tracker.track(ctx, fctx, source_id, parsed, may_be_shunted=False, token=token)

        delay = 0.05
        for attempt in range(STORE_RETRIES):
            try:
                # process() only sees locations that are not in the shunt; the write runs on the
                # store's writer thread, before any backfill batch waiting there (storewriter.PUSH)
                return await writer_for(self.services.db).run(PUSH, track)
            except pw.OperationalError:
                if attempt == STORE_RETRIES - 1:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 4, 2.0)
        raise AssertionError("unreachable")

    async def _shunt(
        self, folder: str, source_id: str, hint: str | None, raw: bytes | None, reason: str, detail: str
    ) -> Outcome:
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


__all__ = ["COMMIT_BATCH", "KEEP_RAW_BYTES", "NOT_DONE", "MailboxWorker", "ScanResult"]
