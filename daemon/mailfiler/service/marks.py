"""Marks in the user's mail client (IMAP keywords, opt-in): noted after each
commit, flushed in one STORE per folder and state, and checked again once per
folder and start.  Best effort: a failed mark never stops tracking.  A part of
:class:`~mailfiler.service.worker.MailboxWorker`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mailfiler.errors import (
    MailboxUnavailable,
    SourceError,
)
from mailfiler.service.workerpart import WorkerPart
from mailfiler.sources.base import MarkState
from mailfiler.tracking.folders import (
    present_source_ids,
    shunted_source_ids,
)

log = logging.getLogger("mailfiler.worker")


class Marks(WorkerPart):
    """The worker's marks job."""

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
