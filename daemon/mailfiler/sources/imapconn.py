"""The IMAP commands mailfiler runs on a mailbox, over an
:class:`~mailfiler.sources.imaplink.ImapLink`: ENABLE QRESYNC, EXAMINE and
SELECT (the state aioimaplib leaves wrong: EXAMINE leaves it AUTH), UID
SEARCH, FETCH and STORE, STATUS and LIST-STATUS, with their answers parsed
(:mod:`mailfiler.sources.imapproto`) and a failure as mailfiler's error."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from aioimaplib import aioimaplib as core

from mailfiler.errors import FolderMissing, SourceError
from mailfiler.sources import imapproto as proto
from mailfiler.sources.imaplink import ImapLink, response_text
from mailfiler.sources.imapsettings import ImapSettings

log = logging.getLogger("mailfiler.sources.imap")


class ImapConnection(ImapLink):
    """A logged-in connection (:meth:`connect`) and the mailbox it has selected."""

    def __init__(self, settings: ImapSettings, *, purpose: str = "commands", keep_unsolicited: bool = False) -> None:
        super().__init__(settings, purpose=purpose, keep_unsolicited=keep_unsolicited)
        self.selected: str | None = None  # folder examined (or selected read-write) now
        self.read_write = False  # selected with SELECT (to store keywords), not EXAMINE
        self.uidvalidity: int | None = None
        #: PERMANENTFLAGS of the folder selected read-write (None: not known)
        self.permanent_flags: frozenset[str] | None = None
        #: the selected folder's FLAGS: every keyword defined in it (track by tag's prefix form)
        self.mailbox_flags: frozenset[str] | None = None
        #: ENABLE QRESYNC done: EXAMINE can ask for VANISHED (EARLIER)
        self.qresync = False

    def wire(self, folder: str) -> str:
        try:
            return proto.quoted_mailbox(folder, self.separator)
        except ValueError as exc:
            raise FolderMissing(str(exc), folder=folder) from exc

    async def enable_qresync(self) -> bool:
        """ENABLE QRESYNC (RFC 7162) where offered: EXAMINE can then report what
        was expunged since a HIGHESTMODSEQ.  The server sends VANISHED instead of
        EXPUNGE on this connection from now on."""
        if "QRESYNC" not in self.capabilities:
            return False
        response = await self.simple("ENABLE", "QRESYNC")
        self.qresync = response.result == "OK" and any(
            b"QRESYNC" in bytes(line).upper() for line in response.lines[:-1]
        )
        return self.qresync

    async def examine(self, folder: str) -> dict[str, int]:
        """EXAMINE (read-only: never clears \\Recent or sets \\Seen) -> UIDVALIDITY, UIDNEXT,
        EXISTS and HIGHESTMODSEQ (absent without CONDSTORE, or with NOMODSEQ)."""
        info, _ = await self._open_mailbox("EXAMINE", folder)
        return info

    async def examine_since(self, folder: str, uidvalidity: int, modseq: int) -> tuple[dict[str, int], list[range]]:
        """EXAMINE with QRESYNC parameters: the folder's numbers as :meth:`examine`,
        and the UIDs expunged since ``modseq`` (``VANISHED (EARLIER)``; it may name
        UIDs that never existed).  If UIDVALIDITY is no longer ``uidvalidity`` the
        server ignores the parameters: the caller must compare it."""
        if not self.qresync:
            raise SourceError("EXAMINE (QRESYNC ...) without ENABLE QRESYNC", folder=folder)
        return await self._open_mailbox("EXAMINE", folder, f"(QRESYNC ({uidvalidity} {modseq}))")

    async def select(self, folder: str) -> dict[str, int]:
        """SELECT read-write, only to store keywords: sets :attr:`permanent_flags`.
        (It claims \\Recent, which IMAP4rev2 has dropped; it never sets \\Seen.)"""
        info, _ = await self._open_mailbox("SELECT", folder)
        return info

    async def _open_mailbox(self, verb: str, folder: str, *params: str) -> tuple[dict[str, int], list[range]]:
        self.selected = None
        self.read_write = False
        self.permanent_flags = None
        response = await self.simple(verb, self.wire(folder), *params)
        assert self.client is not None
        if response.result != "OK":
            # a failed EXAMINE leaves no mailbox selected (RFC 3501 6.3.2)
            self.client.protocol.state = core.AUTH
            raise folder_error(folder, response, self.settings)
        lines = response.lines
        codes = proto.response_codes(lines)
        info = {"EXISTS": proto.untagged_number(lines, b"EXISTS") or 0}
        for key in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"):
            if codes.get(key, "").isdigit():
                info[key] = int(codes[key])
        vanished = proto.parse_vanished(lines[:-1]) if params else []
        self.mailbox_flags = _flags_line(lines)
        # aioimaplib sends EXAMINE as a "simple command" and leaves its state at
        # AUTH, so UID FETCH/SEARCH would be refused: it is SELECTED now
        self.client.protocol.state = core.SELECTED
        self.selected = folder
        self.uidvalidity = info.get("UIDVALIDITY")
        if verb == "SELECT":
            self.read_write = "READ-ONLY" not in codes
            self.permanent_flags = proto.parse_flag_list(codes.get("PERMANENTFLAGS", "()"))
        return info, vanished

    async def uid_store(self, uids: str, action: str, flags: str) -> bool:
        """UID STORE on the folder selected read-write (``+FLAGS.SILENT``: no
        FETCH echo); False if the server refused it."""
        response = await self.execute(self.command("STORE", uids, action, flags, prefix="UID"), "UID STORE")
        return response.result == "OK"

    async def uid_search(self, criteria: str = "ALL") -> set[int]:
        """UIDs matching ``criteria`` in the examined folder (ESEARCH when offered:
        ranges instead of one number per message)."""
        esearch = "ESEARCH" in self.capabilities
        if esearch:
            command = self.command("SEARCH", "RETURN", "(ALL)", criteria, prefix="UID", untagged="ESEARCH")
        else:
            command = self.command("SEARCH", criteria, prefix="UID")
        response = await self.execute(command, "UID SEARCH")
        if response.result != "OK":
            raise SourceError(
                f"UID SEARCH in {self.selected!r} failed: {response_text(response)}", folder=self.selected
            )
        return proto.parse_search(response.lines[:-1], esearch=esearch)

    async def uid_fetch(self, uids: str, items: str, timeout: float | None = None) -> list[dict[str, proto.Token]]:
        """FETCH data items of the UIDs in ``uids`` (a set of at most
        :data:`~mailfiler.sources.imapproto.FETCH_BATCH`); responses without a UID
        (unsolicited flag updates) are left out."""
        response = await self.execute(self.command("FETCH", uids, items, prefix="UID"), "UID FETCH", timeout)
        if response.result != "OK":
            if response.result == "NO":
                return []  # e.g. [EXPUNGEISSUED]: what is gone is simply not returned
            raise SourceError(f"UID FETCH in {self.selected!r} failed: {response_text(response)}", folder=self.selected)
        out = []
        # one response at a time, each dropped once parsed: a batch of large
        # messages is held once, not as lines, then joined, then sliced
        for line in proto.iter_responses(response.lines, -1):
            try:
                _, data = proto.parse_fetch(line)
            except proto.ParseError:
                log.debug("unparsable FETCH line %.200r", line)
                continue
            finally:
                del line  # before the next one is joined
            if proto.fetch_uid(data) is not None:
                out.append(data)
        return out

    async def status(self, folder: str, items: str = "(MESSAGES UIDNEXT UIDVALIDITY)") -> dict[str, int] | None:
        """STATUS of a folder; None if it does not exist."""
        if folder == self.selected:
            # STATUS on the selected mailbox answers from this session's view
            # (Dovecot: even after the folder was deleted; RFC 3501 6.3.10 says
            # not to): look afresh instead
            try:
                info = await self.examine(folder)
            except FolderMissing:
                return None
            return {"MESSAGES": info["EXISTS"], **{k: v for k, v in info.items() if k != "EXISTS"}}
        response = await self.simple("STATUS", self.wire(folder), items)
        if response.result != "OK":
            if is_nonexistent(response):
                return None
            raise folder_error(folder, response, self.settings)
        for line in proto.join_literals(response.lines[:-1]):
            with contextlib.suppress(proto.ParseError):
                return proto.parse_status(line)[1]
        return None

    async def list_status(
        self, folders: Sequence[str], items: str = "(MESSAGES UIDNEXT UIDVALIDITY)"
    ) -> dict[str, dict[str, int] | None]:
        """STATUS of many folders in one round trip: RFC 5819 LIST-STATUS with
        RFC 5258 multiple patterns (check ``LIST-STATUS`` in the capabilities
        first).  None for a folder that does not exist; the selected folder is
        looked at afresh, as :meth:`status` does."""
        out: dict[str, dict[str, int] | None] = {}
        names: dict[str, str] = {}  # wire name -> folder
        for folder in folders:
            if folder == self.selected:
                out[folder] = await self.status(folder)
                continue
            try:
                self.wire(folder)  # refuses a name it cannot send
            except FolderMissing:
                out[folder] = None
                continue
            names[proto.folder_to_wire(folder, self.separator)] = folder
        if not names:
            return out
        patterns = " ".join(proto.quote(wire) for wire in names)
        # only the STATUS lines are wanted: aioimaplib hands a command the untagged
        # responses of its own name, here STATUS (the LIST lines are dropped)
        response = await self.simple("LIST", '""', f"({patterns})", "RETURN", f"(STATUS {items})", untagged="STATUS")
        if response.result != "OK":
            raise SourceError(f"LIST-STATUS on {self.settings.where()} failed: {response_text(response)}")
        found: dict[str, dict[str, int]] = {}
        for line in proto.join_literals(response.lines[:-1]):
            with contextlib.suppress(proto.ParseError):
                name, status = proto.parse_status(line)
                found[name] = status
        for wire, folder in names.items():
            # INBOX is case-insensitive; "*" and "%" in a name may match more: only exact names count
            out[folder] = found.get(wire) or (found.get(proto.INBOX) if proto.is_inbox(folder) else None)
        return out


def _flags_line(lines: Sequence[bytes | bytearray]) -> frozenset[str] | None:
    """The flags and keywords an EXAMINE's or SELECT's ``FLAGS (...)`` line defines."""
    for line in lines:
        if isinstance(line, bytes) and line[:7].upper() == b"FLAGS (":
            return proto.parse_flag_list(line[6:].decode("ascii", "replace"))
    return None


def is_nonexistent(response) -> bool:  # type: ignore[no-untyped-def]
    text = response_text(response).upper()
    return "[NONEXISTENT]" in text or "DOESN'T EXIST" in text or "DOES NOT EXIST" in text or "NOT FOUND" in text


def folder_error(folder: str, response, settings: ImapSettings) -> SourceError:  # type: ignore[no-untyped-def]
    if is_nonexistent(response):
        return FolderMissing(f"folder {folder!r} does not exist on {settings.where()}", folder=folder)
    return SourceError(f"IMAP folder {folder!r} on {settings.where()}: {response_text(response)}", folder=folder)
