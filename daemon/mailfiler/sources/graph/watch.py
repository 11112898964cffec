"""Push for Graph without a public endpoint: adaptive delta polling.

Change notifications (webhooks) need an HTTPS URL that Microsoft can reach,
which a self-hosted daemon usually lacks; so each watched folder's message
delta is polled.  The pace adapts: right after a change the interval drops to
``poll_min`` (mail tends to come in bursts: a thread, a delivery of several),
and each quiet round stretches it by half, up to ``poll_max``.  However
many folders are watched, the watcher sends at most :data:`MAX_POLL_RATE`
requests a second (``poll_min`` grows with the folder count).  An idle
mailbox costs ``3600 / poll_max`` delta requests per hour per watched folder
(60 with the defaults), far below Exchange Online's 10,000 per 10 minutes.

The watcher keeps its own delta links and the ids it has seen per folder: a
delta round also lists messages that only changed (read, flagged, a
category), which are no change for mailfiler.  An expired link reads the
folder again and a ``rescan`` asks the worker to diff it; a lost connection
is retried with backoff a few times before the supervisor hears of it; a
refused sign-in goes to the supervisor at once (status, backoff).

With ``webhook_url`` (:mod:`.webhook`), a notification makes the watcher read
the folders it names at once; polling goes on as the safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol

from mailfiler.errors import FolderMissing, LoginRefused, MailboxMissing, MailboxUnavailable, TlsCertificateRefused
from mailfiler.sources.base import Change
from mailfiler.sources.graph.client import DeltaExpired, GraphClient, GraphError
from mailfiler.sources.graph.folders import FolderTree
from mailfiler.sources.graph.tags import Watched

if TYPE_CHECKING:
    from mailfiler.sources.graph.webhook import Subscriptions

log = logging.getLogger("mailfiler.graph")


class _Settings(Protocol):
    @property
    def poll_min(self) -> float: ...
    @property
    def poll_max(self) -> float: ...
    @property
    def webhook_url(self) -> str | None: ...
    @property
    def webhook_listen(self) -> tuple[str, int]: ...
    @property
    def tag_events(self) -> bool: ...


class GraphSource(Protocol):
    """What the watcher uses of :class:`mailfiler.sources.graph.source.GraphSource`:
    a protocol, since that module imports this one."""

    @property
    def settings(self) -> _Settings: ...
    @property
    def client(self) -> GraphClient: ...
    @property
    def tree(self) -> FolderTree: ...
    @property
    def tag_watched(self) -> Watched: ...
    async def folder_round(self, folder: str, link: str | None) -> tuple[list[str], set[str], str]: ...


#: how much a quiet round stretches the interval
BACKOFF = 1.5
#: the watcher's own requests per second per mailbox at most, however many folders and however
#: short poll.min: 4,800 per 10 minutes, under half of Exchange Online's 10,000, leaving the rest
#: to reading the mail (the worker's catch-ups and $value)
MAX_POLL_RATE = 8.0


class _Folder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.link: str | None = None
        self.known: set[str] = set()


async def _sleep(stop: asyncio.Event, seconds: float, subs: Subscriptions | None = None) -> set[str]:
    """Wait ``seconds``, or until stopped, or until a notification names folders (returned)."""
    if subs is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        return set()
    waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(subs.event.wait())}
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    return subs.take()


async def _start(source: GraphSource, state: _Folder) -> None:
    ids, _, link = await source.folder_round(state.name, None)
    state.known, state.link = set(ids), link
    source.tag_watched.started(state.name)


async def _look(source: GraphSource, state: _Folder) -> list[Change]:
    """One poll of one folder: what came and went since the last.  With track by tag, a
    message known already that the round lists again changed (a category, perhaps): a
    ``tags`` change wakes a tag pass."""
    if state.link is None:
        await _start(source, state)
        return [Change("rescan", state.name)]
    try:
        ids, removed, link = await source.folder_round(state.name, state.link)
    except DeltaExpired:
        log.info("graph: the watcher's delta link of %r expired; reading the folder again", state.name)
        await _start(source, state)
        # what changed meanwhile is unknown: a category too, perhaps (track by tag)
        return [Change("rescan", state.name), *([Change("tags", "*")] if source.settings.tag_events else [])]
    state.link = link
    changes = [Change("gone", state.name, sid) for sid in sorted(removed & state.known)]
    state.known -= removed
    touched = False
    for sid in ids:
        if sid not in state.known:
            state.known.add(sid)
            changes.append(Change("added", state.name, sid))
        else:
            touched = True
    if touched or changes:
        source.tag_watched.saw(state.name)  # the tag pass walks it (sources/graph/tags.py)
    if source.settings.tag_events and (touched or any(c.kind == "added" for c in changes)):
        changes.append(Change("tags", "*"))
    return changes


async def _look_or_missing(source: GraphSource, state: _Folder) -> list[Change]:
    try:
        return await _look(source, state)
    except FolderMissing:
        state.link = None  # the worker reports it; looked for again next round
        source.tag_watched.stopped(state.name)
        return []


async def _subscribe(source: GraphSource, subs: Subscriptions, states: list[_Folder]) -> None:
    """Subscribe to every folder (or renew); a failure only means polling alone for now."""
    for state in states:
        try:
            await subs.ensure(state.name, await source.tree.resolve(state.name))
        except (FolderMissing, GraphError, MailboxUnavailable) as exc:
            log.info("graph webhook: no subscription for %r (%s); polling it", state.name, exc)


async def poll(source: GraphSource, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
    settings = source.settings
    states = [_Folder(f) for f in dict.fromkeys(folders)]
    low = max(settings.poll_min, len(states) / MAX_POLL_RATE)
    high = max(settings.poll_max, low)
    for state in states:  # the starting point: what is there now is no news
        with contextlib.suppress(FolderMissing):
            await _start(source, state)
    subs: Subscriptions | None = None
    if settings.webhook_url:
        from mailfiler.sources.graph.webhook import Subscriptions

        subs = Subscriptions(source.client, settings.webhook_url, *settings.webhook_listen)
        await _subscribe(source, subs, states)
    interval = low
    failures = 0
    woken: set[str] = set()
    try:
        while not stop.is_set():
            started = time.monotonic()
            batch: list[Change] = []
            # a notification: the folders it names now; else every folder at the polling pace
            due = [s for s in states if s.name in woken] if woken else states
            try:
                # the folders side by side (the client keeps to the mailbox's 4 requests in flight)
                for changes in await asyncio.gather(*(_look_or_missing(source, state) for state in due)):
                    batch.extend(changes)
                failures = 0
                if subs is not None and not woken:
                    await _subscribe(source, subs, states)
            except (LoginRefused, MailboxMissing, TlsCertificateRefused):
                raise  # not transient: the supervisor shows it in status and backs off
            except MailboxUnavailable as exc:
                failures += 1
                if failures > 3:
                    raise
                wait = min(high, low * 2**failures)
                log.info("graph: polling failed (%s); next try in %.1f s", exc, wait)
                await _sleep(stop, wait)
                continue
            if batch:
                interval = low
                yield batch
            elif not woken:
                interval = min(high, interval * BACKOFF)
            woken = await _sleep(stop, max(0.0, interval - (time.monotonic() - started)), subs)
    finally:
        source.tag_watched.stopped()  # nothing polled: a tag pass walks every folder
        if subs is not None:
            await subs.close()
