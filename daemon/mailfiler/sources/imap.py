"""IMAP backend (aioimaplib): read-only, like every mailfiler source, unless keywords are on.

* **Folders** are "/"-separated in mailfiler; on the wire they use the
  server's hierarchy separator (from ``LIST "" ""``), modified UTF-7 and
  quoting (:mod:`~mailfiler.sources.imapproto`).  ``\\Noselect`` and
  ``\\NonExistent`` names (a parent that only holds children) are not folders.
* **Source ids** are ``"{UIDVALIDITY}:{UID}"``: (mailbox, UIDVALIDITY, UID)
  names one immutable message (RFC 3501 2.3.1.1), and a new UIDVALIDITY makes
  every id new, so the tracker re-identifies the messages by Message-ID
  instead of trusting stale UIDs.  Hints are not used (None).
* **Reading never alters a message:** folders are opened with EXAMINE
  (read-only, keeps ``\\Recent``), bodies are fetched with ``BODY.PEEK[]``
  (never ``\\Seen``), and nothing is ever copied, moved or expunged.  The one
  write, off unless the config asks for it (``imap: {keywords: true}``), is a
  keyword on messages already committed: ``UID STORE +FLAGS.SILENT
  ($Tracked)``, or ``$TrackFailed`` for shunted ones, on the command
  connection, after a SELECT (read-write) of the folder and only where its
  PERMANENTFLAGS allow keywords (:meth:`ImapSource.mark`).  A failure to store
  one is logged and never blocks tracking.  A crash between a commit and its
  STORE leaves a message unmarked: once per folder and start the worker asks
  ``UID SEARCH UNKEYWORD $Tracked`` (:meth:`ImapSource.unmarked`) and marks
  what it holds again.
* **Cursor tokens** (:class:`Cursor`, JSON in ``FolderCursor.token``):
  UIDVALIDITY, the highest UID handled, the HIGHESTMODSEQ the expunges are
  applied up to, and the message count.  A listing hands out messages in UID
  order and each message commits "everything up to my UID", so a crash leaves
  the token at the last committed message (mbsync's rule).  A catch-up from a
  token (:meth:`ImapSource.list_changes`) is one EXAMINE when nothing changed;
  with QRESYNC (ENABLEd on the command connection) the EXAMINE also brings
  ``VANISHED (EARLIER)``, and ``UID SEARCH UID last+1:*`` the new mail; without
  it, an unchanged UIDNEXT and message count mean nothing happened, and
  otherwise one ``UID SEARCH ALL`` says what came and (by counting) whether
  anything went.  A new UIDVALIDITY makes the token useless: the folder is
  listed in full and its messages re-identified by Message-ID, from their
  header sections only (:meth:`ImapSource.fetch_headers`,
  ``BODY.PEEK[HEADER]``): a message the store knows gets its new location,
  and only mail the store does not know is read whole.
* **Connections:** one command connection (list, fetch, and the watcher's
  diffs), opened by :meth:`ImapSource.open` and re-made after a failure;
  ``watch()`` adds its listeners (:mod:`~mailfiler.sources.imapwatch`).
  A call made without :meth:`open` (``mailfiler shunt retry``) uses a
  connection of its own for just that call.
* **Failures:** every command is bounded by a timeout and by connection loss
  (:mod:`~mailfiler.sources.imaplink`); either raises
  :class:`~mailfiler.errors.MailboxUnavailable`.  Its subclasses tell the
  causes apart, each with its own hint: ``LoginRefused``,
  ``TlsCertificateRefused``, ``ServerBusy`` (``[LIMIT]``, ``[UNAVAILABLE]``,
  throttling) and ``ServerUnreachable`` (refused, DNS, no answer); the
  message names the user and server, never the password.  The daemon's supervisor then retries with
  backoff.  A folder that does not exist raises
  :class:`~mailfiler.errors.FolderMissing`; a message that is gone (or whose
  UIDVALIDITY is stale) raises :class:`~mailfiler.errors.MessageVanished`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from mailfiler.errors import FolderMissing, SourceError
from mailfiler.sources import imapproto as proto
from mailfiler.sources import imaptags, imapwatch
from mailfiler.sources.base import Change, Delta, Listing, MarkState, Source, TagDelta, TagQuery
from mailfiler.sources.imapconn import ImapConnection
from mailfiler.sources.imapfetch import ImapFetch, uids_of
from mailfiler.sources.imapsettings import ImapSettings, TlsMode

__all__ = ["Cursor", "ImapSettings", "ImapSource", "TlsMode"]

log = logging.getLogger("mailfiler.sources.imap")

#: a VANISHED (EARLIER) naming more UIDs than this is answered with a UID list instead
MAX_VANISHED = 50_000


@dataclass(frozen=True)
class Cursor:
    """An IMAP folder's cursor token (JSON in ``FolderCursor.token``).

    ``uid``: every message with a UID up to this one is handled (tracked,
    judged, shunted, or gone).  ``modseq``: the folder's HIGHESTMODSEQ that the
    expunges are applied up to (QRESYNC asks for VANISHED since it).
    ``exists``: how many messages the folder held, all of them with UIDs up to
    ``uid``, when the cursor was taken: without QRESYNC an unchanged UIDNEXT
    and message count mean nothing came or went.  None inside a listing (a
    message's own cursor), where the count is not known."""

    uidvalidity: int
    uid: int
    modseq: int | None = None
    exists: int | None = None

    def encode(self) -> str:
        return json.dumps(
            {"uidvalidity": self.uidvalidity, "uid": self.uid, "modseq": self.modseq, "exists": self.exists},
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, token: str | None) -> Cursor | None:
        """The cursor, or None for a token that is not one (another backend's, damaged)."""
        try:
            data = json.loads(token or "")
            cursor = cls(
                int(data["uidvalidity"]),
                int(data["uid"]),
                None if data.get("modseq") is None else int(data["modseq"]),
                None if data.get("exists") is None else int(data["exists"]),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        return cursor if cursor.uidvalidity > 0 and cursor.uid >= 0 else None


@functools.lru_cache(maxsize=16)
def _decoded_cursor(token: str) -> Cursor | None:
    return Cursor.decode(token)  # a Cursor is frozen: one instance may serve every caller


class ImapSource(ImapFetch, Source):
    backend = "imap"

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        #: the server's capabilities after login (CONDSTORE, QRESYNC, MOVE, NOTIFY...)
        self.capabilities: frozenset[str] = frozenset()
        self.separator: str | None = None
        self._conn: ImapConnection | None = None
        self._opened = False
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        #: folders whose keyword refusal was logged already
        self._mark_warned: set[str] = set()
        #: without CONDSTORE: folder -> (UIDVALIDITY, uid -> keywords) as the last tag pass saw them
        self.tag_seen: dict[str, tuple[int, dict[int, frozenset[str]]]] = {}

    def __repr__(self) -> str:
        return f"ImapSource({self.settings.where()}, tls={self.settings.tls})"

    # -- capabilities for the sync engine ------------------------------------------------

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    @property
    def condstore(self) -> bool:
        return self.has("CONDSTORE") or self.has("QRESYNC")

    @property
    def qresync(self) -> bool:
        return self.has("QRESYNC")

    @property
    def move(self) -> bool:
        return self.has("MOVE")

    @property
    def notify(self) -> bool:
        return self.has("NOTIFY")

    # -- connection --------------------------------------------------------------------

    def _loop_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _connect(self, purpose: str = "commands") -> ImapConnection:
        conn = await ImapConnection.connect(self.settings, purpose=purpose)
        try:
            await conn.enable_qresync()
        except BaseException:
            conn.abort()
            raise
        self.capabilities, self.separator = conn.capabilities, conn.separator
        return conn

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[ImapConnection]:
        """The command connection, for one caller at a time."""
        async with self._loop_lock():
            if not self._opened:
                conn = await self._connect("one-off")
                try:
                    yield conn
                finally:
                    await conn.logout()
                return
            if self._conn is None or not self._conn.usable:
                if self._conn is not None:
                    self._conn.abort()
                self._conn = None
                self._conn = await self._connect()
            yield self._conn

    async def open(self, *, create: bool = False) -> None:
        # ``create`` cannot apply: an IMAP account is made by its server
        await self.close()
        self._opened = True
        try:
            async with self.session():
                pass
        except BaseException:
            self._opened = False
            raise

    async def close(self) -> None:
        self._opened = False
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.logout()

    # -- folders ---------------------------------------------------------------------

    async def _list(self, conn: ImapConnection, pattern: str) -> list[proto.ListEntry]:
        response = await conn.simple("LIST", '""', pattern)
        if response.result != "OK":
            raise SourceError(f"LIST on {self.settings.where()} failed: {response.lines[-1]!r}")
        entries = []
        for line in proto.join_literals(response.lines[:-1]):
            try:
                entries.append(proto.parse_list(line))
            except proto.ParseError:
                continue
        return entries

    async def list_folders(self) -> list[str]:
        async with self.session() as conn:
            return await self.list_folders_on(conn)

    async def list_folders_on(self, conn: ImapConnection) -> list[str]:
        """:meth:`list_folders` on a connection the caller holds."""
        entries = await self._list(conn, '"*"')
        names = {proto.folder_from_wire(e.name, e.separator or conn.separator) for e in entries if e.selectable}
        return sorted(names)

    async def folder_exists(self, folder: str) -> bool:
        async with self.session() as conn:
            return await self._exists(conn, folder)

    async def _exists(self, conn: ImapConnection, folder: str) -> bool:
        try:
            wire = conn.wire(folder)
        except FolderMissing:
            return False
        # "*" and "%" in a name are LIST wildcards: compare what comes back
        for entry in await self._list(conn, wire):
            name = proto.folder_from_wire(entry.name, entry.separator or conn.separator)
            if entry.selectable and (name == folder or (proto.is_inbox(folder) and proto.is_inbox(name))):
                return True
        return False

    async def create_folder(self, folder: str) -> None:
        async with self.session() as conn:
            wire = conn.wire(folder)
            response = await conn.simple("CREATE", wire)
            text = bytes(response.lines[-1]).decode("utf-8", "replace")
            already = "ALREADYEXISTS" in text.upper()
            if response.result != "OK" and not already and not await self._exists(conn, folder):
                raise SourceError(f"cannot create folder {folder!r} on {self.settings.where()}: {text}", folder=folder)
            # clients often show only subscribed folders; a failure here is harmless
            await conn.simple("SUBSCRIBE", wire)

    # -- messages ---------------------------------------------------------------------

    async def list_messages(self, folder: str) -> Listing:
        async with self.session() as conn:
            info = await conn.examine(folder)  # always afresh: a current view and UIDVALIDITY
            uv, uidnext = info.get("UIDVALIDITY", 0), info.get("UIDNEXT", 0)
            uids = await conn.uid_search("ALL") if info["EXISTS"] else set()
        # later arrivals than the EXAMINE saw belong to the next listing
        listed = sorted(u for u in uids if not uidnext or u < uidnext)
        token = None
        if uv:
            top = uidnext - 1 if uidnext else max(listed, default=0)
            token = Cursor(uv, top, info.get("HIGHESTMODSEQ"), info["EXISTS"] if uidnext else None).encode()
        # in UID order: each message's cursor covers the ones before it
        return Listing(folder, {proto.make_source_id(uv, u): None for u in listed}, token)

    def id_generation(self, source_id: str) -> str | None:
        parsed = proto.split_source_id(source_id)
        return str(parsed[0]) if parsed is not None else None

    def message_token(self, token: str, source_id: str) -> str | None:
        # asked once per message of a backfill, always with the listing's token:
        # decoding it once per listing, not per message, is a tenth of the loop's time
        cursor, parsed = _decoded_cursor(token), proto.split_source_id(source_id)
        if cursor is None or parsed is None or parsed[0] != cursor.uidvalidity:
            return None
        return Cursor(cursor.uidvalidity, min(parsed[1], cursor.uid), cursor.modseq, None).encode()

    async def list_changes(self, folder: str, token: str) -> Delta | None:
        """What changed since ``token``, at the cost of one EXAMINE when nothing did:

        * **QRESYNC**: ``EXAMINE folder (QRESYNC (uidvalidity modseq))`` returns
          the UIDs expunged since (``VANISHED (EARLIER)``) in the same answer,
          and ``UID SEARCH UID last+1:*`` the new ones (only when UIDNEXT moved);
        * **without** (CONDSTORE alone reports no expunges): an unchanged UIDNEXT
          and message count mean nothing came or went; otherwise one ``UID SEARCH
          ALL`` gives the new UIDs, and counting the old ones tells whether any
          went; only then is the whole UID list handed back (``present``) for
          the caller to diff against the store.

        None when the token is no use: another UIDVALIDITY (every UID is void;
        the messages are re-identified by Message-ID) or not an IMAP cursor."""
        cursor = Cursor.decode(token)
        if cursor is None:
            return None
        async with self.session() as conn:
            vanished: list[range] | None = None
            if cursor.modseq is not None and conn.qresync:
                info, vanished = await conn.examine_since(folder, cursor.uidvalidity, cursor.modseq)
            else:
                info = await conn.examine(folder)
            uv = info.get("UIDVALIDITY", 0)
            if not uv or uv != cursor.uidvalidity:
                return None
            uidnext, exists, modseq = info.get("UIDNEXT", 0), info["EXISTS"], info.get("HIGHESTMODSEQ")
            if modseq is None:
                vanished = None  # NOMODSEQ: no VANISHED either, whatever was asked
            last = cursor.uid
            arrived = not uidnext or uidnext > last + 1
            everything: set[int] | None = None
            new: list[int] = []
            if vanished is not None:
                if sum(len(_clip(r, last)) for r in vanished) > MAX_VANISHED:
                    everything = await _all_before(conn, uidnext)
                if arrived:
                    found = everything if everything is not None else await conn.uid_search(f"UID {last + 1}:*")
                    new = sorted(u for u in found if u > last and (not uidnext or u < uidnext))
            elif arrived or cursor.exists is None or exists != cursor.exists:
                # one UID SEARCH ALL (ranges with ESEARCH) says what came and whether anything went
                everything = await _all_before(conn, uidnext)
                new = sorted(u for u in everything if u > last)
        gone: set[int] = set()
        present: set[int] | None = None
        if everything is not None and (
            vanished is not None or cursor.exists is None or sum(1 for u in everything if u <= last) != cursor.exists
        ):
            present = everything
        elif vanished is not None:
            gone = {u for r in vanished for u in _clip(r, last)}
        top = max(last, uidnext - 1 if uidnext else max(new, default=last))
        after = Cursor(uv, top, modseq, exists if uidnext else None)

        def sid(uid: int) -> str:
            return proto.make_source_id(uv, uid)

        return Delta(
            folder,
            {sid(u): None for u in new},
            frozenset(sid(u) for u in gone),
            None if present is None else frozenset(sid(u) for u in present),
            after.encode(),
        )

    # -- keywords (opt-in: the one write to the mailbox) ----------------------------------

    @property
    def marks(self) -> bool:
        return self.settings.keywords is not None

    async def mark(self, folder: str, source_ids: Sequence[str], state: MarkState) -> int:
        """``UID STORE +FLAGS.SILENT ($Tracked)`` (or ``$TrackFailed``) on the
        command connection, in batches, when the folder's PERMANENTFLAGS allow
        keywords; marking as tracked also removes the failed keyword (a shunted
        message retried).  Needs the folder selected read-write (SELECT).  Never
        touches ``\\Seen`` or any system flag; a failure is logged, not raised."""
        keywords = self.settings.keywords
        if keywords is None or not source_ids:
            return 0
        tracked, failed = keywords
        keyword = tracked if state == "tracked" else failed
        done = 0
        try:
            async with self.session() as conn:
                if conn.selected != folder or not conn.read_write:
                    await conn.select(folder)
                if not conn.read_write or not proto.keyword_allowed(conn.permanent_flags, keyword):
                    self._warn_once(
                        folder,
                        f"{folder!r} on {self.settings.where()} does not accept the keyword {keyword} "
                        f"(PERMANENTFLAGS {' '.join(sorted(conn.permanent_flags or ())) or 'none'}); not marking it",
                    )
                    return 0
                assert conn.uidvalidity is not None
                for batch in proto.batches(sorted(uids_of(source_ids, conn.uidvalidity))):
                    uids = proto.uid_set(batch)
                    if not await conn.uid_store(uids, "+FLAGS.SILENT", f"({keyword})"):
                        self._warn_once(folder, f"{self.settings.where()} refused to store {keyword} in {folder!r}")
                        return done
                    if state == "tracked":
                        await conn.uid_store(uids, "-FLAGS.SILENT", f"({failed})")
                    done += len(batch)
        except SourceError as exc:  # a lost connection included: the next command reconnects
            log.warning(
                "could not mark %d message(s) in %s as %s: %s",
                len(source_ids),
                folder,
                keyword,
                exc,
                extra={"event": "mark-failed", "folder": folder},
            )
        return done

    async def unmarked(self, folder: str, state: MarkState) -> set[str] | None:
        """``UID SEARCH UNKEYWORD $Tracked`` (or ``$TrackFailed``): one command."""
        keywords = self.settings.keywords
        if keywords is None:
            return None
        keyword = keywords[0] if state == "tracked" else keywords[1]
        async with self.session() as conn:
            uv = await self._uidvalidity(conn, folder)
            uids = await conn.uid_search(f"UNKEYWORD {keyword}")
        return {proto.make_source_id(uv, u) for u in uids}

    def _warn_once(self, folder: str, text: str) -> None:
        if folder in self._mark_warned:
            return
        self._mark_warned.add(folder)
        log.warning(text, extra={"event": "mark-refused", "folder": folder})

    # -- tags (track by tag: sources/imaptags.py) ------------------------------------------

    @property
    def tags(self) -> bool:
        return True

    async def tag_changes(self, cursors: Mapping[str, str | None], query: TagQuery) -> AsyncIterator[TagDelta]:
        """Keywords changed since each folder's tag cursor: CONDSTORE's ``CHANGEDSINCE``
        where offered, a keyword search otherwise (:mod:`~mailfiler.sources.imaptags`)."""
        async for delta in imaptags.tag_changes(self, cursors, query):
            yield delta

    # -- push --------------------------------------------------------------------------

    async def watch(self, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
        async for batch in imapwatch.watch(self, folders, stop):
            yield batch


def _clip(uids: range, last: int) -> range:
    """The part of ``uids`` up to ``last`` (VANISHED may name UIDs never given out)."""
    return range(max(uids.start, 1), min(uids.stop, last + 1))


async def _all_before(conn: ImapConnection, uidnext: int) -> set[int]:
    """Every UID in the examined folder that the EXAMINE saw (below UIDNEXT)."""
    return {u for u in await conn.uid_search("ALL") if not uidnext or u < uidnext}
