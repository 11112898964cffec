"""The mailbox backend abstraction.

Every backend (Maildir, IMAP, the in-memory one; Exchange later) implements
:class:`Source`, passes the shared contract suite in ``tests/contract/`` and
registers in :mod:`mailfiler.backends` (``docs/backends.md``: writing one).
A backend knows folders and opaque per-folder message ids (``source_id``);
it knows nothing of the CRM.  Ids are stable while a message stays in a
folder; a move shows up as ``gone`` in one folder and ``added`` in another,
and the tracker re-identifies the message by its Message-ID.

**Cursor tokens.**  A backend may hand out an opaque per-folder token with
each listing (:attr:`Listing.token`, :attr:`Delta.token`).  The worker stores
it in ``FolderCursor.token`` in the same transaction as the message that
advances it: it processes a listing in the order given, and commits with each
message :meth:`Source.message_token` (the token "up to and including this
message"), so a crash leaves the cursor at the last committed message and
never past one that is not.  With a stored token,
:meth:`Source.list_changes` returns only what changed since (a catch-up costs
a command or two instead of a full listing) or None when the token is no use
(a new UIDVALIDITY, a server that cannot tell): then the worker lists the
folder in full and diffs it against the store, as it always can.  A backend
without tokens (Maildir: its locations are its cursor) returns None
everywhere.

**Reading ahead.**  A backfill reads messages in batches
(:meth:`Source.sizes_of`, then :meth:`Source.fetch_batch`): the worker has one
code path for every backend, and a backend that can read many messages in one
round trip (IMAP: one ``UID FETCH`` for up to 400 UIDs) overrides them.  The
defaults call :meth:`Source.size` and :meth:`Source.fetch` per message.

**Marks.**  A backend may mark messages so that users see their state in
their mail client (IMAP keywords ``$Tracked``/``$TrackFailed``, opt-in):
:meth:`Source.mark`.  It is the one write a backend may make to a mailbox,
never required for tracking, and a failure is reported, never raised.

**Tags** (optional; issue 20, "track by tag").  A backend that can tell
which messages carry a tag (IMAP keywords; Outlook categories on EWS and
Graph) says so with :attr:`Source.tags` and implements
:meth:`Source.tag_changes`: for every folder whose tags may have changed
since its tag cursor, the messages whose matching tags changed, each with
the cursor to commit with it (the same rule as :meth:`Source.message_token`:
it covers this change and those before it, never one after).  A folder
without a cursor reports every message that carries a matching tag now.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from mailfiler.errors import MailboxUnavailable, MessageVanished

ChangeKind = Literal["added", "gone", "rescan", "tags"]
#: what a mark says about a message: tracked, or kept aside in the shunt
MarkState = Literal["tracked", "failed"]
T = TypeVar("T")


@dataclass(frozen=True)
class Change:
    """One change seen by a push watcher.

    ``rescan`` asks for a full diff of the folder (a folder appeared, or the
    watcher lost events).  ``tags``: tags may have changed somewhere in the
    mailbox (a flag change was pushed): a tag pass is due (folder ``*``)."""

    kind: ChangeKind
    folder: str
    source_id: str | None = None
    hint: str | None = None  # backend-specific locator, e.g. the file path


@dataclass(frozen=True)
class Listing:
    """The messages a folder holds now: source_id -> hint.

    With a ``token``, ``messages`` is in the order to process them (see
    :meth:`Source.message_token`) and ``token`` is the folder's cursor once
    every one of them is handled."""

    folder: str
    messages: dict[str, str | None]
    token: str | None = None


@dataclass(frozen=True)
class Delta:
    """What changed in a folder since a token (:meth:`Source.list_changes`).

    ``added`` are the new messages in the order to process them; ``gone``
    the ones that left.  A backend that cannot tell what left (IMAP without
    QRESYNC, when the message count says something did) gives ``present``
    instead, every id the folder holds now, and the caller diffs it against
    what it knows.  ``token`` is the folder's cursor once all of it is
    applied: first the gone, then the added in order."""

    folder: str
    added: dict[str, str | None]
    gone: frozenset[str] = frozenset()
    present: frozenset[str] | None = None
    token: str | None = None

    @property
    def empty(self) -> bool:
        return not self.added and not self.gone and self.present is None


@dataclass(frozen=True)
class TagQuery:
    """What a tag pass looks for: tags named exactly (compared without regard
    to case, as IMAP compares keywords) and tags that start with a prefix
    (``CRM:`` for ``CRM:account:contoso``).  In the folders of
    ``every_message_in`` (the untrack folder) each new or changed message is
    reported, tags or not."""

    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    every_message_in: frozenset[str] = frozenset()

    def matches(self, tag: str) -> bool:
        low = tag.lower()
        return low in {n.lower() for n in self.names} or any(low.startswith(p.lower()) for p in self.prefixes)

    def matching(self, tags: Iterable[str]) -> frozenset[str]:
        return frozenset(t for t in tags if self.matches(t))


@dataclass(frozen=True)
class TagChange:
    """A message whose matching tags changed (or, in a folder without a
    cursor, that carries one): ``tags`` are the ones it carries now that the
    query matches (empty: a tag was removed).  ``token``: the folder's tag
    cursor to commit with it, or None to commit none."""

    source_id: str
    tags: frozenset[str]
    token: str | None = None


@dataclass(frozen=True)
class TagDelta:
    """A folder's tag changes since its cursor, in the order to apply them;
    ``token`` is its tag cursor once all of them are applied."""

    folder: str
    changes: list[TagChange]
    token: str | None = None


def inbox_spelled_out(path: str) -> str:
    """*path* with a first part that names the Inbox in any case as ``INBOX``, the way
    every backend lists it (a backend's ``folder_name`` where the server folds case)."""
    head, sep, rest = path.partition("/")
    return "INBOX" + sep + rest if head.upper() == "INBOX" else path


def folder_cursor(prefix: str, folder_id: str, state: str) -> str:
    """A tag cursor that keeps the server's folder id beside the server's own state
    (an EWS sync state, a Graph delta link); *prefix* names the backend's format."""
    return prefix + json.dumps({"f": folder_id, "s": state}, separators=(",", ":"))


def folder_cursor_state(prefix: str, token: str | None, folder_id: str) -> str | None:
    """The state in a :func:`folder_cursor` token, when it is in *prefix*'s format and
    for *folder_id*: a folder deleted and made again under its name starts afresh."""
    if not token or not token.startswith(prefix):
        return None
    try:
        data = json.loads(token[len(prefix) :])
        return str(data["s"]) if data["f"] == folder_id else None
    except (ValueError, TypeError, KeyError):
        return None


class Source(abc.ABC):
    """A mailbox: list folders, list and fetch messages, push changes."""

    #: name of the backend in config and status ("maildir", "imap", ...)
    backend: str = ""

    async def open(self, *, create: bool = False) -> None:  # noqa: B027 - optional hook
        """Connect or check the mailbox is readable.  ``create`` makes an
        empty mailbox first where the backend can (a new local Maildir)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def resume(self, tokens: Mapping[str, str]) -> None:  # noqa: B027 - optional hook
        """Called after ``open``, before anything else, with the cursor tokens the store holds
        for the tracked folders (folder -> token).  A backend whose tokens name a folder by
        id binds the configured names to those ids here, so a folder renamed while the
        daemon was stopped is still the folder tracked, not a missing one."""

    @abc.abstractmethod
    async def list_folders(self) -> list[str]:
        """Every folder in the mailbox, with "/" as separator."""

    @abc.abstractmethod
    async def folder_exists(self, folder: str) -> bool: ...

    @abc.abstractmethod
    async def create_folder(self, folder: str) -> None: ...

    @abc.abstractmethod
    async def list_messages(self, folder: str) -> Listing:
        """Raise :class:`~mailfiler.errors.FolderMissing` if it does not exist."""

    @abc.abstractmethod
    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        """Size in bytes; raise :class:`~mailfiler.errors.MessageVanished` if gone."""

    @abc.abstractmethod
    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        """The raw message, never altering its state (no \\Seen, no rename).

        Raise :class:`~mailfiler.errors.MessageVanished` if it is gone."""

    # -- reading ahead (a backfill's batches) --------------------------------------------

    async def sizes_of(self, folder: str, items: Mapping[str, str | None]) -> dict[str, int | Exception]:
        """Sizes of several messages (source_id -> hint): for each, its size or
        the error :meth:`size` raises for it; those that are gone are left out.
        Only :class:`~mailfiler.errors.MailboxUnavailable` is raised (the
        connection failed, not a message)."""
        return await _each(self.size, folder, items)

    async def fetch_batch(self, folder: str, items: Mapping[str, str | None]) -> dict[str, bytes | Exception]:
        """Several messages at once, as :meth:`fetch` reads them: for each, the raw
        bytes or the error reading it raised; those that are gone are left out.
        The caller bounds the batch (count and bytes, from :meth:`sizes_of`)."""
        return await _each(self.fetch, folder, items)

    async def fetch_headers(self, folder: str, items: Mapping[str, str | None]) -> dict[str, bytes | Exception]:
        """The header sections of several messages (enough to find their
        Message-ID and parties), as :meth:`fetch_batch` hands out whole ones;
        those that are gone are left out.  By default the whole messages."""
        return await self.fetch_batch(folder, items)

    @abc.abstractmethod
    def watch(self, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
        """Yield batches of changes in ``folders`` until ``stop`` is set."""

    # -- cursor tokens (optional) ---------------------------------------------------

    async def list_changes(self, folder: str, token: str) -> Delta | None:
        """What changed in ``folder`` since ``token`` (a :attr:`Listing.token`
        or :attr:`Delta.token` this backend gave out), or None when the token
        is no use and the folder must be listed in full.  Raise
        :class:`~mailfiler.errors.FolderMissing` if the folder does not exist."""
        return None

    def message_token(self, token: str, source_id: str) -> str | None:
        """The cursor to commit with ``source_id``, a message of the listing or
        delta whose token is ``token``, when its messages are processed in the
        order given: it covers this message and those before it, not the ones
        after.  None: commit no token with it."""
        return None

    def id_generation(self, source_id: str) -> str | None:
        """What a folder's source ids are numbered within (IMAP: the UIDVALIDITY),
        when the backend can renumber a folder's messages all at once; None when
        its ids are stable (Maildir file names)."""
        return None

    # -- marks (optional) ----------------------------------------------------------------

    @property
    def marks(self) -> bool:
        """True when :meth:`mark` does something (configured and supported)."""
        return False

    async def mark(self, folder: str, source_ids: Sequence[str], state: MarkState) -> int:
        """Show ``state`` on these messages in the user's mail client, best
        effort: how many were marked; failures are logged, never raised."""
        return 0

    async def unmarked(self, folder: str, state: MarkState) -> set[str] | None:
        """The messages of ``folder`` that do not show ``state`` (a crash between
        a commit and its mark leaves some; the worker marks those it holds
        again).  None when marks are off or the backend cannot tell."""
        return None

    # -- tags (optional) -----------------------------------------------------------------

    @property
    def tags(self) -> bool:
        """True when :meth:`tag_changes` is implemented."""
        return False

    def tag_changes(self, cursors: Mapping[str, str | None], query: TagQuery) -> AsyncIterator[TagDelta]:
        """A :class:`TagDelta` for every folder of the mailbox whose tags may
        have changed since its cursor in ``cursors`` (folder -> tag cursor; a
        folder not in it has none, and then every message carrying a tag the
        query matches is reported).  Folders where nothing changed yield
        nothing, and an idle pass should cost a command or two whatever the
        mailbox holds.  Raise :class:`~mailfiler.errors.MailboxUnavailable` for
        a failed connection."""
        raise NotImplementedError(f"{self.backend or type(self).__name__} has no tags")

    async def copy_raw(self, folder: str, source_id: str, hint: str | None, dest: str) -> bool:
        """Stream a message to a file without holding it in memory (for
        shunting messages too large to fetch).  False if unsupported."""
        return False


async def _each(
    read: Callable[[str, str, str | None], Awaitable[T]], folder: str, items: Mapping[str, str | None]
) -> dict[str, T | Exception]:
    """``read`` each message alone: the batch defaults of :class:`Source`."""
    out: dict[str, T | Exception] = {}
    for sid, hint in items.items():
        try:
            out[sid] = await read(folder, sid, hint)
        except MessageVanished:
            continue
        except MailboxUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - the worker raises it again for this message alone
            out[sid] = exc
    return out
