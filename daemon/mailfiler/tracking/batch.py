"""Track several messages in one transaction: one commit (and on SQLite one
write-lock round) for a batch instead of one per message.

Each message runs in its own savepoint (``Tracker.track``'s transaction
nests as one), so a message that fails rolls back only its own rows, its
cursor count and its token.  The batch then stops there: the messages
before it commit, the failed one reports its exception, the ones after it
are not tried (None), so the committed token never passes a message that is
neither committed nor handled by the caller (shunted, retried).

Results hold only once :func:`track_batch` returns: if the final commit
fails it raises, and nothing of the batch is in the store.  On SQLite the
batch holds the write lock throughout (keep batches to tens of messages);
on PostgreSQL two daemons batching the same messages in different orders
can deadlock, which aborts one batch (raised: retry it message by message).
"""

from __future__ import annotations

from collections.abc import Sequence

from mailfiler.store.db import transaction
from mailfiler.tracking import bulk
from mailfiler.tracking.batchitem import Item
from mailfiler.tracking.pipeline import Outcome, Tracker
from mailfiler.util import crashpoints


def _in_bulk(tracker: Tracker, items: Sequence[Item]) -> list[Outcome] | None:
    """The batch written in bulk when it is the backfill's common case
    (:mod:`mailfiler.tracking.bulk`), in a savepoint; None: message by message."""
    if not bulk.eligible(items) or not bulk.fresh(tracker, items):
        return None
    try:
        with tracker.db.atomic():  # a savepoint: a failure leaves the batch as it was
            return bulk.track(tracker, items)
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
