"""Track by tag (issue 20): a tag pass over the mailbox.  A part of
:class:`~mailfiler.service.worker.MailboxWorker`.

The backend says which messages' tags changed since each folder's tag cursor
(:meth:`~mailfiler.sources.base.Source.tag_changes`: IMAP asks CONDSTORE,
one command when nothing changed); for each, :func:`~mailfiler.tracking.tags.decide`
says what the tags ask for, and the store is changed in one transaction with
the folder's tag cursor, so a crash never leaves the cursor past a change not
applied (and applying one again finds it done: identity is the Message-ID).

* track: a message not tracked yet is read and tracked wherever it is (the
  rules and correlation decide its regarding, as for auto-tracked mail; a
  tracked folder's own regarding wins); one tracked already is left as it is.
* regard (``CRM:account:contoso``): as track, with that record as regarding;
  on a tracked message it sets the regarding (Set Regarding).
* untrack (the untrack tag, or the untrack folder): the activity is marked
  untracked and this mailbox's locations of it removed, when this mailbox
  tracked it; the mail is not touched.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from typing import Any

from mailfiler.errors import MailboxUnavailable, MessageError, MessageVanished, ProcessingFailed, SourceError
from mailfiler.service.readahead import too_large
from mailfiler.service.storewriter import PUSH, writer_for
from mailfiler.service.workerpart import WorkerPart
from mailfiler.sources.base import TagChange
from mailfiler.store.db import transaction
from mailfiler.store.models import utcnow
from mailfiler.tracking.context import FolderContext, tagged_message
from mailfiler.tracking.labels import label_at
from mailfiler.tracking.offloop import parse_off_loop
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.pipeline import Outcome
from mailfiler.tracking.tags import (
    TAGGED_SHUNT,
    Decision,
    TagOutcome,
    TagSettings,
    activity_by_message_id,
    decide,
    find_record,
    located_activity,
    save_tag_cursor,
    set_regarding,
    tag_cursors,
    untrack,
)
from mailfiler.util import crashpoints

log = logging.getLogger("mailfiler.worker")


class Tags(WorkerPart):
    """The worker's tag job."""

    async def tag_pass(self) -> dict[str, int]:
        """One pass over the mailbox's tag changes: counts by outcome."""
        settings, source = self.rt.tags, self.rt.source
        done: dict[str, int] = {}
        if settings is None or not source.tags:
            return done
        try:
            await self._tag_pass(done)
        except MailboxUnavailable:
            raise
        except SourceError as exc:  # the tags only: tracking by folder goes on
            log.warning(
                "tag pass in %s failed: %s",
                self.rt.name,
                exc,
                extra={"event": "tag-pass-failed", "mailbox": self.rt.name},
            )
        await self.flush_marks()
        return done

    async def _tag_pass(self, done: dict[str, int]) -> None:
        settings, source = self.rt.tags, self.rt.source
        assert settings is not None
        mailbox = self.mailbox
        query = settings.query
        async for delta in source.tag_changes(tag_cursors(mailbox), query):
            for change in delta.changes:
                if self.should_stop():
                    return
                event = await self._apply_tag(settings, delta.folder, change)
                done[event] = done.get(event, 0) + 1
                await asyncio.sleep(0)
            last = delta.changes[-1].token if delta.changes else None
            if delta.token is not None and last != delta.token:
                await self._commit(delta.folder, delta.token, None)

    async def _commit(self, folder: str, token: str | None, write: Callable[[], Any] | None) -> Any:
        """Run ``write`` (may be None) and advance the folder's tag cursor, in one transaction."""
        if write is None and token is None:
            return None
        db, mailbox_id = self.services.db, self.rt.ctx.row.id

        def tx() -> Any:
            crashpoints.point("before_commit")  # the kill-at-every-commit tests (tests/test_crash_tags.py)
            with transaction(db):
                out = write() if write is not None else None
                save_tag_cursor(mailbox_id, folder, token)
            crashpoints.point("after_commit")
            return out

        return await writer_for(db).run(PUSH, tx)

    async def _apply_tag(self, settings: TagSettings, folder: str, change: TagChange) -> str:
        decision = decide(settings, folder, change.tags)
        sid, token = change.source_id, change.token
        if decision.action == "none":
            await self._commit(folder, token, None)
            return "none"
        if decision.ignored:
            log.warning(
                "%s in %s/%s names more than one record; %s is taken, not %s",
                label_at(self.mailbox, folder, sid),
                self.rt.name,
                folder,
                decision.ref,
                ", ".join(decision.ignored),
                extra={"event": "tag-ambiguous", "mailbox": self.rt.name, "folder": folder},
            )
        known = located_activity(self.rt.ctx.row.id, folder, sid)
        if decision.action == "untrack" and folder in self.rt.folders:
            # a tracked folder tracks what is filed there (as in Dynamics): untracking it there
            # would last only until the folder is next listed; moving it out is the way
            log.warning(
                "not untracked: %s is in the tracked folder %s/%s; move it out of the folder (or into %s)",
                label_at(self.mailbox, folder, sid),
                self.rt.name,
                folder,
                settings.untrack_folder or "a folder that is not tracked",
                extra={"event": "untrack-refused", "mailbox": self.rt.name, "folder": folder},
            )
            await self._commit(folder, token, None)
            return "untrack-refused"
        if decision.action == "untrack":
            return await self._untrack(folder, sid, token, known, decision)
        record = None
        if decision.ref is not None:
            record = find_record(decision.ref)
            if record is None:
                log.warning(
                    "tag %s%s in %s/%s names no record in the store; the message is tracked as for tag %s",
                    settings.set_regarding_prefix,
                    decision.ref,
                    self.rt.name,
                    folder,
                    settings.tag,
                    extra={"event": "tag-record-missing", "mailbox": self.rt.name, "folder": folder},
                )
        folder_ctx = self.rt.folders.get(folder)
        if known is not None:
            if record is None:
                await self._commit(folder, token, None)
                return "known"
            now, rec = utcnow(), record
            here = folder_ctx.regarding if folder_ctx is not None else None
            outcome: TagOutcome = await self._commit(folder, token, lambda: set_regarding(known, rec, here, now))
            self._log_tag(outcome, folder, sid)
            return outcome.event
        # not tracked here yet: a tracked folder's own regarding wins (the folder decides, as in Dynamics)
        if folder_ctx is not None and (folder_ctx.regarding is not None or record is None):
            fctx = folder_ctx
        else:
            fctx = tagged_message(folder, record)
        return await self._track_tagged(fctx, folder, sid, token)

    async def _track_tagged(self, fctx: FolderContext, folder: str, sid: str, token: str | None) -> str:
        source, raw = self.rt.source, None
        try:
            size = await source.size(folder, sid)
            if size > self.services.max_message_bytes:
                raise too_large(size, self.services.max_message_bytes)
            raw = await source.fetch(folder, sid)
            parsed = await parse_off_loop(raw)
            tracker, ctx, msg = self.services.tracker, self.rt.ctx, parsed

            def track() -> Outcome:
                return tracker.track(ctx, fctx, sid, msg, may_be_shunted=True)

            outcome: Outcome = await self._commit(folder, token, track)
        except MessageVanished:
            await self._commit(folder, token, None)  # it left; tagged where it went, it comes up there
            return "vanished"
        except MailboxUnavailable:
            raise
        except MessageError as exc:
            await self._shunt(folder, sid, None, raw, exc.code, TAGGED_SHUNT + str(exc))
            await self._commit(folder, token, None)
            return "shunted"
        except Exception as exc:  # noqa: BLE001 - one message's failure ends in the shunt, as in process()
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            await self._shunt(folder, sid, None, raw, ProcessingFailed.code, TAGGED_SHUNT + detail)
            await self._commit(folder, token, None)
            return "shunted"
        self._done(folder, sid, outcome, parsed)
        return outcome.event

    async def _untrack(self, folder: str, sid: str, token: str | None, known: int | None, decision: Decision) -> str:
        activity_id = known
        if activity_id is None:
            # not located here (moved into the untrack folder): find it by its Message-ID
            heads = await self.rt.source.fetch_headers(folder, {sid: None})
            head = heads.get(sid)
            msg: ParsedMessage | None = None
            if isinstance(head, bytes):
                try:
                    msg = await parse_off_loop(head)
                except (Exception, RecursionError):  # noqa: BLE001 - no Message-ID: nothing to untrack
                    msg = None
            if msg is not None and not msg.synthetic_id:
                activity_id = activity_by_message_id(msg.message_id)
        if activity_id is None:
            await self._commit(folder, token, None)
            return "not-tracked"
        mailbox, now, aid = self.rt.ctx.row, utcnow(), activity_id
        outcome: TagOutcome = await self._commit(
            folder, token, lambda: untrack(self.services.db, mailbox, aid, decision.reason, now)
        )
        self._log_tag(outcome, folder, sid)
        return outcome.event

    def _log_tag(self, outcome: TagOutcome, folder: str, sid: str) -> None:
        self.counts[outcome.event] = self.counts.get(outcome.event, 0) + 1
        if outcome.event in ("known", "untracked-already"):
            return
        level = logging.WARNING if outcome.event == "untrack-refused" else logging.INFO
        text = {
            "untracked": "untracked",
            "untrack-refused": "not untracked",
            "regarding-set": "regarding set to " + (outcome.regarding or "-") + " for",
            "regarding-kept": "regarding kept for",
        }.get(outcome.event, outcome.event)
        log.log(
            level,
            "%s activity %s (%s/%s %s): %s",
            text,
            outcome.activity_id,
            self.rt.name,
            folder,
            sid,
            outcome.detail,
            extra={
                "event": outcome.event,
                "mailbox": self.rt.name,
                "folder": folder,
                "source_id": sid,
                "activity_id": outcome.activity_id,
                "regarding": outcome.regarding,
            },
        )
