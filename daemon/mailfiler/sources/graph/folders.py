"""A mailbox's folder tree: "/"-separated paths <-> Graph folder ids.

The tree comes from ``mailFolders/delta`` (the whole tree flat on the first
round, then only folders added, renamed, moved or removed), so keeping it
current costs one small request.  The Inbox is named ``INBOX`` in paths, as
IMAP names it, whatever the language of the user's Outlook (its display
name is localised: Posteingang, Inkorg); the first segment matches
case-insensitively, so ``Inbox/Clients/Acme`` reads the same folder, but the
listing says ``INBOX/Clients/Acme``, and tracked_folders should too.  Other
names are Outlook's display names, matched case-insensitively as Exchange
does.

**Renames keep tracking.**  A path, once resolved, stays bound to its folder
id while that folder exists: when the user renames ``Clients/Acme`` to
``Clients/Acme Ltd`` in Outlook, the configured path still reads the same
folder, and the listing still shows it (and its subfolders) under the
configured path, so that it does not look like a new folder to watch.
Only when the folder is gone is the path looked up again (and is
:class:`FolderMissing` if nothing has that name).  The binding outlives a
restart too: a folder's cursor token is a delta link that names the folder
by id, and at start (``GraphSource.resume``) :meth:`FolderTree.adopt` binds
the configured path to that id again, so a folder renamed while the daemon
was stopped is still the one tracked (as long as it exists; else the path
is looked up by name).
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

from mailfiler.errors import FolderMissing
from mailfiler.sources.graph.client import DeltaExpired, GraphClient, GraphError

log = logging.getLogger("mailfiler.graph")

INBOX = "INBOX"


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class FolderTree:
    def __init__(self, client: GraphClient) -> None:
        self.client = client
        #: id -> (display name, parent id)
        self.folders: dict[str, tuple[str, str]] = {}
        self.inbox_id: str | None = None
        self.root_id: str | None = None
        self._delta_link: str | None = None
        #: configured path (casefolded) -> the folder id it resolved to
        self._bound: dict[str, str] = {}
        #: folder id -> the path it was resolved by (listed so, even after a rename)
        self._spelling: dict[str, str] = {}
        self._lock = asyncio.Lock()

    # -- keeping the tree current ---------------------------------------------------------

    async def refresh(self) -> None:
        """Apply the folder changes since the last look (the whole tree the first time)."""
        async with self._lock:
            if self.inbox_id is None:
                inbox = await self.client.get("/mailFolders/inbox", **{"$select": "id,parentFolderId"})
                self.inbox_id, self.root_id = str(inbox["id"]), str(inbox["parentFolderId"])
            try:
                await self._delta(self._delta_link)
            except DeltaExpired:
                log.info("graph: the folder delta link expired; reading the whole tree")
                self.folders.clear()
                await self._delta(None)

    async def _delta(self, link: str | None) -> None:
        url = link or "/mailFolders/delta?$select=displayName,parentFolderId"
        if link is None:
            self.folders.clear()
        async for page in self.client.pages(url):
            for item in page["value"]:
                fid = str(item.get("id", ""))
                if not fid:
                    continue
                if "@removed" in item:
                    self.folders.pop(fid, None)
                else:
                    self.folders[fid] = (str(item.get("displayName", "")), str(item.get("parentFolderId", "")))
            if "@odata.deltaLink" in page:
                self._delta_link = page["@odata.deltaLink"]

    # -- paths ------------------------------------------------------------------------------

    def path_of(self, fid: str) -> str | None:
        """The folder's path now (None: not under the mailbox's root, or unknown)."""
        parts: list[str] = []
        seen: set[str] = set()
        while fid != self.root_id:
            if fid in self._spelling:  # a folder tracked by path keeps that path when renamed
                parts.append(self._spelling[fid])
                break
            if fid == self.inbox_id:
                parts.append(INBOX)
                break
            if fid in seen or fid not in self.folders:
                return None
            seen.add(fid)
            name, parent = self.folders[fid]
            parts.append(name)
            fid = parent
        return "/".join(reversed(parts))

    def paths(self) -> list[str]:
        out = {p for fid in self.folders if (p := self.path_of(fid))}
        if self.inbox_id:
            out.add(INBOX)
        return sorted(out)

    def _lookup(self, path: str) -> str | None:
        parts = _split(path)
        if not parts:
            return None
        if parts[0].casefold() == INBOX.casefold():
            current, rest = self.inbox_id, parts[1:]
        else:
            current, rest = self.root_id, parts
        for name in rest:
            want = name.casefold()
            match = [fid for fid, (n, parent) in self.folders.items() if parent == current and n.casefold() == want]
            if not match:
                return None
            current = match[0]
        return current

    async def resolve(self, path: str) -> str:
        """The folder id of ``path``; :class:`FolderMissing` if there is none."""
        key = "/".join(_split(path)).casefold()
        bound = self._bound.get(key)
        if bound is not None and bound in self.folders:
            return bound
        if not self.folders:
            await self.refresh()
        fid = self._lookup(path)
        if fid is None or (bound is not None and bound not in self.folders):
            await self.refresh()  # renamed, made or removed since the last look
            # read again: another task may have bound the path meanwhile (adopt, from a token)
            bound = self._bound.get(key, bound)
            if bound is not None and bound in self.folders:
                return bound
            fid = self._lookup(path)
        if fid is None:
            gone = self._bound.pop(key, None)
            self._spelling.pop(gone or "", None)
            raise FolderMissing(f"no folder {path!r} in the mailbox", folder=path)
        if bound is not None and bound != fid:
            log.info("graph: the folder %r is a new folder now (the one tracked before is gone)", path)
        self._bound[key] = fid
        # the first path bound to a folder names it in listings (a tracked folder's, which the
        # worker resolves first; a second name for it, met later, must not take over)
        spelled = self._spelling.get(fid)
        if spelled is None or self._bound.get(spelled.casefold()) != fid:
            self._spelling[fid] = "/".join(_split(path))
        return fid

    async def adopt(self, path: str, fid: str) -> bool:
        """Bind ``path`` to the folder ``fid`` (from a cursor token) when that folder still
        exists and the path is not bound already; True when the path reads that folder now."""
        key = "/".join(_split(path)).casefold()
        if self._bound.get(key) == fid:
            return True
        if key in self._bound and self._bound[key] in self.folders:
            return False
        if fid not in self.folders:
            await self.refresh()
        if fid not in self.folders and fid != self.inbox_id:
            return False
        now = self.path_of(fid)
        if now is not None and now.casefold() != key:
            log.info("graph: the tracked folder %r is called %r in the mailbox now; still tracked by its id", path, now)
        self._bound[key] = fid
        self._spelling[fid] = "/".join(_split(path))
        return True

    def forget(self, path: str) -> None:
        """The folder behind ``path`` answered 404: look it up again next time."""
        fid = self._bound.pop("/".join(_split(path)).casefold(), None)
        if fid is not None:
            self.folders.pop(fid, None)
            self._spelling.pop(fid, None)

    async def exists(self, path: str) -> bool:
        try:
            await self.resolve(path)
        except FolderMissing:
            return False
        return True

    async def create(self, path: str) -> str:
        """Make ``path`` and its missing parents; an existing folder is not an error."""
        parts = _split(path)
        if not parts:
            raise FolderMissing("an empty folder name", folder=path)
        await self.refresh()
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            if self._lookup(sub) is not None:
                continue
            parent = self._lookup("/".join(parts[: depth - 1])) if depth > 1 else self.root_id
            url = (
                f"/mailFolders/{quote(str(parent), safe='')}/childFolders" if parent != self.root_id else "/mailFolders"
            )
            try:
                made, _ = await self.client.request("POST", url, json={"displayName": parts[depth - 1]})
                self.folders[str(made["id"])] = (str(made["displayName"]), str(parent))
            except GraphError as exc:
                if exc.code != "ErrorFolderExists":
                    raise
                await self.refresh()
        return await self.resolve(path)
