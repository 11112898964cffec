"""The Microsoft Graph mailbox (Exchange Online, Microsoft 365) as a :class:`Source`.

Source ids are Graph's immutable message ids (they survive moves inside the
mailbox); the tracker still identifies a message across folders by its
Message-ID, as for every backend.

**Cursor tokens are delta links.**  A listing is a message delta round
(``mailFolders/{id}/messages/delta``) from nothing, a catch-up a round from
the stored delta link; the round's final ``@odata.deltaLink`` is the token
once every message of it is handled.  A delta link cannot say "up to this
message" of its round, so the token a message commits with
(:meth:`GraphSource.message_token`) names the round's starting point, the
message's place in it and its id: a catch-up from it runs that round again
and leaves out what came before the message, provided the replay starts the
same way (same id at the same place); otherwise it leaves out nothing, and
the worker skips what it holds already.  The last message of a round commits
the round's delta link itself.  A replay of a full listing also says which
messages are there now (``Delta.present``), since a listing has no
``@removed``.  An expired link (410) is None: the worker lists the folder in
full and diffs it against the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from mailfiler.errors import FolderMissing, MailboxUnavailable
from mailfiler.sources.base import Change, Delta, Listing, MarkState, Source, TagDelta, TagQuery
from mailfiler.sources.graph.auth import SignIn, Tokens
from mailfiler.sources.graph.client import DeltaExpired, GraphClient, GraphError
from mailfiler.sources.graph.folders import FolderTree
from mailfiler.sources.graph.reader import Reader
from mailfiler.sources.graph.tags import Watched
from mailfiler.util.text import plural

log = logging.getLogger("mailfiler.graph")

GRAPH_ROOT = "https://graph.microsoft.com/v1.0"
#: delta page size asked for (Prefer: odata.maxpagesize)
PAGE_SIZE = 200
#: delta rounds remembered per source for message_token (each maps ids to places)
ROUNDS_KEPT = 16
FINAL, PARTIAL = "D ", "P "


@dataclass(frozen=True)
class GraphSettings:
    sign_in: SignIn
    #: UPN or id of the mailbox (app-only); None: the signed-in user (/me)
    user: str | None = None
    graph_root: str = GRAPH_ROOT
    ca_file: str | None = None
    timeout: float = 60.0
    poll_min: float = 2.0
    poll_max: float = 60.0
    #: (tracked, failed) Outlook categories, or None: no marks
    categories: tuple[str, str] | None = None
    page_size: int = PAGE_SIZE
    #: change notifications: the public HTTPS URL Graph POSTs to (None: polling only)
    webhook_url: str | None = None
    #: where the local listener behind that URL listens (host, port)
    webhook_listen: tuple[str, int] = ("127.0.0.1", 8435)
    #: categories mailfiler sets itself (the marks' names, set or not): never a tag that tracks
    own_categories: tuple[str, ...] = ("Tracked in CRM", "Not tracked (see CRM)")
    #: track by tag is on: a message that changed in a watched folder wakes a tag pass
    tag_events: bool = False


@dataclass
class _Round:
    """What a delta round handed out, for :meth:`GraphSource.message_token`."""

    base: str | None  # the delta link it started from (None: a full listing)
    places: dict[str, int] = field(default_factory=dict)  # id -> 1-based place among the round's messages
    last: str | None = None


def _final(link: str) -> str:
    return FINAL + link


_FOLDER_IN_LINK = re.compile(r"/mailFolders(?:/|\(')([^/'()?]+)(?:'\))?/messages/delta", re.IGNORECASE)


def _folder_of(link: str | None) -> str | None:
    """The folder id a message delta link is for (``/mailFolders/{id}/messages/delta``, or
    ``/mailFolders('{id}')/...`` as Graph writes its links); None when it names none."""
    if not link:
        return None
    m = _FOLDER_IN_LINK.search(unquote(link))
    return m.group(1) if m else None


def _parse(token: str) -> tuple[str | None, int, str | None] | None:
    """(base link or None, messages to leave out, the id expected last among them)."""
    if token.startswith(FINAL):
        return token[len(FINAL) :], 0, None
    if token.startswith(PARTIAL):
        try:
            base, place, sid = json.loads(token[len(PARTIAL) :])
        except ValueError:
            return None
        return base, int(place), sid
    return None


class GraphSource(Source):
    backend = "graph"

    def __init__(self, settings: GraphSettings, *, tokens: Tokens | None = None) -> None:
        self.settings = settings
        who = settings.user or "the signed-in user"
        self.tokens = tokens or Tokens(settings.sign_in, f"graph sign-in for {who}")
        self._connect()
        self._rounds: OrderedDict[str, _Round] = OrderedDict()
        #: ids of the folders a tag pass leaves out (Deleted Items...), once looked up
        self.tag_skipped: set[str] | None = None
        #: the folders the watcher polls and those it saw change (sources/graph/tags.py)
        self.tag_watched = Watched()

    def _connect(self) -> None:
        settings = self.settings
        path = f"/users/{quote(settings.user, safe='@.')}" if settings.user else "/me"
        self.client = GraphClient(
            settings.graph_root, path, self.tokens, ca_file=settings.ca_file, timeout=settings.timeout
        )
        self.tree = FolderTree(self.client)
        self.reader = Reader(self.client)

    # -- connection ------------------------------------------------------------------

    async def open(self, *, create: bool = False) -> None:
        if self.client.closed:
            # the daemon opens a mailbox's source again after a failure closed it
            self._connect()
        await self.tree.refresh()

    async def close(self) -> None:
        await self.client.aclose()

    async def resume(self, tokens: Mapping[str, str]) -> None:
        """Bind each tracked folder's path to the folder its token's delta link names."""
        for folder, token in tokens.items():
            parsed = _parse(token)
            folder_id = _folder_of(parsed[0]) if parsed is not None else None
            if folder_id is not None:
                await self.tree.adopt(folder, folder_id)

    # -- folders -----------------------------------------------------------------------

    async def list_folders(self) -> list[str]:
        await self.tree.refresh()
        return self.tree.paths()

    async def folder_exists(self, folder: str) -> bool:
        return await self.tree.exists(folder)

    async def create_folder(self, folder: str) -> None:
        await self.tree.create(folder)

    async def _folder_id(self, folder: str) -> str:
        return await self.tree.resolve(folder)

    def _gone(self, folder: str, exc: GraphError) -> FolderMissing:
        self.tree.forget(folder)
        return FolderMissing(f"the folder {folder!r} is gone: {exc.code}", folder=folder)

    # -- delta rounds ------------------------------------------------------------------

    def _delta_start(self, folder_id: str) -> str:
        return f"/mailFolders/{quote(folder_id, safe='')}/messages/delta?$select=internetMessageId"

    async def _round(self, folder: str, base: str | None) -> tuple[list[str], set[str], str]:
        """One delta round: (ids present or new, in order; ids removed; the new delta link)."""
        folder_id = await self._folder_id(folder)
        start = base or self._delta_start(folder_id)
        added: dict[str, None] = {}
        removed: set[str] = set()
        link: str | None = None
        try:
            async for page in self.client.pages(
                start, headers={"Prefer": f"odata.maxpagesize={self.settings.page_size}"}
            ):
                for item in page["value"]:
                    sid = item.get("id")
                    if not isinstance(sid, str) or not sid:
                        continue
                    if "@removed" in item:
                        added.pop(sid, None)
                        removed.add(sid)
                    else:
                        removed.discard(sid)
                        added.setdefault(sid, None)  # delta repeats items across pages: the first place counts
                link = page.get("@odata.deltaLink") or link
        except DeltaExpired:
            raise
        except GraphError as exc:
            if exc.status == 404:
                raise self._gone(folder, exc) from exc
            raise MailboxUnavailable(f"reading the changes of {folder!r}: {exc}") from exc
        if link is None:
            raise MailboxUnavailable(f"a delta round of {folder!r} ended without a delta link")
        return list(added), removed, link

    def _remember(self, token: str, base: str | None, ids: list[str], offset: int) -> None:
        rnd = _Round(base, {sid: offset + i for i, sid in enumerate(ids, 1)}, ids[-1] if ids else None)
        self._rounds[token] = rnd
        self._rounds.move_to_end(token)
        while len(self._rounds) > ROUNDS_KEPT:
            self._rounds.popitem(last=False)

    async def list_messages(self, folder: str) -> Listing:
        try:
            ids, _, link = await self._round(folder, None)
        except DeltaExpired:
            # a skip token of this very round expired between its pages: start it again, once
            log.info("graph: listing %r: a page link expired; listing it again", folder)
            try:
                ids, _, link = await self._round(folder, None)
            except DeltaExpired as exc:
                raise MailboxUnavailable(f"listing {folder!r}: {exc}") from exc
        token = _final(link)
        self._remember(token, None, ids, 0)
        return Listing(folder, {sid: None for sid in ids}, token)

    async def list_changes(self, folder: str, token: str) -> Delta | None:
        parsed = _parse(token)
        if parsed is None:
            return None
        base, skip, expected = parsed
        try:
            ids, removed, link = await self._round(folder, base)
        except DeltaExpired:
            log.info("graph: the delta link of %r expired; listing it in full", folder)
            return None
        offset = 0
        if skip and len(ids) >= skip and ids[skip - 1] == expected:
            offset = skip  # the replay starts as the round did: leave out what was committed
        new_token = _final(link)
        rest = ids[offset:]
        self._remember(new_token, base, rest, offset)
        present = frozenset(ids) if base is None else None
        return Delta(folder, {sid: None for sid in rest}, frozenset(removed), present, new_token)

    def message_token(self, token: str, source_id: str) -> str | None:
        rnd = self._rounds.get(token)
        if rnd is None or source_id not in rnd.places:
            return None
        if source_id == rnd.last:
            return token
        return PARTIAL + json.dumps([rnd.base, rnd.places[source_id], source_id])

    # -- messages ------------------------------------------------------------------------

    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        return await self.reader.size(await self._folder_id(folder), source_id)

    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        return await self.reader.fetch(await self._folder_id(folder), source_id)

    async def sizes_of(self, folder: str, items: Mapping[str, str | None]) -> dict[str, int | Exception]:
        folder_id = await self._folder_id(folder)
        return await self.reader.sizes(folder_id, list(items))

    async def fetch_batch(self, folder: str, items: Mapping[str, str | None]) -> dict[str, bytes | Exception]:
        folder_id = await self._folder_id(folder)
        return await self.reader.fetch_many(folder_id, list(items))

    async def copy_raw(self, folder: str, source_id: str, hint: str | None, dest: str) -> bool:
        folder_id = await self._folder_id(folder)
        with open(dest, "wb") as out:
            await self.reader.copy_to(folder_id, source_id, out)
        return True

    # -- marks -------------------------------------------------------------------------------

    @property
    def marks(self) -> bool:
        return self.settings.categories is not None

    async def mark(self, folder: str, source_ids: Sequence[str], state: MarkState) -> int:
        if self.settings.categories is None or not source_ids:
            return 0
        from mailfiler.sources.graph.marks import set_category

        try:
            folder_id = await self._folder_id(folder)
            return await set_category(self.client, folder_id, source_ids, state, self.settings.categories)
        except (MailboxUnavailable, FolderMissing, GraphError) as exc:
            what = plural(len(source_ids), "message")
            log.warning("graph: marking %s in %r as %s failed: %s", what, folder, state, exc)
            return 0

    async def unmarked(self, folder: str, state: MarkState) -> set[str] | None:
        if self.settings.categories is None:
            return None
        from mailfiler.sources.graph.marks import lacking

        folder_id = await self._folder_id(folder)
        return await lacking(self.client, folder_id, state, self.settings.categories)

    # -- tags (track by tag: Outlook categories, sources/graph/tags.py) -------------------------

    @property
    def tags(self) -> bool:
        return True

    def tag_changes(self, cursors: Mapping[str, str | None], query: TagQuery) -> AsyncIterator[TagDelta]:
        from mailfiler.sources.graph.tags import tag_changes

        return tag_changes(self, cursors, query)

    # -- watching ---------------------------------------------------------------------------

    def watch(self, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
        from mailfiler.sources.graph.watch import poll

        return poll(self, folders, stop)

    async def folder_round(self, folder: str, link: str | None) -> tuple[list[str], set[str], str]:
        """A delta round for the watcher (its own links, apart from the worker's tokens)."""
        return await self._round(folder, link)


__all__ = ["GraphSettings", "GraphSource"]
