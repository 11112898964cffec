"""Tags on EWS: Outlook categories, for track by tag (issue 20;
:meth:`mailfiler.sources.base.Source.tag_changes`).

* **Every mail folder** of the mailbox is looked at (a category can be set
  anywhere), but Deleted Items, Junk Email, Drafts, Outbox and Sync Issues
  (and what is below them): a message there is on its way out or not mail.
* **The tag cursor** is a SyncFolderItems sync state of the folder's own,
  apart from the backfill's: a walk from it with ``item:Categories`` in the
  item shape gives each item whose categories (or anything but the read flag)
  changed as an Update, a message moved in or delivered as a Create, both
  with their categories; ReadFlagChange and Delete entries are no tag change.
  An idle pass thus costs one FindFolder and one SyncFolderItems per folder.
* **Without a cursor** (a first pass, a rejected state, a folder made anew
  under the same name) the walk starts from no state: Exchange reports every
  item as a Create with its categories, which is the list of messages
  carrying a tag now *and* the cursor in the same requests (a FindItem
  restricted on ``item:Categories`` would find the tagged ones, but a sync
  state can only be had by walking the folder anyway).
* **Each change's cursor** is the state the page it came in was asked from
  (it covers the pages before, never one after); the last change of the walk
  gets the final state.  A crash mid-page reports that page again: the
  consumer finds it done.
* **With the stream** (the daemon's watcher, subscribed to all folders while
  track by tag is on) a pass walks only the folders the stream named since the
  last pass began (:class:`Dirty`), and those without a cursor: an idle pass
  is the one FindFolder.  Every folder is walked when no stream is live, after
  a (re)subscription or a stream that may have lost events, and at least
  every :data:`FULL_EVERY` seconds.
* **mailfiler's own categories** (``Tracked in CRM``, ``Not tracked (see
  CRM)``) never match, whatever the query says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from exchangelib import errors as ex
from exchangelib.fields import FieldPath
from exchangelib.folders import DeletedItems, Drafts, JunkEmail, Outbox, SyncIssues
from exchangelib.items import ID_ONLY, Message
from exchangelib.services import SyncFolderItems

from mailfiler.errors import MailboxUnavailable
from mailfiler.sources.base import TagChange, TagDelta, TagQuery, folder_cursor, folder_cursor_state
from mailfiler.sources.ews import folders as fl
from mailfiler.sources.ews.client import EwsClient
from mailfiler.sources.ews.settings import EwsSettings

log = logging.getLogger("mailfiler.sources.ews")

PREFIX = "ewstag1."
#: the distinguished folders a tag pass leaves out, with what is below them
SKIPPED = (DeletedItems, JunkEmail, Drafts, Outbox, SyncIssues)
_FOLDER_GONE = (ex.ErrorFolderNotFound, ex.ErrorInvalidIdMalformed)
#: seconds after which a pass walks every folder even with a live stream (a safety net)
FULL_EVERY = 600.0


@dataclass
class Dirty:
    """The folders (ids) a live all-folders stream saw change since the last tag
    pass began; ``folders`` None: unknown (no stream, or events may be lost)."""

    folders: set[str] | None = None
    live: bool = False
    full_at: float = field(default=float("-inf"))

    def joined(self) -> None:
        """A (re)subscription: what happened before it is unknown."""
        self.live, self.folders = True, None

    def lost(self) -> None:
        self.live, self.folders = False, None

    def saw(self, folder_ids: Iterable[str]) -> None:
        if self.folders is not None:
            self.folders.update(folder_ids)

    def take(self) -> set[str] | None:
        """What a pass beginning now walks (None: every folder); the stream counts afresh."""
        got = self.folders
        if got is not None and time.monotonic() - self.full_at > FULL_EVERY:
            got = None
        if got is None:
            self.full_at = time.monotonic()
        self.folders = set() if self.live else None
        return got

    def put_back(self, folder_ids: set[str] | None) -> None:
        """A pass that did not finish: what it was to walk is walked next time."""
        if folder_ids is None:
            self.folders = None
        else:
            self.saw(folder_ids)


class EwsSource(Protocol):
    """What a tag pass uses of :class:`mailfiler.sources.ews.source.EwsSource`
    (a protocol: that module imports this one)."""

    @property
    def settings(self) -> EwsSettings: ...

    @property
    def client(self) -> EwsClient: ...

    tag_skipped: set[str] | None
    tag_dirty: Dirty


def _skipped_ids(account: Any) -> set[str]:
    """The ids of the distinguished folders left out (one GetFolder each, once per source)."""
    out: set[str] = set()
    for cls in SKIPPED:
        try:
            out.add(cls.get_distinguished(root=account.root).id)
        except (ex.ErrorFolderNotFound, ex.ErrorAccessDenied):
            continue  # a mailbox without that folder (Sync Issues is Outlook's), or not ours to see
    return out


def _folders(tree: fl.Tree, skipped: set[str]) -> dict[str, str]:
    """path -> folder id of every mail folder not at or below a skipped one."""
    out: dict[str, str] = {}
    for folder_id, path in tree.paths.items():
        node: fl.Node | None = tree.nodes.get(folder_id)
        left_out = False
        for _ in range(64):
            if node is None:
                break
            if node.id in skipped:
                left_out = True
                break
            node = tree.nodes.get(node.parent or "")
        if not left_out:
            out[path] = folder_id
    return out


def _page(source: EwsSource, folder_id: str, state: str | None) -> tuple[list[tuple[str, Any]], str | None, bool]:
    """One SyncFolderItems page with each item's categories."""
    account = source.client.account
    svc = SyncFolderItems(account=account)
    categories = FieldPath(field=Message.get_field_by_fieldname("categories"))
    changes = list(
        svc.call(
            folder=fl.folder_by_id(account, folder_id),
            shape=ID_ONLY,
            additional_fields={categories},
            sync_state=state,
            ignore=None,
            max_changes_returned=source.settings.page_size,
            sync_scope=None,
        )
    )
    return changes, svc.sync_state, bool(svc.includes_last_item_in_range) or svc.sync_state == state


def own_categories(settings: EwsSettings) -> set[str]:
    return {c.lower() for c in settings.own_categories}


async def _walk(source: EwsSource, folder: str, folder_id: str, state: str | None, query: TagQuery) -> TagDelta:
    every = folder in query.every_message_in
    own = own_categories(source.settings)
    found: dict[str, tuple[frozenset[str], str | None]] = {}  # item id -> (tags, cursor), latest wins
    while True:
        changes, new_state, last = await source.client.run(_page, source, folder_id, state)
        mine = folder_cursor(PREFIX, folder_id, state) if state else None
        for kind, item in changes:
            if kind not in ("create", "update"):
                continue  # a read flag or a delete: no tag change
            tags = frozenset(t for t in query.matching(getattr(item, "categories", None) or []) if t.lower() not in own)
            if tags or every:
                found.pop(item.id, None)
                found[item.id] = (tags, mine)
        state = new_state
        if last or state is None:
            break
    token = folder_cursor(PREFIX, folder_id, state) if state else None
    out = [TagChange(sid, tags, cur) for sid, (tags, cur) in found.items()]
    if out:
        out[-1] = TagChange(out[-1].source_id, out[-1].tags, token)
    return TagDelta(folder, out, token)


async def tag_changes(source: EwsSource, cursors: Mapping[str, str | None], query: TagQuery) -> AsyncIterator[TagDelta]:
    client = source.client
    if source.tag_skipped is None:
        source.tag_skipped = await client.run(_skipped_ids, client.account)
    dirty = source.tag_dirty.take()
    finished = False
    try:
        tree = await client.run(fl.load_tree, client.account)
        for folder, folder_id in sorted(_folders(tree, source.tag_skipped).items()):
            state = folder_cursor_state(PREFIX, cursors.get(folder), folder_id)
            if state is not None and dirty is not None and folder_id not in dirty:
                continue  # the live stream saw nothing change here
            delta = await _folder(source, folder, folder_id, state, query)
            if delta is None:
                source.tag_dirty.saw({folder_id})  # looked at again next time
            elif delta.changes or delta.token != cursors.get(folder):
                yield delta
        finished = True
    finally:
        if not finished:
            source.tag_dirty.put_back(dirty)


async def _folder(
    source: EwsSource, folder: str, folder_id: str, state: str | None, query: TagQuery
) -> TagDelta | None:
    """The folder's tag changes, or None when it could not be looked at."""
    try:
        try:
            return await _walk(source, folder, folder_id, state, query)
        except ex.ErrorInvalidSyncStateData:
            log.info("Exchange refused the tag sync state of %s/%s; looking afresh", source.settings.mailbox, folder)
            return await _walk(source, folder, folder_id, None, query)
    except _FOLDER_GONE:
        return None  # deleted since the listing
    except MailboxUnavailable:
        raise
    except ex.EWSError as exc:  # one folder the server will not show
        log.warning("tag pass: skipping %s: %s", folder, exc, extra={"event": "tag-folder-failed", "folder": folder})
        return None


__all__ = ["Dirty", "tag_changes"]
