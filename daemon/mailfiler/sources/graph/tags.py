"""Tags on Microsoft Graph: Outlook categories, for track by tag (issue 20;
:meth:`mailfiler.sources.base.Source.tag_changes`).

* **Every mail folder** of the mailbox (the folder tree's delta, one small
  request), but Deleted Items, Junk Email, Drafts, Outbox and Sync Issues and
  what is below them (their ids asked once per source by well-known name).
* **The tag cursor** is a message delta link of the folder's own, apart from
  the worker's and the watcher's, of a round with
  ``$select=categories,internetMessageId``: a round from it lists every
  message changed since (a category set or cleared, read, moved in), each
  with its categories; ``@removed`` entries are no tag change.  An idle pass
  costs the folder delta and one message delta request per folder.
* **Without a cursor** (a first pass, an expired link: 410) the round starts
  from nothing and lists every message with its categories: the ones carrying
  a tag now *and* the cursor in the same requests.  (``$filter=categories/any(c:c
  eq 'CRM')`` finds the tagged ones too, but message delta takes no such
  filter, and a cursor can only be had by a round over the folder.)
* **Each change's cursor**: a delta link names a whole round, so only the
  round's last change carries it (the others commit none); a crash mid-round
  runs the round again and the consumer finds the first part done.
* **With the watcher** polling a folder (the daemon's, for tracked and
  auto-tracked folders: every folder by default), a pass walks it only when
  the watcher saw something change there since the last pass began
  (:class:`Watched`); folders not polled, and every folder every
  :data:`FULL_EVERY` seconds, are walked anyway.  An idle pass on a mailbox
  whose folders are all watched is the folder delta alone.
* **mailfiler's own categories** never match, whatever the query says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from mailfiler.errors import FolderMissing, MailboxUnavailable
from mailfiler.sources.base import TagChange, TagDelta, TagQuery, folder_cursor, folder_cursor_state
from mailfiler.sources.graph.client import DeltaExpired, GraphClient, GraphError
from mailfiler.sources.graph.folders import FolderTree

log = logging.getLogger("mailfiler.graph")

PREFIX = "graphtag1."
#: well-known folders a tag pass leaves out, with what is below them
SKIPPED = ("deleteditems", "junkemail", "drafts", "outbox", "syncissues")
#: seconds after which a pass walks every folder, watched or not (a safety net)
FULL_EVERY = 600.0


def _key(path: str) -> str:
    return "/".join(p for p in path.split("/") if p).casefold()


@dataclass
class Watched:
    """The folders (paths) the watcher polls now, and those it saw change since
    the last tag pass began: a polled folder that did not change is skipped."""

    live: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    full_at: float = float("-inf")

    def started(self, path: str) -> None:
        """Polled from now on; what changed before is unknown."""
        self.live.add(_key(path))
        self.changed.add(_key(path))

    def stopped(self, path: str | None = None) -> None:
        if path is None:
            self.live.clear()
        else:
            self.live.discard(_key(path))

    def saw(self, path: str) -> None:
        self.changed.add(_key(path))

    def take(self) -> frozenset[str]:
        """The folders a pass beginning now may skip; the watcher counts afresh."""
        skippable: frozenset[str] = frozenset()
        if time.monotonic() - self.full_at > FULL_EVERY:
            self.full_at = time.monotonic()
        else:
            skippable = frozenset(self.live - self.changed)
        self.changed = set()
        return skippable

    def put_back(self) -> None:
        """A pass that did not finish: every polled folder is walked next time."""
        self.changed |= self.live


class _Settings(Protocol):
    @property
    def own_categories(self) -> tuple[str, ...]: ...
    @property
    def page_size(self) -> int: ...


class GraphSource(Protocol):
    """What a tag pass uses of :class:`mailfiler.sources.graph.source.GraphSource`
    (a protocol: that module imports this one)."""

    @property
    def settings(self) -> _Settings: ...
    @property
    def client(self) -> GraphClient: ...
    @property
    def tree(self) -> FolderTree: ...

    tag_skipped: set[str] | None
    tag_watched: Watched


async def _skipped_ids(client: GraphClient) -> set[str]:
    out: set[str] = set()
    for name in SKIPPED:
        try:
            got = await client.get(f"/mailFolders/{name}", **{"$select": "id"})
        except GraphError as exc:
            if exc.status not in (400, 403, 404):
                raise MailboxUnavailable(f"looking up the {name} folder: {exc}") from exc
            continue  # no such folder in this mailbox (Outbox, Sync Issues are Outlook's)
        if isinstance(got, dict) and got.get("id"):
            out.add(str(got["id"]))
    return out


def _folders(tree: FolderTree, skipped: set[str]) -> dict[str, str]:
    """path -> folder id of every folder not at or below a skipped one."""
    out: dict[str, str] = {}
    ids = [*tree.folders, *([tree.inbox_id] if tree.inbox_id else [])]
    for fid in dict.fromkeys(ids):
        path = tree.path_of(fid)
        if not path:
            continue
        cur, left_out = fid, False
        for _ in range(64):
            if cur in skipped:
                left_out = True
                break
            if cur not in tree.folders:
                break
            cur = tree.folders[cur][1]
        if not left_out:
            out[path] = fid
    return out


async def _round(source: GraphSource, folder: str, folder_id: str, link: str | None, query: TagQuery) -> TagDelta:
    start = link or (f"/mailFolders/{quote(folder_id, safe='')}/messages/delta?$select=categories,internetMessageId")
    own = {c.lower() for c in source.settings.own_categories}
    every = folder in query.every_message_in
    found: dict[str, frozenset[str]] = {}
    new_link: str | None = None
    try:
        async for page in source.client.pages(
            start, headers={"Prefer": f"odata.maxpagesize={source.settings.page_size}"}
        ):
            for item in page["value"]:
                sid = item.get("id")
                if not isinstance(sid, str) or not sid:
                    continue
                if "@removed" in item:
                    found.pop(sid, None)
                    continue
                cats = item.get("categories")
                names = [c for c in cats if isinstance(c, str)] if isinstance(cats, list) else []
                tags = frozenset(t for t in query.matching(names) if t.lower() not in own)
                found.pop(sid, None)
                if tags or every:
                    found[sid] = tags  # delta repeats a message changed mid-round: the latest counts
            new_link = page.get("@odata.deltaLink") or new_link
    except DeltaExpired:
        raise
    except GraphError as exc:
        if exc.status == 404:
            raise FolderMissing(f"the folder {folder!r} is gone", folder=folder) from exc
        raise MailboxUnavailable(f"reading the tag changes of {folder!r}: {exc}") from exc
    if new_link is None:
        raise MailboxUnavailable(f"a delta round of {folder!r} ended without a delta link")
    token = folder_cursor(PREFIX, folder_id, new_link)
    changes = [TagChange(sid, tags) for sid, tags in found.items()]
    if changes:
        changes[-1] = TagChange(changes[-1].source_id, changes[-1].tags, token)
    return TagDelta(folder, changes, token)


async def tag_changes(
    source: GraphSource, cursors: Mapping[str, str | None], query: TagQuery
) -> AsyncIterator[TagDelta]:
    if source.tag_skipped is None:
        source.tag_skipped = await _skipped_ids(source.client)
    skippable = source.tag_watched.take()
    finished = False
    try:
        await source.tree.refresh()
        for folder, folder_id in sorted(_folders(source.tree, source.tag_skipped).items()):
            link = folder_cursor_state(PREFIX, cursors.get(folder), folder_id)
            if link is not None and _key(folder) in skippable:
                continue  # the watcher polls it and saw nothing change
            delta = await _folder(source, folder, folder_id, link, query)
            if delta is None:
                source.tag_watched.saw(folder)  # looked at again next time
            elif delta.changes or delta.token != cursors.get(folder):
                yield delta
        finished = True
    finally:
        if not finished:
            source.tag_watched.put_back()


async def _folder(
    source: GraphSource, folder: str, folder_id: str, link: str | None, query: TagQuery
) -> TagDelta | None:
    """The folder's tag changes, or None when it could not be looked at."""
    try:
        try:
            return await _round(source, folder, folder_id, link, query)
        except DeltaExpired:
            if link is None:
                raise
            log.info("graph: the tag delta link of %r expired; looking at it afresh", folder)
            return await _round(source, folder, folder_id, None, query)
    except FolderMissing:
        return None  # deleted since the listing
    except DeltaExpired as exc:  # a skip token expired mid-round: the next pass tries again
        log.warning("tag pass: skipping %s: %s", folder, exc, extra={"event": "tag-folder-failed", "folder": folder})
        return None


__all__ = ["Watched", "tag_changes"]
