"""Pushed changes (IDLE/NOTIFY, inotify): arrivals, departures and rescans as
they come, then a catch-up from the folder's token that moves it past them.
A part of :class:`~mailfiler.service.worker.MailboxWorker`."""

from __future__ import annotations

import asyncio
import logging

from mailfiler.service.workerpart import WorkerPart
from mailfiler.sources.base import Change
from mailfiler.store.models import Location, SeenMessage, Shunt
from mailfiler.tracking.folders import (
    forget_seen,
    mark_gone,
    set_folder_state,
)
from mailfiler.tracking.labels import label_at

log = logging.getLogger("mailfiler.worker")


class Pushed(WorkerPart):
    """The worker's watch job: pushed changes."""

    async def handle(self, changes: list[Change]) -> None:
        if any(c.kind == "tags" for c in changes):
            # a flag change somewhere in the mailbox: the tag pass finds which (service/tags.py)
            await self.tag_pass()  # type: ignore[attr-defined]
            changes = [c for c in changes if c.kind != "tags"]
        i = 0
        while i < len(changes):
            change = changes[i]
            i += 1
            if self.should_stop():
                return
            fctx = self.rt.context(change.folder)
            if fctx is None:
                continue
            if change.kind == "rescan":
                await self.scan_folder(change.folder)
            elif change.kind == "gone" and change.source_id:
                if not fctx.tracked:
                    forget_seen(self.services.db, self.mailbox, change.folder, [change.source_id])
                n = mark_gone(self.services.db, self.mailbox, change.folder, [change.source_id])
                if n:
                    log.info(
                        "%s left %s/%s",
                        label_at(self.mailbox, change.folder, change.source_id),
                        self.rt.name,
                        change.folder,
                        extra={
                            "event": "left-folder",
                            "mailbox": self.rt.name,
                            "folder": change.folder,
                            "source_id": change.source_id,
                        },
                    )
            elif change.kind == "added" and change.source_id:
                # arrivals in a row in one folder (a mass move) are read ahead together
                run = [change]
                while i < len(changes) and changes[i].kind == "added" and changes[i].folder == change.folder:
                    run.append(changes[i])
                    i += 1
                todo = [c for c in run if c.source_id and not self._already_here(c.folder, c.source_id)]
                await self._process_pushed(change.folder, todo)
            await asyncio.sleep(0)
        await self.flush_marks()
        rescanned = {c.folder for c in changes if c.kind == "rescan"}
        for folder in dict.fromkeys(c.folder for c in changes):
            fctx = self.rt.context(folder)
            if fctx is None or folder in rescanned or self.should_stop():
                continue
            # a push is applied as it comes; a catch-up from the folder's token then
            # moves the token past it (and picks up anything the push left out)
            if await self._catch_up(folder, fctx.kind, backfill=False) is None:
                set_folder_state(self.mailbox, folder, "ok", synced=True, kind=fctx.kind)

    async def _process_pushed(self, folder: str, todo: list[Change]) -> None:
        hints = {c.source_id: c.hint for c in todo if c.source_id}
        ahead = self._read_ahead(folder, list(hints), hints)
        try:
            for sid, hint in hints.items():
                if self.should_stop():
                    return
                read = await ahead.get(sid)
                await self.process(folder, sid, hint, read=read, parsed=ahead.parsed(sid))
                await asyncio.sleep(0)
        finally:
            await ahead.aclose()

    def _already_here(self, folder: str, source_id: str) -> bool:
        loc = Location.select(Location.id).where(
            (Location.mailbox == self.mailbox)
            & (Location.folder == folder)
            & (Location.source_id == source_id)
            & (Location.gone_at.is_null())
        )
        shunt = Shunt.select(Shunt.id).where(
            (Shunt.mailbox == self.mailbox)
            & (Shunt.folder == folder)
            & (Shunt.source_id == source_id)
            & (Shunt.resolved_at.is_null())
        )
        seen = SeenMessage.select(SeenMessage.id).where(
            (SeenMessage.mailbox == self.mailbox)
            & (SeenMessage.folder == folder)
            & (SeenMessage.source_id == source_id)
        )
        return loc.exists() or shunt.exists() or seen.exists()
