"""Watched folders (auto-tracking): finding them, scanning them, and a folder
whose message ids were renumbered (a new UIDVALIDITY), whose mail is identified
again, not judged again.  A part of :class:`~mailfiler.service.worker.MailboxWorker`."""

from __future__ import annotations

import logging

from mailfiler.errors import (
    FolderMissing,
)
from mailfiler.service.backfill import ScanResult, todo_of
from mailfiler.service.workerpart import WorkerPart
from mailfiler.sources.base import Listing
from mailfiler.store.db import transaction
from mailfiler.store.models import FolderCursor, SeenMessage
from mailfiler.tracking.context import watched_folder
from mailfiler.tracking.folders import (
    forget_seen,
    mark_gone,
    present_source_ids,
    record_baseline,
    save_token,
    seen_source_ids,
    set_folder_state,
    shunted_source_ids,
)

log = logging.getLogger("mailfiler.worker")


class Watch(WorkerPart):
    """The worker's watched-folder job."""

    async def discover(self, *, at_start: bool) -> tuple[list[str], list[str]]:
        """Find the folders auto-tracking watches; return (added, removed).

        At start, a folder auto-tracking has not watched before is first
        recorded as it is (its mail is not tracked retroactively); a folder
        that appears while the daemon runs is new mail, judged message by
        message."""
        rt = self.rt
        try:
            names = await rt.source.list_folders()
        except FolderMissing:
            names = []
        wanted = {f for f in names if f not in rt.folders and rt.auto_folders(f)}
        added = sorted(wanted - set(rt.watched))
        # a scan that found a watched folder gone dropped it already; it is still
        # reported as removed, so that the caller follows the change (its watcher)
        removed = sorted((set(rt.watched) | self._dropped) - wanted)
        self._dropped.clear()
        for folder in removed:
            rt.watched.pop(folder, None)
        if at_start:
            watched_before = {
                c.folder
                for c in FolderCursor.select(FolderCursor.folder).where(
                    (FolderCursor.mailbox == self.mailbox) & (FolderCursor.kind == "watched")
                )
            }
            self.baseline |= {f for f in added if f not in watched_before}
            # folders no longer watched (config or folder changes while we were away)
            stale = watched_before - wanted
            if stale:
                self._unwatch(sorted(stale), names)
        elif removed:
            self._unwatch(removed, names)
        for folder in added:
            rt.watched[folder] = watched_folder(folder)
        return added, removed

    def _unwatch(self, folders: list[str], names: list[str] | None = None) -> None:
        """Stop watching ``folders``.  ``names``: the mailbox's folders now; the mail
        of a folder not among them (deleted, renamed) has left it, and nothing
        would ever say so later (None: none of ``folders`` exists any more)."""
        with transaction(self.services.db):
            FolderCursor.update(kind="unwatched", state="unwatched", token=None).where(
                (FolderCursor.mailbox == self.mailbox) & (FolderCursor.folder.in_(folders))
            ).execute()
            SeenMessage.delete().where(
                (SeenMessage.mailbox == self.mailbox) & (SeenMessage.folder.in_(folders))
            ).execute()
        for folder in folders:
            if names is None or folder not in names:
                mark_gone(self.services.db, self.mailbox, folder, present_source_ids(self.mailbox, folder))

    async def _scan_watched(self, folder: str) -> ScanResult:
        result = ScanResult(folder, kind="watched")
        mb = self.mailbox
        try:
            listing = await self.rt.source.list_messages(folder)
        except FolderMissing:
            # a watched folder that went away is simply no longer watched
            self.rt.watched.pop(folder, None)
            self._dropped.add(folder)
            self._unwatch([folder])
            result.missing = True
            return result
        set_folder_state(mb, folder, "syncing", kind="watched")
        present = present_source_ids(mb, folder)
        seen = seen_source_ids(mb, folder)
        known = present | seen | shunted_source_ids(mb, folder)
        listed = set(listing.messages)
        todo = todo_of(listing, known)
        if folder not in self.baseline and self._was_renumbered((present | seen) - listed, listed):
            return await self._rescan_renumbered(folder, listing, todo, present - listed, seen - listed, result)
        result.gone = mark_gone(self.services.db, mb, folder, present - listed)
        forget_seen(self.services.db, mb, folder, seen - listed)
        if folder in self.baseline:
            record_baseline(self.services.db, mb, folder, todo)
            self.baseline.discard(folder)
            log.info(
                "auto-tracking now watches %s/%s: %d message(s) already there are left as they are",
                self.rt.name,
                folder,
                len(todo),
                extra={"event": "watch-baseline", "mailbox": self.rt.name, "folder": folder, "count": len(todo)},
            )
            todo = []
        complete = await self._process_all(folder, todo, listing.messages, result, token=listing.token)
        if not self.should_stop():
            with transaction(self.services.db):
                if complete and listing.token is not None:
                    save_token(mb, folder, listing.token)
                set_folder_state(mb, folder, "ok", synced=True, kind="watched")
        return result

    async def _rescan_renumbered(
        self,
        folder: str,
        listing: Listing,
        todo: list[str],
        void_present: set[str],
        void_seen: set[str],
        result: ScanResult,
    ) -> ScanResult:
        """A watched folder whose every id is void (a new UIDVALIDITY): the mail
        is the same mail, judged before or there from the start.  Each message
        is identified again, not judged: one tracked already is located, any
        other noted as seen.  The void notes and the old token stay until every
        message is done, so that a crash midway comes back here, not to judging."""
        mb = self.mailbox
        log.info(
            "the message ids of %s/%s were renumbered: its %d message(s) are identified again, not judged",
            self.rt.name,
            folder,
            len(todo),
            extra={"event": "watch-renumbered", "mailbox": self.rt.name, "folder": folder, "count": len(todo)},
        )
        self._renumbered.add(folder)
        try:
            # from the headers; what they cannot settle is read whole (and not judged either)
            whole = await self._reidentify(folder, todo, listing.messages, result)
            await self._process_all(folder, whole, listing.messages, result, token=None)
        finally:
            self._renumbered.discard(folder)
        if self.should_stop():
            return result
        done = present_source_ids(mb, folder) | seen_source_ids(mb, folder) | shunted_source_ids(mb, folder)
        if set(todo) - done:  # some vanished meanwhile: the next look finishes it
            return result
        result.gone = mark_gone(self.services.db, mb, folder, void_present)
        forget_seen(self.services.db, mb, folder, void_seen)
        with transaction(self.services.db):
            if listing.token is not None:
                save_token(mb, folder, listing.token)
            set_folder_state(mb, folder, "ok", synced=True, kind="watched")
        return result

    def _was_renumbered(self, void: set[str], listed: set[str]) -> bool:
        """True when the ids a folder's notes hold and the ids listed now are of
        different generations only (IMAP: another UIDVALIDITY)."""
        gen = self.rt.source.id_generation
        old = {gen(s) for s in void} - {None}
        new = {gen(s) for s in listed} - {None}
        return bool(old) and bool(new) and old.isdisjoint(new)
