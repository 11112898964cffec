"""Streaming connections shared by the mailboxes of one login.

Exchange Server lets an account hold 3 streaming connections
(HangingConnectionLimit; ErrorExceededConnectionCount beyond), and one
GetStreamingEvents may carry up to 200 subscriptions when they live on the
same mailbox server.  A service account impersonating many mailboxes therefore
groups them: a :class:`StreamHub` per server and login (and event loop) keeps
at most ``MAX_GROUPS`` groups of at most ``GROUP_SIZE`` subscriptions.  The
first Subscribe of a group returns the X-BackEndOverrideCookie of its mailbox
server; every later Subscribe of the group and its GetStreamingEvents replay it
(with X-PreferServerAffinity), so the group's subscriptions are found on one
server (exchange.md, "Maintain affinity between a group of subscriptions").

A group's stream carries a fixed list of subscription ids: a mailbox joining
restarts it (after a short pause that gathers the joins of a
start-up).  Events Exchange has not yet sent stay queued on the subscription;
one it sent as the old stream was cut may be lost, so every member is told to
``rescan`` (a catch-up from its sync state) after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from exchangelib import errors as ex

from mailfiler.errors import LoginRefused, MailboxMissing, TlsCertificateRefused
from mailfiler.sources.ews.client import EwsClient, make_account, map_error
from mailfiler.sources.ews.stream import Stream

log = logging.getLogger("mailfiler.sources.ews")

#: streaming connections per login (Exchange Server's default HangingConnectionLimit)
MAX_GROUPS = 3
#: subscriptions per streaming connection (Exchange's documented maximum)
GROUP_SIZE = 200
#: how long a group waits for more joins before (re)starting its stream
GATHER = 0.1
#: pauses before reconnecting a failed stream, then the last one again
RECONNECT_PAUSES = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_LOST = (ex.ErrorMissedNotificationEvents, ex.ErrorSubscriptionNotFound, ex.ErrorInvalidSubscription)
_AUTH = (ex.UnauthorizedError, ex.ErrorImpersonateUserDenied, ex.ErrorAccessDenied)


@dataclass(eq=False)
class Member:
    """One mailbox's subscription in a group; its watcher reads ``queue``:
    ("notification", n), ("rescan", None), ("lost", None) (subscribe again) or
    ("error", exc) (a refused login: the watch ends with it)."""

    subscription: str
    client: EwsClient
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    group: Group | None = None


@dataclass(eq=False)
class Group:
    hub: StreamHub
    cookie: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    first: asyncio.Lock = field(default_factory=asyncio.Lock)
    task: asyncio.Task[None] | None = None
    #: streams opened, for tests and benchmarks
    opened: int = 0

    def tell(self, kind: str, value: Any = None, members: list[Member] | None = None) -> None:
        for member in members if members is not None else list(self.members.values()):
            member.queue.put_nowait((kind, value))

    async def run(self) -> None:
        failures = 0
        account: Any = None
        first = True
        while self.members:
            with contextlib.suppress(TimeoutError):  # gather the joins that come together
                await asyncio.wait_for(self._settled(), 2.0)
            members = dict(self.members)
            if not members:
                break
            self.changed.clear()
            anchor = next(iter(members.values())).client
            try:
                if account is None or account.primary_smtp_address != anchor.settings.mailbox:
                    account = await anchor.run(functools.partial(make_account, anchor.settings, purpose="stream"))
                account.affinity_cookie = self.cookie
            except (LoginRefused, TlsCertificateRefused, MailboxMissing) as exc:
                self.tell("error", exc)
                await self._pause(failures := failures + 1)
                continue
            except Exception:  # noqa: BLE001 - retried below
                await self._pause(failures := failures + 1)
                continue
            if not first:
                self.tell("rescan")  # a restart may have cut an event in flight
            first = False
            stream = Stream(account, list(members), anchor.settings.stream_minutes, asyncio.get_running_loop())
            self.opened += 1
            try:
                failures = await self._pump(stream, members, failures)
            finally:
                stream.stop()

    async def _settled(self) -> None:
        while True:
            self.changed.clear()
            await asyncio.sleep(GATHER)
            if not self.changed.is_set():
                return

    async def _pause(self, failures: int) -> None:
        pause = RECONNECT_PAUSES[min(failures, len(RECONNECT_PAUSES)) - 1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), pause)

    async def _pump(self, stream: Stream, members: dict[str, Member], failures: int) -> int:
        """Hand the stream's notifications out until it ends or the group changes; the failure count."""
        while True:
            getter = asyncio.ensure_future(stream.queue.get())
            changer = asyncio.ensure_future(self.changed.wait())
            try:
                done, _ = await asyncio.wait({getter, changer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changer.cancel()
            if getter not in done:
                getter.cancel()
                return failures  # joined or left: restart with the new list
            kind, value = getter.result()
            if kind == "notification":
                member = members.get(value.subscription_id)
                if member is not None and member.group is self:
                    member.queue.put_nowait(("notification", value))
                failures = 0
            elif kind == "closed":
                return failures  # Exchange's lifetime of a stream: reconnect, the events wait
            elif isinstance(value, _LOST):
                lost = [members[i] for i in getattr(value, "subscription_ids", None) or members if i in members]
                log.info("EWS subscriptions lost (%s): %d mailbox(es) subscribe again", value, len(lost))
                for member in lost:
                    self.hub.leave(member, unsubscribe=False)
                self.tell("lost", members=lost)
                return failures
            elif isinstance(value, _AUTH):
                self.tell("error", map_error(value, next(iter(members.values())).client.settings))
                await self._pause(failures + 1)
                return failures + 1
            else:  # a cut stream, a restarted server, too many connections: reconnect, catch up
                log.info("EWS stream ended (%s: %s); reconnecting", type(value).__name__, value)
                self.tell("rescan")
                await self._pause(failures + 1)
                return failures + 1


class StreamHub:
    """The groups of one server and login."""

    def __init__(self) -> None:
        self.groups: list[Group] = []

    def _pick(self) -> Group:
        open_groups = [g for g in self.groups if len(g.members) < GROUP_SIZE]
        if open_groups:
            return min(open_groups, key=lambda g: len(g.members))
        if len(self.groups) < MAX_GROUPS:
            group = Group(self)
            self.groups.append(group)
            return group
        # every connection is full: share the least loaded one beyond the documented size
        return min(self.groups, key=lambda g: len(g.members))

    async def join(self, client: EwsClient, subscribe: Callable[[], str]) -> Member:
        """Subscribe (``subscribe`` runs in the client's pool) with the affinity of a group; its member."""
        group = self._pick()
        # the group's first Subscribe learns its mailbox server's cookie; the others wait for
        # it, or they would each land on their own mailbox's server
        subscription: str | None = None
        if group.cookie is None:
            async with group.first:
                if group.cookie is None:
                    client.account.affinity_cookie = None
                    subscription = await client.run(subscribe)
                    group.cookie = client.account.affinity_cookie
        if subscription is None:
            client.account.affinity_cookie = group.cookie
            subscription = await client.run(subscribe)
        member = Member(subscription, client, group=group)
        if group not in self.groups:
            self.groups.append(group)
        group.members[subscription] = member
        group.changed.set()
        if group.task is None or group.task.done():
            group.task = asyncio.get_running_loop().create_task(group.run(), name="ews-stream-group")
        return member

    def leave(self, member: Member, *, unsubscribe: bool = True) -> None:
        group = member.group
        if group is None:
            return
        member.group = None
        group.members.pop(member.subscription, None)
        # a member leaving needs no new stream (its unsubscribed id just stays quiet), the
        # last one ends the group's
        if not group.members:
            group.changed.set()
            if group in self.groups:
                self.groups.remove(group)


_HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], StreamHub]] = (
    weakref.WeakKeyDictionary()
)


def hub_for(client: EwsClient) -> StreamHub:
    loop = asyncio.get_running_loop()
    hubs = _HUBS.setdefault(loop, {})
    return hubs.setdefault(client.settings.endpoint_key, StreamHub())


__all__ = ["GROUP_SIZE", "MAX_GROUPS", "Member", "StreamHub", "hub_for"]
