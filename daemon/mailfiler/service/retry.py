"""Retry shunted messages from their kept copies (``mailfiler shunt retry``)."""

from __future__ import annotations

import asyncio
import logging
import traceback

from mailfiler.errors import MessageError, MessageTooLarge, NotFound, ProcessingFailed
from mailfiler.service.runtime import Services
from mailfiler.store.models import Mailbox, Shunt, TrackedFolder
from mailfiler.store.records import get_by_ref
from mailfiler.tracking.context import FolderContext, MailboxContext, tagged_message, watched_folder
from mailfiler.tracking.labels import message_label
from mailfiler.tracking.parse import parse_message
from mailfiler.tracking.tags import TAGGED_SHUNT

log = logging.getLogger("mailfiler.shunt")


def _contexts(services: Services, row: Shunt) -> tuple[MailboxContext, FolderContext]:
    rt = services.mailboxes.get(row.mailbox.name)
    if rt is not None and row.folder in rt.folders:
        return rt.ctx, rt.folders[row.folder]
    if rt is not None and (row.detail or "").startswith(TAGGED_SHUNT):
        # shunted by track by tag: the user asked for it to be tracked, wherever it is
        return rt.ctx, tagged_message(row.folder)
    if rt is not None and rt.auto_folders(row.folder):
        # shunted in a folder auto-tracking watches: judged as it would have been
        return rt.ctx, watched_folder(row.folder)
    # the folder is no longer tracked: track it with what the store knows
    mb: Mailbox = row.mailbox
    tf = TrackedFolder.get_or_none((TrackedFolder.mailbox == mb) & (TrackedFolder.folder == row.folder))
    if tf is None:
        tf = TrackedFolder.create(mailbox=mb, folder=row.folder, regarding_ref=None, active=False)
    rec = get_by_ref(tf.regarding_ref) if tf.regarding_ref else None
    ctx = rt.ctx if rt else MailboxContext(row=mb, owner_addresses=frozenset({mb.owner}))
    return ctx, FolderContext(row=tf, regarding=rec)


def retry(services: Services, ids: list[int] | None) -> list[dict]:
    """Retry the given shunt ids (all pending when None); one result each."""
    q = Shunt.select().where(Shunt.resolved_at.is_null()).order_by(Shunt.id)
    if ids is not None:
        q = Shunt.select().where(Shunt.id.in_(ids)).order_by(Shunt.id)
        found = {s.id for s in q}
        missing = sorted(set(ids) - found)
        if missing:
            raise NotFound(f"no shunted message with id {', '.join(map(str, missing))} (see `mailfiler shunt list`)")
    results = []
    for row in q:
        if row.resolved_at is not None:
            results.append({"id": row.id, "result": "already-resolved"})
            continue
        raw = services.shunts.raw(row)
        if raw is None:
            rt = services.mailboxes.get(row.mailbox.name)
            try:
                raw = asyncio.run(rt.source.fetch(row.folder, row.source_id)) if rt else None
            except MessageError:
                raw = None
        if raw is None:
            results.append({"id": row.id, "result": "no-copy", "detail": "no kept copy and the source message is gone"})
            continue
        mctx, fctx = _contexts(services, row)
        try:
            if len(raw) > services.max_message_bytes:
                raise MessageTooLarge(
                    f"message is {len(raw)} bytes; limits.max_message_bytes is {services.max_message_bytes}",
                    size=len(raw),
                )
            parsed = parse_message(raw)
            outcome = services.tracker.track(mctx, fctx, row.source_id, parsed)
        except Exception as exc:  # noqa: BLE001 - report and keep it shunted
            # the same reason and detail the daemon gives (service/worker.py)
            if isinstance(exc, MessageError):
                code, detail = exc.code, str(exc)
            else:
                code = ProcessingFailed.code
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            # the kept copy is already there: do not write a second one
            keep_raw = None if row.raw_path else raw
            if fctx.kind == "tagged":
                detail = TAGGED_SHUNT + detail  # and the next retry tracks it as tagged too
            services.shunts.keep(row.mailbox, row.folder, row.source_id, reason=code, detail=detail, raw=keep_raw)
            results.append({"id": row.id, "result": "failed", "reason": code, "detail": detail})
            continue
        if outcome.event == "skipped":
            # read at last, and auto-tracking leaves it alone: the shunt is resolved
            log.info(
                "shunt %d read: %s not tracked (%s)",
                row.id,
                message_label(outcome.message_id, parsed.subject),
                outcome.detail,
                extra={"event": "unshunted", "shunt_id": row.id},
            )
            results.append(
                {"id": row.id, "result": "skipped", "message_id": outcome.message_id, "detail": outcome.detail}
            )
            continue
        label = message_label(outcome.message_id, parsed.subject)
        log.info("shunt %d tracked: %s", row.id, label, extra={"event": "unshunted", "shunt_id": row.id})
        rt = services.mailboxes.get(row.mailbox.name)
        if rt is not None and rt.source.marks:
            # $TrackFailed becomes $Tracked in the user's client (best effort: the source logs a failure)
            try:
                asyncio.run(rt.source.mark(row.folder, [row.source_id], "tracked"))
            except Exception:  # a mark never undoes what was tracked
                log.warning("could not mark shunt %d as tracked", row.id, exc_info=True, extra={"event": "mark-failed"})
        results.append(
            {"id": row.id, "result": "tracked", "message_id": outcome.message_id, "regarding": outcome.regarding}
        )
    return results
