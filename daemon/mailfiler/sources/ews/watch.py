"""Push for an EWS mailbox: a streaming subscription that only wakes the sync.

One Subscribe per mailbox covers its watched folders; the subscription joins
a group of its login's shared streaming connections
(:mod:`mailfiler.sources.ews.streams`).  Events become ``added``/``gone``
changes (a move is both, with the new item id); the worker then catches up
from the folder's sync state, which decides what is new: notifications are
never trusted alone.

* ConnectionStatus=Closed (Exchange ends a stream after 30 minutes at most):
  the group reconnects with the same subscriptions; Exchange kept the events.
* A dropped stream, a server restart, a group's stream restarted: ``rescan``
  of every folder (a catch-up: events in flight may be lost).
* ErrorMissedNotificationEvents, ErrorSubscriptionNotFound: subscribe again
  and ``rescan``.
* A refused login or TLS certificate ends the watch with that error (the
  daemon shows it and retries with back-off)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from exchangelib.folders import FolderCollection
from exchangelib.properties import CopiedEvent, CreatedEvent, DeletedEvent, MovedEvent
from exchangelib.services import SubscribeToStreaming

from mailfiler.errors import LoginRefused, MailboxMissing, MailboxUnavailable, TlsCertificateRefused
from mailfiler.sources.base import Change
from mailfiler.sources.ews import folders as fl
from mailfiler.sources.ews.client import EwsClient
from mailfiler.sources.ews.streams import RECONNECT_PAUSES, Member, hub_for
from mailfiler.sources.ews.tags import Dirty

log = logging.getLogger("mailfiler.sources.ews")


class EwsSource(Protocol):
    """What the watcher uses of :class:`mailfiler.sources.ews.source.EwsSource`:
    a protocol, since that module imports this one."""

    @property
    def client(self) -> EwsClient: ...
    @property
    def tag_dirty(self) -> Dirty: ...
    async def folder_ids(self, folders: Sequence[str]) -> dict[str, str]: ...


_FATAL = (LoginRefused, TlsCertificateRefused, MailboxMissing)


def folders_of(notification: Any) -> set[str]:
    """The ids of every folder the notification's events name (for track by tag)."""
    out: set[str] = set()
    for event in notification.events or []:
        for name in ("parent_folder_id", "old_parent_folder_id", "folder_id"):
            ref = getattr(event, name, None)
            if ref is not None and getattr(ref, "id", None):
                out.add(ref.id)
    return out


def changes_of(notification: Any, by_id: dict[str, str], *, tags: bool = False) -> tuple[list[Change], set[str]]:
    """Changes in watched folders, and watched folders themselves deleted or moved (to rescan).
    With ``tags`` (track by tag), an item changed, made or moved anywhere is also a
    ``tags`` change: a category may have been set, or a message come into the untrack
    folder."""
    changes: list[Change] = []
    rescan: set[str] = set()
    for event in notification.events or []:
        parent = getattr(event, "parent_folder_id", None)
        folder = by_id.get(parent.id) if parent is not None else None
        item = getattr(event, "item_id", None)
        touched = item is not None and not isinstance(event, DeletedEvent)
        if tags and touched and not any(c.kind == "tags" for c in changes):
            changes.append(Change("tags", "*"))
        if item is None:
            own = getattr(event, "folder_id", None)
            if own is not None and own.id in by_id and isinstance(event, DeletedEvent | MovedEvent):
                rescan.add(by_id[own.id])
            continue
        if isinstance(event, MovedEvent):
            old_parent = event.old_parent_folder_id
            old_folder = by_id.get(old_parent.id) if old_parent is not None else None
            if old_folder is not None and event.old_item_id is not None:
                changes.append(Change("gone", old_folder, event.old_item_id.id))
            if folder is not None:
                changes.append(Change("added", folder, item.id))
        elif isinstance(event, CreatedEvent | CopiedEvent) and folder is not None:
            changes.append(Change("added", folder, item.id))
        elif isinstance(event, DeletedEvent) and folder is not None:
            changes.append(Change("gone", folder, item.id))
    return changes, rescan


class StreamWatcher:
    def __init__(self, source: EwsSource, folders: list[str], stop: asyncio.Event) -> None:
        self.source = source
        self.folders = folders
        self.stop = stop

    def _tags(self) -> list[Change]:
        """After events were lost a category may have changed too (track by tag)."""
        return [Change("tags", "*")] if self.source.client.settings.tag_events else []

    def _subscribe(self, folder_ids: list[str]) -> str:
        account = self.source.client.account
        if self.source.client.settings.tag_events:
            # track by tag: a category can be set in any folder (SubscribeToAllFolders)
            subscription: str = SubscribeToStreaming(account=account).get(
                folders=None, event_types=SubscribeToStreaming.EVENT_TYPES
            )
            return subscription
        folders = [fl.folder_by_id(account, i) for i in folder_ids]
        return FolderCollection(account=account, folders=folders).subscribe_to_streaming()

    def _unsubscribe(self, subscription: str) -> None:
        account = self.source.client.account
        FolderCollection(account=account, folders=[account.inbox]).unsubscribe(subscription)

    async def _next(self, member: Member) -> tuple[str, Any] | None:
        """The member's next item, or None once stop is set."""
        getter = asyncio.ensure_future(member.queue.get())
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def run(self) -> AsyncIterator[list[Change]]:
        client = self.source.client
        hub = hub_for(client)
        member: Member | None = None
        failures = 0
        rescan_due = False
        by_id: dict[str, str] = {}
        try:
            while not self.stop.is_set():
                if member is None:
                    try:
                        by_id = await self.source.folder_ids(self.folders)
                        if not by_id:
                            await self._wait(30)  # nothing to watch yet: look again later
                            continue
                        ids = list(by_id)
                        member = await hub.join(client, lambda ids=ids: self._subscribe(ids))  # type: ignore[misc]
                        if client.settings.tag_events:
                            self.source.tag_dirty.joined()  # a tag pass walks every folder once more
                    except _FATAL:
                        raise
                    except (MailboxUnavailable, TimeoutError) as exc:
                        failures += 1
                        pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES)) - 1]
                        log.info(
                            "EWS subscription of %s failed (%s); again in %.1f s", client.settings.mailbox, exc, pause
                        )
                        rescan_due = True
                        await self._wait(pause)
                        continue
                    if rescan_due:
                        rescan_due = False
                        yield [Change("rescan", f) for f in by_id.values()] + self._tags()
                got = await self._next(member)
                if got is None:
                    return
                kind, value = got
                if kind == "notification":
                    failures = 0
                    tags = client.settings.tag_events
                    changes, rescan = changes_of(value, by_id, tags=tags)
                    self.source.tag_dirty.saw(folders_of(value))
                    while not member.queue.empty() and member.queue._queue[0][0] == "notification":  # type: ignore[attr-defined]  # noqa: SLF001
                        more_value = member.queue.get_nowait()[1]
                        self.source.tag_dirty.saw(folders_of(more_value))
                        more, again = changes_of(more_value, by_id, tags=tags)
                        changes += more
                        rescan |= again
                    batch = [c for c in changes if c.folder not in rescan]
                    batch += [Change("rescan", f) for f in sorted(rescan)]
                    if rescan and not any(c.kind == "tags" for c in batch):
                        batch += self._tags()
                    if batch:
                        yield batch
                elif kind == "rescan":
                    self.source.tag_dirty.put_back(None)  # events may be lost: every folder
                    yield [Change("rescan", f) for f in by_id.values()] + self._tags()
                elif kind == "lost":
                    member = None  # subscribe again, then catch up
                    self.source.tag_dirty.lost()
                    rescan_due = True
                elif kind == "error":
                    raise value
        finally:
            self.source.tag_dirty.lost()  # no stream: a tag pass walks every folder
            if member is not None:
                hub.leave(member)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.run(self._unsubscribe, member.subscription, retry_drop=False), 0.5)
