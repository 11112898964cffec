"""Re-identifying a folder's mail after its message ids were renumbered (IMAP:
a new UIDVALIDITY), from the messages' header sections only.

The mail is the same mail under new ids.  Its Message-ID says which activity
each message is: one the store knows gets its new location (and any new
parties) from its headers; in a watched folder, one the store does not know
is noted as seen, not judged (it was there before).  Only what the headers
cannot settle is read whole by the usual scan: mail the store does not know in
a tracked folder (new mail), mail without a Message-ID (its synthetic id
hashes the body), and any message whose re-identification failed (so a shunt
keeps its whole copy).  A part of :class:`~mailfiler.service.worker.MailboxWorker`."""

from __future__ import annotations

import asyncio
import logging

from mailfiler.errors import MailboxUnavailable
from mailfiler.service.backfill import ScanResult, count_outcome
from mailfiler.service.storewriter import PUSH, writer_for
from mailfiler.service.workerpart import WorkerPart
from mailfiler.tracking.context import FolderContext
from mailfiler.tracking.offloop import parse_off_loop
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.pipeline import Outcome

log = logging.getLogger("mailfiler.worker")

#: why a message of a renumbered watched folder is noted as seen, not judged
RENUMBERED = "in the folder before its message ids were renumbered (a new UIDVALIDITY)"
#: header sections asked for at once (a few KB each)
HEADER_BATCH = 400


class Reidentify(WorkerPart):
    """The worker's re-identification after a renumbering."""

    async def _reidentify(
        self, folder: str, todo: list[str], hints: dict[str, str | None], result: ScanResult
    ) -> list[str]:
        """Settle what the headers can of ``todo``, in order; what is left to read whole."""
        fctx = self.rt.context(folder)
        if fctx is None or not todo:
            return todo
        left: list[str] = []
        for start in range(0, len(todo), HEADER_BATCH):
            chunk = todo[start : start + HEADER_BATCH]
            if self.should_stop():
                return left + todo[start:]
            heads = await self.rt.source.fetch_headers(folder, {sid: hints.get(sid) for sid in chunk})
            for sid in chunk:
                head = heads.get(sid)
                outcome = await self._relocate(fctx, folder, sid, head) if isinstance(head, bytes) else None
                if outcome is None:
                    left.append(sid)
                    continue
                count_outcome(result, outcome)
                await asyncio.sleep(0)
        await self.flush_marks()
        return left

    async def _relocate(self, fctx: FolderContext, folder: str, sid: str, head: bytes) -> Outcome | None:
        """One message from its header section; None: to be read whole."""
        try:
            msg: ParsedMessage = await parse_off_loop(head)
        except (Exception, RecursionError):  # noqa: BLE001 - read whole, where the error is handled
            return None
        if msg.synthetic_id:
            return None
        known = self._tracked_already(msg)
        if not known and fctx.tracked:
            return None  # new mail in a tracked folder: tracked from the whole message
        try:
            if known:
                outcome = await self._track_with_retries(fctx, folder, sid, msg, None)
            else:
                tracker, ctx = self.services.tracker, self.rt.ctx
                outcome = await writer_for(self.services.db).run(
                    PUSH, lambda: tracker.note_seen(ctx, fctx, sid, msg, RENUMBERED, None)
                )
        except MailboxUnavailable:
            raise
        except Exception:
            log.debug("re-identifying %s/%s from its headers failed", folder, sid, exc_info=True)
            return None
        self._done(folder, sid, outcome, msg)
        return outcome
