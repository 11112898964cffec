"""Streaming notifications: Subscribe, GetStreamingEvents (a chunked response of several SOAP
envelopes, ending with ConnectionStatus=Closed), Unsubscribe.

Each subscription queues the events of the folders it watches; an open stream sends what is
queued, a heartbeat envelope when nothing happens, and Closed when its lifetime ends (the
server's ``stream_lifetime``, at most the client's ConnectionTimeout), when the fake is told to
close streams, or when the server stops.  Like Exchange Server, at most ``connection_limit``
streams per principal are open at once (ErrorExceededConnectionCount beyond).
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.servers.ews.context import Context
from tests.servers.ews.model import format_time
from tests.servers.ews.soap import Build, EwsError, el, envelope, error, q, response, sub, success

QUEUE_LIMIT = 10_000  # events kept per subscription; beyond: the oldest are lost (ErrorMissedNotificationEvents)


@dataclass
class Subscription:
    id: str
    mailbox: str
    principal: str
    folders: set[str] | None  # None: all folders
    event_types: set[str]
    anchor: str
    backend: int = 0  # the mailbox server holding it (affinity: see EwsServer.backends)
    queue: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=QUEUE_LIMIT))
    missed: bool = False

    def wants(self, event: dict[str, Any]) -> bool:
        if event["type"] not in self.event_types:
            return False
        if self.folders is None:
            return True
        parents = {event.get(k, ("",))[0] for k in ("parent_folder_id", "old_parent_folder_id", "folder_id")}
        return bool(parents & self.folders)


class Hub:
    """Subscriptions and open streams of one fake server."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.subscriptions: dict[str, Subscription] = {}
        self.stream_lifetime = 30 * 60.0  # seconds; Exchange closes a stream after 30 minutes at most
        self.heartbeat = 30.0  # seconds between OK envelopes on a quiet stream
        self.connection_limit = 3  # Exchange Server's HangingConnectionLimit default
        self.open_streams: collections.Counter[str] = collections.Counter()
        self._close_generation = 0
        self._drop_generation = 0
        self.stopped = False
        # seconds from each event to the write of the envelope carrying it: the fake's own
        # notification delay, for latency benchmarks (bounded: a soak must not grow memory)
        self.delays: collections.deque[float] = collections.deque(maxlen=100_000)

    def publish(self, mailbox: str, event: dict[str, Any]) -> None:
        event = dict(event, time=dt.datetime.now(dt.UTC), published=time.monotonic())
        with self.cond:
            for subscription in self.subscriptions.values():
                if subscription.mailbox == mailbox and subscription.wants(event):
                    if len(subscription.queue) == subscription.queue.maxlen:
                        subscription.missed = True
                    subscription.queue.append(event)
            self.cond.notify_all()

    def close_streams(self) -> None:
        """Every open stream ends now with ConnectionStatus=Closed."""
        with self.cond:
            self._close_generation += 1
            self.cond.notify_all()

    def drop_streams(self) -> None:
        """Every open stream is cut mid-response (no Closed, no final chunk)."""
        with self.cond:
            self._drop_generation += 1
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def _id(tag: str, value: tuple[str, str]) -> ET.Element:
    return el(tag, Id=value[0], ChangeKey=value[1])


def _event_element(event: dict[str, Any]) -> ET.Element:
    elem = el(f"t:{event['type']}")
    sub(elem, "t:TimeStamp", format_time(event["time"]))
    for key, tag in (("folder_id", "t:FolderId"), ("item_id", "t:ItemId"), ("parent_folder_id", "t:ParentFolderId")):
        if key in event:
            elem.append(_id(tag, event[key]))
    for key, tag in (
        ("old_folder_id", "t:OldFolderId"),
        ("old_item_id", "t:OldItemId"),
        ("old_parent_folder_id", "t:OldParentFolderId"),
    ):
        if key in event:
            elem.append(_id(tag, event[key]))
    if "unread_count" in event:
        sub(elem, "t:UnreadCount", str(event["unread_count"]))
    return elem


def subscribe(ctx: Context, request: ET.Element, hub: Hub, backend: int = 0) -> ET.Element:
    spec = request.find(q("m:StreamingSubscriptionRequest"))
    try:
        if spec is None:
            raise EwsError("ErrorInvalidSubscriptionRequest", "Only streaming subscriptions are served by this fake.")
        folder_refs = list(spec.find(q("t:FolderIds")) or [])
        with ctx.store.lock:
            resolved = [ctx.folder(ref) for ref in folder_refs]
            mailboxes = {m.user.smtp.lower() for m, _ in resolved} or {ctx.target}
            if len(mailboxes) > 1:
                raise EwsError("ErrorInvalidSubscriptionRequest", "A subscription can only watch one mailbox.")
            mailbox = mailboxes.pop()
            ctx.check_access(mailbox)
        everything = spec.get("SubscribeToAllFolders", "").lower() == "true"
        subscription = Subscription(
            id=str(uuid.uuid4()),
            mailbox=mailbox,
            principal=ctx.principal.smtp.lower(),
            folders=None if everything or not resolved else {f.id for _, f in resolved},
            event_types={(e.text or "").strip() for e in spec.find(q("t:EventTypes")) or []},
            anchor=ctx.anchor,
            backend=backend,
        )
    except EwsError as e:
        return response("Subscribe", [error("Subscribe", e.code, e.text)])
    with hub.cond:
        hub.subscriptions[subscription.id] = subscription
    message = success("Subscribe")
    sub(message, "m:SubscriptionId", subscription.id)
    return response("Subscribe", [message])


def unsubscribe(ctx: Context, request: ET.Element, hub: Hub) -> ET.Element:
    subscription_id = (request.findtext(q("m:SubscriptionId")) or "").strip()
    with hub.cond:
        subscription = hub.subscriptions.get(subscription_id)
        if subscription is None or subscription.principal != ctx.principal.smtp.lower():
            message = error("Unsubscribe", "ErrorSubscriptionNotFound", "The specified subscription was not found.")
        else:
            del hub.subscriptions[subscription_id]
            message = success("Unsubscribe")
    return response("Unsubscribe", [message])


def _stream_message(notifications: list[ET.Element], status: str) -> ET.Element:
    message = success("GetStreamingEvents")
    if notifications:
        sub(message, "m:Notifications").extend(notifications)
    sub(message, "m:ConnectionStatus", status)
    return response("GetStreamingEvents", [message])


def get_streaming_events(
    ctx: Context, request: ET.Element, hub: Hub, build: Build, backend: int = 0
) -> ET.Element | Iterator[bytes]:
    """An error response, or the chunks of an open stream.  A subscription held by another backend
    than the one the request reaches (no affinity) is not found, as in Exchange."""
    ids = [(e.text or "").strip() for e in request.find(q("m:SubscriptionIds")) or []]
    minutes = int((request.findtext(q("m:ConnectionTimeout")) or "30").strip())
    principal = ctx.principal.smtp.lower()
    with hub.cond:
        missing = [
            i
            for i in ids
            if i not in hub.subscriptions
            or hub.subscriptions[i].principal != principal
            or hub.subscriptions[i].backend != backend
        ]
        missed = [i for i in ids if i in hub.subscriptions and hub.subscriptions[i].missed]
        if missing or missed:
            code, text = (
                ("ErrorSubscriptionNotFound", "The specified subscription was not found.")
                if missing
                else ("ErrorMissedNotificationEvents", "Events were lost: resubscribe.")
            )
            message = error("GetStreamingEvents", code, text)
            bad = sub(message, "m:ErrorSubscriptionIds")
            for i in missing or missed:
                sub(bad, "m:SubscriptionId", i)
                if not missing:
                    del hub.subscriptions[i]  # a subscription that lost events is gone, as in Exchange
            sub(message, "m:ConnectionStatus", "Closed")
            return response("GetStreamingEvents", [message])
        if hub.open_streams[principal] >= hub.connection_limit:
            message = error(
                "GetStreamingEvents",
                "ErrorExceededConnectionCount",
                "You have exceeded the available concurrent connections for your account.",
            )
            return response("GetStreamingEvents", [message])
        hub.open_streams[principal] += 1
    stream = _stream(hub, ids, principal, min(minutes * 60.0, hub.stream_lifetime), build)
    # started here, so that its ``finally`` (which frees the slot) runs even if the client is gone
    # before the first chunk is written (an unstarted generator is dropped without running it)
    first = next(stream)
    return itertools.chain([first], stream)


def _stream(hub: Hub, ids: list[str], principal: str, lifetime: float, build: Build) -> Iterator[bytes]:
    deadline = time.monotonic() + lifetime
    with hub.cond:
        close_generation, drop_generation = hub._close_generation, hub._drop_generation
    try:
        yield envelope(_stream_message([], "OK"), build)
        while True:
            with hub.cond:
                beat = time.monotonic() + hub.heartbeat
                while True:
                    pending = [s for i in ids if (s := hub.subscriptions.get(i)) is not None and s.queue]
                    closing = hub.stopped or hub._close_generation != close_generation or time.monotonic() >= deadline
                    if hub._drop_generation != drop_generation:
                        raise ConnectionResetError("stream dropped by the test")
                    if pending or closing or time.monotonic() >= beat:
                        break
                    hub.cond.wait(max(0.0, min(deadline, beat) - time.monotonic()))
                notifications = []
                published = []
                for subscription in pending:
                    notification = el("m:Notification")
                    sub(notification, "t:SubscriptionId", subscription.id)
                    while subscription.queue:
                        event = subscription.queue.popleft()
                        published.append(event["published"])
                        notification.append(_event_element(event))
                    notifications.append(notification)
            if notifications:
                yield envelope(_stream_message(notifications, "OK"), build)
                sent = time.monotonic()
                hub.delays.extend(sent - t for t in published)
            if closing:
                yield envelope(_stream_message([], "Closed"), build)
                return
            if not notifications:
                yield envelope(_stream_message([], "OK"), build)
    finally:
        with hub.cond:
            hub.open_streams[principal] -= 1
