"""Tags on IMAP: keywords (Thunderbird's tags, ``$label1``..., or a named
keyword such as ``CRM``), for track by tag (issue 20;
:meth:`mailfiler.sources.base.Source.tag_changes`).

* **With CONDSTORE** (RFC 7162) a pass is one ``LIST "" "*" RETURN (STATUS
  (UIDVALIDITY HIGHESTMODSEQ))`` (RFC 5819; a STATUS per folder without
  LIST-STATUS) and, only in a folder whose HIGHESTMODSEQ moved past its tag
  cursor, an EXAMINE and one ``UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE
  cursor)``: the messages whose flags changed since, with their MODSEQ.  An
  idle pass costs that command (and an EXAMINE of the folder the connection
  has selected) whatever the mailbox holds.  Every flag change
  moves HIGHESTMODSEQ (\\Seen, mailfiler's own ``$Tracked`` marks), so the
  changes are filtered by the query; mailfiler's mark keywords never match.
* **Each change's cursor** is just below the next change's MODSEQ (the last
  gets the folder's HIGHESTMODSEQ as the EXAMINE saw it), so a cursor
  committed with a change covers it and those before it, never one after.
* **Without a cursor** (a folder looked at for the first time, a new
  UIDVALIDITY) and **without CONDSTORE**: ``UID SEARCH`` for the keywords
  (the prefix form's keywords are those the folder's ``FLAGS`` response
  lists), then ``UID FETCH (UID FLAGS)`` of the hits only; in the untrack
  folder ``UID SEARCH ALL``.  Without CONDSTORE there is no cursor to keep:
  this is done in every folder at every pass, and a message is handed out
  again only when its tags changed since the last pass of this process.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from mailfiler.errors import FolderMissing, MailboxUnavailable, SourceError
from mailfiler.sources import imapproto as proto
from mailfiler.sources.base import TagChange, TagDelta, TagQuery
from mailfiler.sources.imapconn import ImapConnection
from mailfiler.sources.imapsettings import ImapSettings

log = logging.getLogger("mailfiler.sources.imap")

#: what a pass remembers of a folder without CONDSTORE: (UIDVALIDITY, uid -> keywords)
Seen = tuple[int, dict[int, frozenset[str]]]


class ImapSource(Protocol):
    """What a tag pass uses of :class:`mailfiler.sources.imap.ImapSource` (a
    protocol: that module imports this one)."""

    @property
    def settings(self) -> ImapSettings: ...

    @property
    def tag_seen(self) -> dict[str, Seen]: ...

    def session(self) -> contextlib.AbstractAsyncContextManager[ImapConnection]: ...

    async def list_folders_on(self, conn: ImapConnection) -> list[str]: ...


@dataclass(frozen=True)
class TagCursor:
    """A folder's tag cursor: its UIDVALIDITY and the HIGHESTMODSEQ whose flag
    changes are handled (None without CONDSTORE)."""

    uidvalidity: int
    modseq: int | None

    def encode(self) -> str:
        return json.dumps({"uidvalidity": self.uidvalidity, "modseq": self.modseq}, separators=(",", ":"))

    @classmethod
    def decode(cls, token: str | None) -> TagCursor | None:
        try:
            data = json.loads(token or "")
            modseq = data.get("modseq")
            return cls(int(data["uidvalidity"]), None if modseq is None else int(modseq))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


async def tag_changes(
    source: ImapSource, cursors: Mapping[str, str | None], query: TagQuery
) -> AsyncIterator[TagDelta]:
    condstore = source.settings.tag_condstore
    async with source.session() as conn:
        condstore = condstore and ("CONDSTORE" in conn.capabilities or "QRESYNC" in conn.capabilities)
        statuses = await _statuses(source, conn, condstore)
    for folder in sorted(statuses):
        status = statuses[folder]
        cursor = TagCursor.decode(cursors.get(folder))
        uv, top = status.get("UIDVALIDITY", 0), status.get("HIGHESTMODSEQ")
        if condstore and cursor is not None and cursor.uidvalidity == uv and cursor.modseq == top and top is not None:
            continue  # nothing changed: the listing was all this folder cost
        seen: Seen | None = None
        delta: TagDelta | None
        try:
            async with source.session() as conn:
                if condstore and cursor is not None and cursor.uidvalidity == uv and cursor.modseq is not None:
                    delta = await _changed_since(source, conn, folder, cursor, query)
                else:
                    delta, seen = await _search(source, conn, folder, query, condstore)
        except FolderMissing:
            continue  # deleted since the listing
        except MailboxUnavailable:
            raise
        except SourceError as exc:  # one folder the server will not show (rights, a broken index)
            log.warning(
                "tag pass: skipping %s: %s", folder, exc, extra={"event": "tag-folder-failed", "folder": folder}
            )
            continue
        if delta is not None:
            yield delta
        if seen is not None:
            # reached only once the consumer applied the delta (a failure closes the generator first)
            source.tag_seen[folder] = seen


async def _statuses(source: ImapSource, conn: ImapConnection, condstore: bool) -> dict[str, dict[str, int]]:
    """Every selectable folder's UIDVALIDITY (and HIGHESTMODSEQ with CONDSTORE)."""
    items = "(UIDVALIDITY HIGHESTMODSEQ)" if condstore else "(UIDVALIDITY)"
    if "LIST-STATUS" in conn.capabilities:
        response = await conn.simple("LIST", '""', '"*"', "RETURN", f"(STATUS {items})", untagged="STATUS")
        if response.result == "OK":
            out: dict[str, dict[str, int]] = {}
            for line in proto.join_literals(response.lines[:-1]):
                try:
                    name, values = proto.parse_status(line)
                except proto.ParseError:
                    continue
                out[proto.folder_from_wire(name, conn.separator)] = values
            # the selected folder's STATUS answers from the session's view: look afresh
            if conn.selected is not None and conn.selected in out:
                fresh = await conn.status(conn.selected, items)
                if fresh is not None:
                    out[conn.selected] = fresh
            return out
    folders = await source.list_folders_on(conn)
    found: dict[str, dict[str, int]] = {}
    for folder in folders:
        one = await conn.status(folder, items)
        if one is not None:
            found[folder] = one
    return found


def _keywords(data: dict[str, proto.Token]) -> frozenset[str]:
    flags = data.get("FLAGS")
    if not isinstance(flags, list):
        return frozenset()
    return frozenset(proto.as_str(f) for f in flags if isinstance(f, bytes) and not f.startswith(b"\\"))


def _modseq(data: dict[str, proto.Token]) -> int:
    value = data.get("MODSEQ")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return int(value[0])
    return 0


def _wanted(source: ImapSource, query: TagQuery, keywords: frozenset[str]) -> frozenset[str]:
    """The keywords the query matches, never mailfiler's own marks."""
    own = {k.lower() for k in source.settings.keywords or ()}
    return frozenset(k for k in query.matching(keywords) if k.lower() not in own)


async def _changed_since(
    source: ImapSource, conn: ImapConnection, folder: str, cursor: TagCursor, query: TagQuery
) -> TagDelta:
    info = await conn.examine(folder)
    uv, top = info.get("UIDVALIDITY", 0), info.get("HIGHESTMODSEQ")
    token = TagCursor(uv, top).encode()
    if not info["EXISTS"]:
        return TagDelta(folder, [], token)
    assert cursor.modseq is not None
    every = folder in query.every_message_in
    got = await conn.uid_fetch("1:*", f"(UID FLAGS) (CHANGEDSINCE {cursor.modseq})")
    hits = []
    for data in got:
        uid = proto.fetch_uid(data)
        tags = _wanted(source, query, _keywords(data))
        if uid is not None and (tags or every):
            hits.append((_modseq(data), uid, tags))
    hits.sort()
    changes = []
    for i, (_, uid, tags) in enumerate(hits):
        if i + 1 < len(hits):
            after = hits[i + 1][0] - 1
            mine = TagCursor(uv, min(after, top) if top is not None else after).encode() if after > 0 else None
        else:
            mine = token
        changes.append(TagChange(proto.make_source_id(uv, uid), tags, mine))
    return TagDelta(folder, changes, token)


async def _search(
    source: ImapSource, conn: ImapConnection, folder: str, query: TagQuery, condstore: bool
) -> tuple[TagDelta | None, Seen | None]:
    """Every message carrying a wanted keyword now (every message in the untrack
    folder); without CONDSTORE only those whose keywords changed since this
    process last looked."""
    info = await conn.examine(folder)
    uv, top = info.get("UIDVALIDITY", 0), info.get("HIGHESTMODSEQ") if condstore else None
    token = TagCursor(uv, top).encode()
    every = folder in query.every_message_in
    uids: set[int] = set()
    if info["EXISTS"]:
        if every:
            uids = await conn.uid_search("ALL")
        else:
            defined = _wanted(source, query, conn.mailbox_flags or frozenset())
            names = sorted({*query.names, *defined})
            names = [n for n in names if proto.is_keyword(n) and n.lower() not in _own(source)]
            if names:
                criteria = "OR " * (len(names) - 1) + " ".join(f"KEYWORD {n}" for n in names)
                uids = await conn.uid_search(criteria)
    found: dict[int, frozenset[str]] = {}
    for batch in proto.batches(sorted(uids)):
        for data in await conn.uid_fetch(proto.uid_set(batch), "(UID FLAGS)"):
            uid = proto.fetch_uid(data)
            if uid is not None:
                found[uid] = _wanted(source, query, _keywords(data))
    looked: Seen | None = None
    if not condstore:
        # no cursor to keep: hand out only what changed since this process last looked
        seen = source.tag_seen.get(folder)
        if seen is not None and seen[0] == uv:
            before = seen[1]
            report = {u: t for u, t in found.items() if before.get(u) != t}
        else:
            report = found
        looked = (uv, found)
        if not report:
            return None, looked
        found = report
    changes = [
        TagChange(proto.make_source_id(uv, uid), tags, token if i + 1 == len(found) else None)
        for i, (uid, tags) in enumerate(sorted(found.items()))
        if tags or every
    ]
    if changes and changes[-1].token is None:
        changes[-1] = TagChange(changes[-1].source_id, changes[-1].tags, token)
    return TagDelta(folder, changes, token), looked


def _own(source: ImapSource) -> set[str]:
    return {k.lower() for k in source.settings.keywords or ()}
