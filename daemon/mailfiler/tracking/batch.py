"""Track several messages in one transaction: one commit (and on SQLite one
write-lock round) for a batch instead of one per message.

The batch is planned first (reads only).  When the plans allow it
(:func:`~mailfiler.tracking.writer.batchable`: the backfill's common case,
new mail in one tracked folder) the writer applies them in batch mode, in a
savepoint.  Otherwise each message is planned and applied in its own
savepoint (``Tracker.track``'s transaction nests as one), so a message that
fails rolls back only its own rows, its cursor count and its token.  The
batch then stops there: the messages before it commit, the failed one
reports its exception, the ones after it are not tried (None), so the
committed token never passes a message that is neither committed nor
handled by the caller (shunted, retried).

Results hold only once :func:`track_batch` returns: if the final commit
fails it raises, and nothing of the batch is in the store.  On SQLite the
batch holds the write lock throughout (keep batches to tens of messages);
on PostgreSQL two daemons batching the same messages in different orders
can deadlock, which aborts one batch (raised: retry it message by message).
"""

from __future__ import annotations

from collections.abc import Sequence

from mailfiler.store.db import transaction
from mailfiler.tracking import txsql
from mailfiler.tracking.batchitem import Item
from mailfiler.tracking.pipeline import Tracker
from mailfiler.tracking.writer import Outcome, batchable
from mailfiler.util import crashpoints

__all__ = ["Item", "may_batch", "track_batch"]


def may_batch(items: Sequence[Item]) -> bool:
    """Worth planning for batch mode: one tracked folder, distinct messages, none
    that may be in the shunt (the plans then decide, see ``batchable``)."""
    if len(items) < 2:
        return False
    first = items[0]
    if not first.folder.tracked:
        return False
    ids = set()
    for item in items:
        if item.folder is not first.folder or item.mailbox is not first.mailbox or item.may_be_shunted:
            return False
        ids.add(item.msg.message_id)
    return len(ids) == len(items)


def _in_bulk(tracker: Tracker, items: Sequence[Item]) -> list[Outcome] | None:
    """The batch planned, and written in batch mode when the plans allow it,
    in a savepoint; None: message by message."""
    if not may_batch(items):
        return None
    first = items[0]
    try:
        with tracker.db.atomic():  # a savepoint: a failure leaves the batch as it was
            # known mail goes message by message: two statements tell, not one per message
            mids, sids = [i.msg.message_id for i in items], [i.source_id for i in items]
            if not txsql.none_known(tracker.db, first.mailbox.row.id, first.folder.name, mids, sids):
                return None
            # every address of the batch resolved in one go (the batch's cache)
            tracker.resolve_all({a.address for i in items for addrs in i.msg.addresses.values() for a in addrs})
            plans = [
                tracker.plan(i.mailbox, i.folder, i.source_id, i.msg, token=i.token, may_be_shunted=False, new=True)
                for i in items
            ]
            if not batchable(plans, tracker.correlation):
                return None
            blob_ids = [[tracker.blobs.put_part(a) for a in p.msg.attachments] for p in plans]
            return tracker.apply_batch(plans, blob_ids)
    except Exception:  # noqa: BLE001 - another daemon tracked one meanwhile, the store or disk refused:
        # message by message, each meets its own error
        return None


def track_batch(tracker: Tracker, items: Sequence[Item]) -> list[Outcome | Exception | None]:
    """Outcome per item; an Exception for the one that failed; None after it."""
    results: list[Outcome | Exception | None] = [None] * len(items)
    with transaction(tracker.db), tracker.resolve_cache():
        written = _in_bulk(tracker, items)
        if written is not None:
            results = list(written)
        else:
            for i, item in enumerate(items):
                try:
                    results[i] = tracker.track(
                        item.mailbox,
                        item.folder,
                        item.source_id,
                        item.msg,
                        may_be_shunted=item.may_be_shunted,
                        token=item.token,
                    )
                except Exception as exc:  # noqa: BLE001 - reported to the caller, who shunts or retries it
                    results[i] = exc
                    break
        # the batch's commit points: every statement ran, nothing is committed yet
        crashpoints.point("before_commit")
    crashpoints.point("after_commit")
    return results
