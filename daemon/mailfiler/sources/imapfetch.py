"""Reading messages from IMAP folders, as a mixin of
:class:`~mailfiler.sources.imap.ImapSource`: one message's size or body (whole,
or streamed to a file in pieces), and many at once in ``UID FETCH`` batches of
at most :data:`~mailfiler.sources.imapproto.FETCH_BATCH` UIDs and about
:data:`BATCH_BYTES` (backfills, reading ahead, header sections to re-identify
mail).  Bodies are fetched with ``BODY.PEEK[]`` (never ``\\Seen``).  A source id
whose UIDVALIDITY is no longer the folder's is void: it raises
:class:`~mailfiler.errors.MessageVanished` or is left out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from mailfiler.errors import FolderMissing, MessageVanished
from mailfiler.sources import imapproto as proto
from mailfiler.sources.base import Listing
from mailfiler.sources.imapconn import ImapConnection
from mailfiler.sources.imapsettings import ImapSettings

#: copy_raw streams a message in pieces of this size
COPY_CHUNK = 4 * 1024 * 1024
#: fetch_many sends a new UID FETCH once the batch holds this many bytes
BATCH_BYTES = 16 * 1024 * 1024
#: a body fetch may take this many times the per-command timeout in all
#: (aioimaplib's own timer restarts while data flows; this caps a stall)
BODY_TIMEOUT_FACTOR = 10


class ImapFetch:
    """Message reading for :class:`~mailfiler.sources.imap.ImapSource` (which
    holds the settings and the command connection)."""

    if TYPE_CHECKING:
        settings: ImapSettings
        session: Callable[[], contextlib.AbstractAsyncContextManager[ImapConnection]]
        list_messages: Callable[[str], Awaitable[Listing]]

    def _uid(self, folder: str, source_id: str) -> tuple[int, int]:
        parsed = proto.split_source_id(source_id)
        if parsed is None:
            raise MessageVanished(f"{source_id!r} is not an IMAP source id", folder=folder, source_id=source_id)
        return parsed

    async def _select(self, conn: ImapConnection, folder: str, source_id: str) -> int:
        uv, uid = self._uid(folder, source_id)
        if conn.selected != folder or conn.uidvalidity != uv:
            try:
                await conn.examine(folder)
            except FolderMissing as exc:
                raise MessageVanished(
                    f"{folder}/{source_id} is gone with its folder", folder=folder, source_id=source_id
                ) from exc
        if conn.uidvalidity != uv:
            raise MessageVanished(
                f"{folder}/{source_id} is void: the folder's UIDVALIDITY is now {conn.uidvalidity}",
                folder=folder,
                source_id=source_id,
            )
        return uid

    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        async with self.session() as conn:
            uid = await self._select(conn, folder, source_id)
            for data in await conn.uid_fetch(str(uid), "(UID RFC822.SIZE)"):
                size = data.get("RFC822.SIZE")
                if proto.fetch_uid(data) == uid and isinstance(size, bytes):
                    return int(size)
        raise MessageVanished(f"{folder}/{source_id} is gone", folder=folder, source_id=source_id)

    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        async with self.session() as conn:
            uid = await self._select(conn, folder, source_id)
            timeout = self.settings.timeout * BODY_TIMEOUT_FACTOR
            for data in await conn.uid_fetch(str(uid), "(UID BODY.PEEK[])", timeout=timeout):
                body = proto.body_of(data)
                if proto.fetch_uid(data) == uid and body is not None:
                    return body
        raise MessageVanished(f"{folder}/{source_id} is gone", folder=folder, source_id=source_id)

    async def copy_raw(self, folder: str, source_id: str, hint: str | None, dest: str) -> bool:
        """Stream the message to ``dest`` in pieces (``BODY.PEEK[]<offset.length>``)."""
        total = await self.size(folder, source_id, hint)
        with open(dest, "wb") as out:
            offset = 0
            while offset < total:
                async with self.session() as conn:
                    uid = await self._select(conn, folder, source_id)
                    items = f"(UID BODY.PEEK[]<{offset}.{COPY_CHUNK}>)"
                    piece = None
                    for data in await conn.uid_fetch(str(uid), items, timeout=self.settings.timeout * 2):
                        if proto.fetch_uid(data) == uid:
                            piece = proto.body_of(data)
                if not piece:
                    if piece is None:
                        raise MessageVanished(f"{folder}/{source_id} is gone", folder=folder, source_id=source_id)
                    break
                out.write(piece)
                offset += len(piece)
            out.flush()
            os.fsync(out.fileno())
        return True

    async def sizes(self, folder: str, source_ids: Sequence[str] | None = None) -> dict[str, int]:
        """Sizes of many messages (all in the folder by default), in batches of
        at most :data:`~mailfiler.sources.imapproto.FETCH_BATCH` UIDs."""
        if source_ids is None:
            source_ids = list((await self.list_messages(folder)).messages)
        out: dict[str, int] = {}
        async with self.session() as conn:
            uv = await self._uidvalidity(conn, folder)
            wanted = uids_of(source_ids, uv)
            for batch in proto.batches(sorted(wanted)):
                for data in await conn.uid_fetch(proto.uid_set(batch), "(UID RFC822.SIZE)"):
                    uid, size = proto.fetch_uid(data), data.get("RFC822.SIZE")
                    if uid in wanted and isinstance(size, bytes):
                        out[proto.make_source_id(uv, uid)] = int(size)
        return out

    async def fetch_many(
        self,
        folder: str,
        source_ids: Sequence[str],
        *,
        sizes: dict[str, int] | None = None,
        max_batch_bytes: int = BATCH_BYTES,
    ) -> AsyncIterator[tuple[str, bytes]]:
        """(source_id, raw) for each message that still exists, fetched in batches
        of at most 400 UIDs and about ``max_batch_bytes`` (for backfills).
        ``sizes`` (from :meth:`sizes`) saves asking for them again."""
        if sizes is None:
            sizes = await self.sizes(folder, source_ids)
        batch: list[str] = []
        batch_bytes = 0
        pending: list[list[str]] = []
        for sid in source_ids:
            if sid not in sizes:
                continue  # gone already
            if batch and (len(batch) >= proto.FETCH_BATCH or batch_bytes + sizes[sid] > max_batch_bytes):
                pending.append(batch)
                batch, batch_bytes = [], 0
            batch.append(sid)
            batch_bytes += sizes[sid]
        if batch:
            pending.append(batch)
        for sids in pending:
            for sid, body in (await self._bodies(folder, sids)).items():
                yield sid, body

    async def _bodies(self, folder: str, source_ids: Sequence[str], section: str = "") -> dict[str, bytes]:
        """One ``UID FETCH (BODY.PEEK[section])`` of at most 400 messages: those still there."""
        async with self.session() as conn:
            try:
                uids = {await self._select(conn, folder, sid): sid for sid in source_ids}
            except MessageVanished:
                return {}  # the folder or its UIDVALIDITY changed: these ids are void
            if not uids:
                return {}
            timeout = self.settings.timeout * BODY_TIMEOUT_FACTOR
            got = await conn.uid_fetch(proto.uid_set(uids), f"(UID BODY.PEEK[{section}])", timeout=timeout)
        bodies = {proto.fetch_uid(d): proto.body_of(d, section) for d in got}
        return {sid: body for uid, sid in uids.items() if (body := bodies.get(uid)) is not None}

    # -- reading ahead (Source API): one round trip per batch instead of two per message

    async def sizes_of(self, folder: str, items: Mapping[str, str | None]) -> dict[str, int | Exception]:
        try:
            return dict(await self.sizes(folder, list(items)))
        except FolderMissing:
            return {}  # gone with its folder: every message has vanished

    async def fetch_batch(self, folder: str, items: Mapping[str, str | None]) -> dict[str, bytes | Exception]:
        out: dict[str, bytes | Exception] = {}
        sids = list(items)
        for start in range(0, len(sids), proto.FETCH_BATCH):
            out.update(await self._bodies(folder, sids[start : start + proto.FETCH_BATCH]))
        return out

    async def fetch_headers(self, folder: str, items: Mapping[str, str | None]) -> dict[str, bytes | Exception]:
        """``UID FETCH (BODY.PEEK[HEADER])`` in batches: a message's header
        section only (re-identifying mail after a new UIDVALIDITY)."""
        out: dict[str, bytes | Exception] = {}
        sids = list(items)
        for start in range(0, len(sids), proto.FETCH_BATCH):
            out.update(await self._bodies(folder, sids[start : start + proto.FETCH_BATCH], section="HEADER"))
        return out

    async def _uidvalidity(self, conn: ImapConnection, folder: str) -> int:
        if conn.selected != folder or conn.uidvalidity is None:
            await conn.examine(folder)
        assert conn.uidvalidity is not None
        return conn.uidvalidity


def uids_of(source_ids: Sequence[str], uidvalidity: int) -> set[int]:
    """The UIDs among ``source_ids`` that belong to ``uidvalidity``."""
    out = set()
    for sid in source_ids:
        parsed = proto.split_source_id(sid)
        if parsed is not None and parsed[0] == uidvalidity:
            out.add(parsed[1])
    return out
