"""The Exchange Server mailbox as a :class:`~mailfiler.sources.base.Source` (EWS).

* Folders are tracked by id: a path is resolved once and the binding kept
  (also from a cursor token, which carries the id), so a folder renamed or
  moved in Outlook stays tracked; a deleted one is FolderMissing.
* Listings and catch-ups are SyncFolderItems page walks; their states are the
  cursor tokens (:mod:`mailfiler.sources.ews.tokens`).  A rejected state
  (ErrorInvalidSyncStateData) makes :meth:`list_changes` return None: the
  worker lists the folder in full and diffs it against the store.
* MIME is read with GetItem, many ids a request, ``mime_content`` only: never
  marking anything read.
* Marks are Outlook categories set with UpdateItem; a ChangeKey conflict is
  read again and retried, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from exchangelib import errors as ex
from exchangelib.items import ID_ONLY
from exchangelib.services import SyncFolderItems

from mailfiler.errors import FolderMissing, MessageVanished
from mailfiler.sources.base import Change, Delta, Listing, MarkState, Source, TagDelta, TagQuery
from mailfiler.sources.ews import folders as fl
from mailfiler.sources.ews.client import EwsClient
from mailfiler.sources.ews.settings import EwsSettings
from mailfiler.sources.ews.tags import Dirty
from mailfiler.sources.ews.tokens import Cursor, Walk, item_hash

log = logging.getLogger("mailfiler.sources.ews")

#: listings and catch-ups whose message tokens are kept (the worker asks about the latest)
WALKS_KEPT = 16
#: tries of a categories update that meets a ChangeKey conflict
MARK_TRIES = 3
_FOLDER_GONE = (ex.ErrorFolderNotFound, ex.ErrorInvalidIdMalformed)


class EwsSource(Source):
    backend = "ews"

    def __init__(self, settings: EwsSettings) -> None:
        self.settings = settings
        self.client = EwsClient(settings)
        #: folder path (normalised) -> folder id, kept across renames
        self._bound: dict[str, str] = {}
        self._walks: OrderedDict[str, Walk] = OrderedDict()
        #: ids of the folders a tag pass leaves out (Deleted Items...), once looked up
        self.tag_skipped: set[str] | None = None
        #: folders the all-folders stream saw change (sources/ews/tags.py); filled by the watcher
        self.tag_dirty = Dirty()

    # -- connection ------------------------------------------------------------------------

    async def open(self, *, create: bool = False) -> None:
        # one GetFolder (the Inbox): the login, the mailbox and the version are checked here
        await self.client.run(lambda: self.client.account.inbox.id)

    async def close(self) -> None:
        self._walks.clear()

    # -- folders ------------------------------------------------------------------------------

    async def _tree(self) -> fl.Tree:
        return await self.client.run(fl.load_tree, self.client.account)

    async def list_folders(self) -> list[str]:
        tree = await self._tree()
        return sorted(set(tree.paths.values()), key=lambda p: (p != fl.INBOX, p.casefold()))

    async def folder_exists(self, folder: str) -> bool:
        try:
            await self._folder_id(folder)
        except FolderMissing:
            return False
        return True

    async def create_folder(self, folder: str) -> None:
        folder_id = await self.client.run(fl.create_path, self.client.account, folder)
        self._bound[fl.path_key(folder)] = folder_id

    async def _folder_id(self, folder: str) -> str:
        key = fl.path_key(folder)
        bound = self._bound.get(key)
        if bound is not None:
            return bound
        found = (await self._tree()).find(folder)
        if found is None:
            raise FolderMissing(f"no folder {folder!r} in {self.settings.mailbox}", folder=folder)
        self._bound[key] = found
        return found

    def _unbind(self, folder: str) -> None:
        self._bound.pop(fl.path_key(folder), None)

    # -- listings and tokens ------------------------------------------------------------------

    def _page(self, folder_id: str, state: str | None) -> tuple[list[tuple[str, str]], str | None, bool]:
        """One SyncFolderItems page: (kind, item id) changes, the new state, whether it was the last."""
        account = self.client.account
        svc = SyncFolderItems(account=account)
        changes = [
            (kind, item.id)
            for kind, item in svc.call(
                folder=fl.folder_by_id(account, folder_id),
                shape=ID_ONLY,
                additional_fields=set(),
                sync_state=state,
                ignore=None,
                max_changes_returned=self.settings.page_size,
                sync_scope=None,
            )
        ]
        return changes, svc.sync_state, bool(svc.includes_last_item_in_range) or svc.sync_state == state

    async def _walk(self, folder: str, folder_id: str, cursor: Cursor | None) -> tuple[Walk, list[str], set[str]]:
        """Every page from the cursor's state: the walk, the creates in order, the deletes."""
        walk = Walk(fl.path_key(folder), folder_id)
        state = cursor.state if cursor else None
        carried = cursor.done if cursor else frozenset()
        added: dict[str, None] = {}
        gone: set[str] = set()
        while True:
            try:
                changes, new_state, last = await self.client.run(self._page, folder_id, state)
            except _FOLDER_GONE as exc:
                self._unbind(folder)
                raise FolderMissing(f"folder {folder!r} is gone from {self.settings.mailbox}", folder=folder) from exc
            creates = []
            for kind, sid in changes:
                if kind == "create":
                    if item_hash(sid) not in carried and sid not in added:
                        creates.append(sid)
                        added[sid] = None
                elif kind == "delete":
                    gone.add(sid)
                    added.pop(sid, None)
            walk.add_page(state, carried, creates)
            state = new_state
            if last:
                break
        walk.final_state = state
        return walk, list(added), gone

    def _remember(self, walk: Walk) -> str:
        token = walk.token
        self._walks[token] = walk
        self._walks.move_to_end(token)
        while len(self._walks) > WALKS_KEPT:
            self._walks.popitem(last=False)
        return token

    async def list_messages(self, folder: str) -> Listing:
        folder_id = await self._folder_id(folder)
        try:
            walk, added, _ = await self._walk(folder, folder_id, None)
        except FolderMissing:
            # a binding that went stale (the folder deleted, a new one made by that name)
            folder_id = await self._folder_id(folder)
            walk, added, _ = await self._walk(folder, folder_id, None)
        return Listing(folder, dict.fromkeys(added), self._remember(walk))

    async def list_changes(self, folder: str, token: str) -> Delta | None:
        cursor = Cursor.decode(token)
        if cursor is None:
            return None
        if cursor.path == fl.path_key(folder):
            self._bound.setdefault(cursor.path, cursor.folder_id)  # tracked by id, whatever its name is now
            folder_id = self._bound[cursor.path]
        else:
            folder_id = await self._folder_id(folder)
        if folder_id != cursor.folder_id:
            return None  # another folder by that name now: a full listing
        try:
            walk, added, gone = await self._walk(folder, folder_id, cursor)
        except ex.ErrorInvalidSyncStateData:
            log.info("Exchange refused the sync state of %s/%s; listing it in full", self.settings.mailbox, folder)
            return None
        delta_token = self._remember(walk)
        return Delta(folder, dict.fromkeys(added), frozenset(gone - set(added)), token=delta_token)

    def message_token(self, token: str, source_id: str) -> str | None:
        walk = self._walks.get(token)
        return walk.step(source_id) if walk is not None else None

    # -- reading -----------------------------------------------------------------------------------

    def _get(self, ids: list[str], fields: list[str]) -> list[Any]:
        account = self.client.account
        return list(
            account.fetch(ids=[(i, None) for i in ids], only_fields=fields, chunk_size=self.settings.fetch_batch)
        )

    async def _read(self, ids: list[str], fields: list[str]) -> dict[str, Any]:
        got = await self.client.run(self._get, ids, fields)
        out: dict[str, Any] = {}
        for sid, item in zip(ids, got, strict=True):
            if isinstance(item, ex.ErrorItemNotFound | ex.ErrorInvalidIdMalformed):
                continue
            out[sid] = item
        return out

    async def sizes_of(self, folder: str, items: Mapping[str, str | None]) -> dict[str, int | Exception]:
        if not items:
            return {}
        got = await self._read(list(items), ["size"])
        return {sid: item if isinstance(item, Exception) else int(item.size or 0) for sid, item in got.items()}

    async def fetch_batch(self, folder: str, items: Mapping[str, str | None]) -> dict[str, bytes | Exception]:
        if not items:
            return {}
        got = await self._read(list(items), ["mime_content"])
        return {
            sid: item if isinstance(item, Exception) else bytes(item.mime_content or b"") for sid, item in got.items()
        }

    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        got = (await self.sizes_of(folder, {source_id: hint})).get(source_id)
        if got is None:
            raise MessageVanished(f"message {source_id} is gone from {folder!r}", folder=folder, source_id=source_id)
        if isinstance(got, Exception):
            raise got
        return got

    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        got = (await self.fetch_batch(folder, {source_id: hint})).get(source_id)
        if got is None:
            raise MessageVanished(f"message {source_id} is gone from {folder!r}", folder=folder, source_id=source_id)
        if isinstance(got, Exception):
            raise got
        return got

    # -- marks -------------------------------------------------------------------------------------

    @property
    def marks(self) -> bool:
        return self.settings.categories is not None

    def _names(self, state: MarkState) -> tuple[str, str]:
        assert self.settings.categories is not None
        tracked, failed = self.settings.categories
        return (tracked, failed) if state == "tracked" else (failed, tracked)

    def _set_categories(self, ids: list[str], state: MarkState) -> int:
        want, other = self._names(state)
        account = self.client.account
        todo = list(ids)
        marked = 0
        for _ in range(MARK_TRIES):
            items = [
                i
                for i in account.fetch(ids=[(s, None) for s in todo], only_fields=["categories"])
                if not isinstance(i, Exception)
            ]
            changed = []
            for item in items:
                cats = [c for c in (item.categories or []) if c != other]
                if want in cats and len(cats) == len(item.categories or []):
                    marked += 1
                    continue
                item.categories = [*cats, want] if want not in cats else cats
                changed.append(item)
            if not changed:
                break
            conflicts = []
            for item, result in zip(changed, account.bulk_update([(i, ["categories"]) for i in changed]), strict=True):
                if isinstance(result, ex.ErrorIrresolvableConflict | ex.ErrorInvalidChangeKey):
                    conflicts.append(item.id)  # changed meanwhile (Outlook, a rule): read it again
                elif isinstance(result, Exception):
                    log.warning("Exchange refused the category on %s: %s", item.id, result)
                else:
                    marked += 1
            todo = conflicts
            if not todo:
                break
        return marked

    async def mark(self, folder: str, source_ids: Sequence[str], state: MarkState) -> int:
        if not self.marks or not source_ids:
            return 0
        try:
            return await self.client.run(self._set_categories, list(source_ids), state)
        except Exception as exc:  # noqa: BLE001 - a mark is best effort, never fatal
            log.warning("could not set Outlook categories in %s/%s: %s", self.settings.mailbox, folder, exc)
            return 0

    def _without(self, folder_id: str, name: str) -> set[str]:
        account = self.client.account
        query = fl.folder_by_id(account, folder_id).all().only("categories")
        query.page_size = 500  # FindItem pages (Exchange's own limit is 1000)
        return {item.id for item in query if name not in (getattr(item, "categories", None) or [])}

    async def unmarked(self, folder: str, state: MarkState) -> set[str] | None:
        if not self.marks:
            return None
        folder_id = await self._folder_id(folder)
        try:
            return await self.client.run(self._without, folder_id, self._names(state)[0])
        except _FOLDER_GONE as exc:
            self._unbind(folder)
            raise FolderMissing(f"folder {folder!r} is gone from {self.settings.mailbox}", folder=folder) from exc

    # -- tags (track by tag: Outlook categories, sources/ews/tags.py) -------------------------------

    @property
    def tags(self) -> bool:
        return True

    def tag_changes(self, cursors: Mapping[str, str | None], query: TagQuery) -> AsyncIterator[TagDelta]:
        from mailfiler.sources.ews.tags import tag_changes

        return tag_changes(self, cursors, query)

    # -- push ----------------------------------------------------------------------------------------

    def watch(self, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
        from mailfiler.sources.ews.watch import StreamWatcher

        return StreamWatcher(self, list(folders), stop).run()

    async def folder_ids(self, folders: Sequence[str]) -> dict[str, str]:
        """folder id -> path for those that exist (the watcher's map)."""
        out: dict[str, str] = {}
        for folder in folders:
            try:
                out[await self._folder_id(folder)] = folder
            except FolderMissing:
                continue
        return out


__all__ = ["EwsSource"]
