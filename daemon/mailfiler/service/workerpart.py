"""What the parts of :class:`~mailfiler.service.worker.MailboxWorker` share:
the worker's state, a scan's result, and the methods one part calls on
another.  Each part (backfill, watch, re-identify, pushed, marks, tags) derives from
:class:`WorkerPart`, so that it is type-checked on its own; the worker
composes them and holds the state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailfiler.service.runtime import MailboxRuntime, Services
from mailfiler.sources.base import MarkState
from mailfiler.store.models import Mailbox
from mailfiler.tracking.context import FolderContext
from mailfiler.tracking.parse import ParsedMessage
from mailfiler.tracking.pipeline import Outcome

if TYPE_CHECKING:
    from mailfiler.service.readahead import ReadAhead

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


def count_outcome(result: ScanResult, outcome: Outcome) -> None:
    if outcome.event == "shunted":
        result.shunted += 1
    elif outcome.event == "skipped":
        result.skipped += 1
    elif outcome.event not in NOT_DONE:
        result.new += 1


class WorkerPart:
    """The worker's state (set in ``MailboxWorker.__init__``) and the methods the
    parts call on each other, declared for the type checker only: at run time
    each comes from the part that defines it."""

    rt: MailboxRuntime
    services: Services
    should_stop: Callable[[], bool]
    #: called after each message of a scan with (folder, done, total)
    progress: Callable[[str, int, int], None] | None
    last_progress: float
    #: outcomes since start (tracked, relinked, shunted...), for STATUS=
    counts: dict[str, int]
    #: watched folders seen for the first time: record, do not track
    baseline: set[str]
    #: (folder, state) -> source ids to mark in the mailbox (Source.mark)
    _marks: dict[tuple[str, MarkState], list[str]]
    #: watched folders a scan found gone, for the next discover() to report
    _dropped: set[str]
    #: folders whose marks were checked since start (_remark)
    _remarked: set[str]
    #: watched folders being listed again after a renumbering (not judged again)
    _renumbered: set[str]

    @property
    def mailbox(self) -> Mailbox:
        return self.rt.ctx.row

    if TYPE_CHECKING:
        # worker.py
        async def scan_folder(self, folder: str) -> ScanResult: ...

        def _read_ahead(self, folder: str, todo: list[str], hints: dict[str, str | None]) -> ReadAhead: ...

        async def process(
            self,
            folder: str,
            source_id: str,
            hint: str | None,
            *,
            token: str | None = None,
            read: bytes | Exception | object | None = ...,
            parsed: ParsedMessage | None = None,
        ) -> Outcome: ...

        def _done(
            self, folder: str, source_id: str, outcome: Outcome, parsed: ParsedMessage, *, in_batch: bool = False
        ) -> None: ...

        def _tracked_already(self, parsed: ParsedMessage) -> bool: ...

        async def _shunt(
            self, folder: str, source_id: str, hint: str | None, raw: bytes | None, reason: str, detail: str
        ) -> Outcome: ...

        async def _track_with_retries(
            self, fctx: FolderContext, folder: str, source_id: str, parsed: ParsedMessage, token: str | None = None
        ) -> Outcome: ...

        # backfill.py
        async def _catch_up(self, folder: str, kind: str, *, backfill: bool = True) -> ScanResult | None: ...

        async def _process_all(
            self,
            folder: str,
            todo: list[str],
            hints: dict[str, str | None],
            result: ScanResult,
            *,
            token: str | None,
            backfill: bool = True,
        ) -> bool: ...

        # watch.py
        def _was_renumbered(self, void: set[str], listed: set[str]) -> bool: ...

        async def _scan_watched(self, folder: str) -> ScanResult: ...

        # reidentify.py
        async def _reidentify(
            self, folder: str, todo: list[str], hints: dict[str, str | None], result: ScanResult
        ) -> list[str]: ...

        # marks.py
        def _note_mark(self, folder: str, source_id: str, state: MarkState) -> None: ...

        async def flush_marks(self) -> None: ...

        async def _remark(self, folder: str) -> None: ...
