"""Track one message: plan it (:mod:`mailfiler.tracking.plan`, reads only),
then apply the plan (:mod:`mailfiler.tracking.writer`): the activity, its
parties, attachments, location and the folder cursor (its count and the
backend's cursor token), written in one transaction.

The transaction is idempotent: replaying the same message (after a crash,
a restart or a second mailbox holding it) finds the activity by Message-ID
and adds only what is new.  This is what makes "nothing twice" hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import peewee as pw

from mailfiler.config.schema import CorrelationSettings
from mailfiler.rules import RuleSet
from mailfiler.store.blobs import BlobStore
from mailfiler.store.db import transaction
from mailfiler.tracking.context import FolderContext, MailboxContext
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.plan import Judgement, MessagePlan, Planner
from mailfiler.tracking.writer import Outcome, Writer
from mailfiler.util import crashpoints

#: the auto-tracking judgement handed from before the transaction into it (the name it had)
Plan = Judgement

__all__ = ["Outcome", "Plan", "Tracker"]


def _no_point(name: str) -> None:
    """The crash point of a write that is not a commit (a savepoint in a batch)."""


class Tracker(Planner, Writer):
    """The planner and the one writer, with the transaction around them."""

    def __init__(
        self,
        db: pw.Database,
        blobs: BlobStore,
        *,
        precedence: Sequence[str],
        ambiguous: str = "all",
        correlation: CorrelationSettings | None = None,
        rules: RuleSet | None = None,
    ) -> None:
        Planner.__init__(self, db, precedence=precedence, ambiguous=ambiguous, correlation=correlation, rules=rules)
        Writer.__init__(self, db, blobs)

    def track(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        *,
        may_be_shunted: bool = True,
        token: str | None = None,
    ) -> Outcome:
        """Track one message.  ``may_be_shunted=False`` (the caller checked
        that no pending shunt holds this location) saves a query per message.
        ``token`` is the folder's new cursor token (the backend's, opaque),
        written in the same transaction: it never runs ahead of the messages
        committed (see :mod:`mailfiler.sources.base`).

        In a watched folder (not a tracked one) auto-tracking judges the
        message first; one it does not track is noted as seen, nothing more.

        Called inside a transaction (:func:`~mailfiler.tracking.batch.track_batch`)
        it runs in a savepoint, and its commit points are the batch's."""
        # a nested call commits nothing: no crash point of its own
        points = crashpoints.point if not self.db.in_transaction() else _no_point
        judged: Judgement | None = None
        if not folder.tracked:
            judged = self.auto_plan(mailbox, folder.name, msg)
            if judged.verdict is not None and not judged.verdict.track:
                return self._skip(mailbox, folder, source_id, msg, judged.verdict.reason, may_be_shunted, token)
        # large blobs first: a crash after this leaves an orphan file, never
        # a row that points to nothing (small ones go in with the rows)
        blob_ids = [self.blobs.put_part(a) for a in msg.attachments]
        for attempt in range(3):
            try:
                points("before_commit")
                with transaction(self.db):
                    outcome = self._track_tx(mailbox, folder, source_id, msg, blob_ids, may_be_shunted, judged, token)
                points("after_commit")
                return outcome
            except pw.IntegrityError:
                # another daemon inserted the same Message-ID between our
                # lookup and insert: the retry plans again and finds its row
                # (and what its rolled-back attempt resolved or created is forgotten)
                self._records_changed()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _track_tx(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        blob_ids: list[str],
        may_be_shunted: bool,
        judged: Judgement | None = None,
        token: str | None = None,
    ) -> Outcome:
        """Plan and apply, in the caller's transaction."""
        plan = self.plan(mailbox, folder, source_id, msg, token=token, may_be_shunted=may_be_shunted, judgement=judged)
        return self.apply(plan, blob_ids)

    def note_seen(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        reason: str,
        token: str | None = None,
    ) -> Outcome:
        """Note a message of a watched folder as seen and not tracked, without
        judging it (mail that was there before: see the worker's renumbered folders)."""
        return self._skip(mailbox, folder, source_id, msg, reason, False, token)

    def _skip(
        self,
        mailbox: MailboxContext,
        folder: FolderContext,
        source_id: str,
        msg: ParsedMessage,
        reason: str,
        may_be_shunted: bool,
        token: str | None = None,
    ) -> Outcome:
        points = crashpoints.point if not self.db.in_transaction() else _no_point
        plan = MessagePlan(
            mailbox, folder, source_id, msg, "skip", token=token, may_be_shunted=may_be_shunted, reason=reason
        )
        points("before_commit")
        with transaction(self.db):
            outcome = self.apply(plan, [])
        points("after_commit")
        return outcome
