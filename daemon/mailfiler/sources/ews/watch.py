"""Push for an EWS mailbox: a streaming subscription that only wakes the sync.

One Subscribe per mailbox covers its watched folders; a thread of its own
reads GetStreamingEvents (exchangelib blocks for the whole stream) with its
own exchangelib protocol, so the stream never holds a session the requests
need.  Events become ``added``/``gone`` changes (a move is both, with the new
item id); the worker then catches up from the folder's sync state, which
decides what is new: notifications are never trusted alone.

* ConnectionStatus=Closed (Exchange closes a stream after 30 minutes at
  most): reconnect with the same subscription; Exchange kept its events.
* A dropped stream or a server restart: reconnect after a pause, and a
  ``rescan`` of every folder (events in flight may be lost).
* ErrorMissedNotificationEvents, ErrorSubscriptionNotFound (the subscription
  expired or lost its events): subscribe again and ``rescan``.
* A refused login or TLS certificate ends the watch with that error (the
  daemon shows it and retries with back-off)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from exchangelib import errors as ex
from exchangelib.folders import FolderCollection
from exchangelib.properties import CopiedEvent, CreatedEvent, DeletedEvent, MovedEvent
from exchangelib.services import GetStreamingEvents

from mailfiler.errors import LoginRefused, MailboxMissing, MailboxUnavailable, TlsCertificateRefused
from mailfiler.sources.base import Change
from mailfiler.sources.ews import folders as fl
from mailfiler.sources.ews.client import make_account, map_error

if TYPE_CHECKING:
    from mailfiler.sources.ews.source import EwsSource

log = logging.getLogger("mailfiler.sources.ews")

#: pauses before reconnecting after a failure (seconds), then the last one again
RECONNECT_PAUSES = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SUBSCRIPTION_LOST = (
    ex.ErrorMissedNotificationEvents,
    ex.ErrorSubscriptionNotFound,
    ex.ErrorInvalidSubscription,
)
_FATAL = (LoginRefused, TlsCertificateRefused, MailboxMissing)


class _Stream:
    """One GetStreamingEvents in its own thread, feeding an asyncio queue."""

    def __init__(self, account: Any, subscription: str, minutes: int, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._svc = GetStreamingEvents(account=account)
        self._loop = loop
        self._stopped = False
        self._thread = threading.Thread(target=self._run, args=(subscription, minutes), name="ews-stream", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[str, Any]) -> None:
        if self._stopped:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens any more
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def _run(self, subscription: str, minutes: int) -> None:
        try:
            for notification in self._svc.call(subscription_ids=[subscription], connection_timeout=minutes):
                self._put(("notification", notification))
            self._put(("closed", None))
        except Exception as exc:  # noqa: BLE001 - handed to the event loop, which decides
            self._put(("error", exc))

    def stop(self) -> None:
        """Cut the stream (the thread ends on the closed response)."""
        self._stopped = True
        with contextlib.suppress(Exception):
            self._svc.stop_streaming()


class StreamWatcher:
    def __init__(self, source: EwsSource, folders: list[str], stop: asyncio.Event) -> None:
        self.source = source
        self.folders = folders
        self.stop = stop
        self._stream_account: Any = None

    def _subscribe(self, folder_ids: list[str]) -> str:
        account = self.source.client.account
        folders = [fl.folder_by_id(account, i) for i in folder_ids]
        return FolderCollection(account=account, folders=folders).subscribe_to_streaming()

    def _unsubscribe(self, subscription: str) -> None:
        account = self.source.client.account
        FolderCollection(account=account, folders=[account.inbox]).unsubscribe(subscription)

    def _changes(self, notification: Any, by_id: dict[str, str]) -> tuple[list[Change], set[str]]:
        """Changes, and watched folders that were themselves changed (deleted, moved) to rescan."""
        changes: list[Change] = []
        rescan: set[str] = set()
        for event in notification.events or []:
            parent = getattr(event, "parent_folder_id", None)
            folder = by_id.get(parent.id) if parent is not None else None
            item = getattr(event, "item_id", None)
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

    async def _next(self, stream: _Stream) -> tuple[str, Any] | None:
        """The stream's next item, or None once stop is set."""
        getter = asyncio.ensure_future(stream.queue.get())
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        return None

    async def run(self) -> AsyncIterator[list[Change]]:
        client = self.source.client
        loop = asyncio.get_running_loop()
        subscription: str | None = None
        failures = 0
        rescan_due = False
        try:
            while not self.stop.is_set():
                try:
                    by_id = await self.source.folder_ids(self.folders)
                    if not by_id:
                        await asyncio.wait_for(self.stop.wait(), 30)  # nothing to watch: look again later
                        continue
                    if subscription is None:
                        subscription = await client.run(self._subscribe, list(by_id))
                    if self._stream_account is None:
                        self._stream_account = await client.run(functools.partial(make_account, self.source.settings, purpose="stream"))
                    self._stream_account.affinity_cookie = client.account.affinity_cookie
                except _FATAL:
                    raise
                except (MailboxUnavailable, TimeoutError) as exc:
                    failures += 1
                    pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES)) - 1]
                    log.info(
                        "EWS subscription for %s failed (%s); again in %.1f s", self.source.settings.mailbox, exc, pause
                    )
                    rescan_due = True
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), pause)
                    continue
                if rescan_due:
                    rescan_due = False
                    yield [Change("rescan", f) for f in by_id.values()]
                stream = _Stream(self._stream_account, subscription, self.source.settings.stream_minutes, loop)
                try:
                    while True:
                        got = await self._next(stream)
                        if got is None:
                            return
                        kind, value = got
                        if kind == "notification":
                            failures = 0
                            changes, rescan = self._changes(value, by_id)
                            while not stream.queue.empty():  # what came meanwhile goes in the same batch
                                kind2, value2 = stream.queue.get_nowait()
                                if kind2 != "notification":
                                    stream.queue.put_nowait((kind2, value2))
                                    break
                                more, again = self._changes(value2, by_id)
                                changes += more
                                rescan |= again
                            batch = [c for c in changes if c.folder not in rescan] + [
                                Change("rescan", f) for f in sorted(rescan)
                            ]
                            if batch:
                                yield batch
                        elif kind == "closed":
                            break  # Exchange closed the stream: reconnect, the subscription kept its events
                        else:
                            raise value
                except _SUBSCRIPTION_LOST as exc:
                    log.info("EWS subscription of %s lost (%s): subscribing again", self.source.settings.mailbox, exc)
                    subscription = None
                    rescan_due = True
                except (ex.UnauthorizedError, ex.ErrorImpersonateUserDenied, ex.ErrorAccessDenied) as exc:
                    raise map_error(exc, self.source.settings) from exc
                except Exception as exc:  # noqa: BLE001 - a cut stream, a restart: reconnect and catch up
                    failures += 1
                    pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES)) - 1]
                    log.info(
                        "EWS stream of %s ended (%s); reconnecting in %.1f s",
                        self.source.settings.mailbox,
                        type(exc).__name__,
                        pause,
                    )
                    rescan_due = True
                    if failures >= 3:
                        subscription = None  # it may be gone with the server
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), pause)
                finally:
                    stream.stop()
        finally:
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.run(self._unsubscribe, subscription, retry_drop=False), 0.5)
