"""The in-memory backend: a mailbox held in this process.

Two uses: tests of the tracker, rules and worker that need a mailbox but no
server (they change it through :class:`MemoryMailbox`, as a mail client would),
and a demonstration that a backend is one module plus one registry line
(``memory:`` in the config, seeded from .eml files).

Ids and tokens follow IMAP's model so that the worker's catch-up path is the
one a real server drives: a folder has a generation (UIDVALIDITY) and numbers
its messages upwards (UIDs); a source id is ``"GEN:N"``; the cursor token is
``"GEN:LAST:EXPUNGES"``, the highest id handled and how many removals were
seen, so :meth:`MemorySource.list_changes` can say exactly what came and went.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from mailfiler.backends import Backend
from mailfiler.config.base import Strict, resolve_path
from mailfiler.errors import FolderMissing, MailboxUnavailable, MessageVanished
from mailfiler.sources.base import Change, Delta, Listing, MarkState, Source, TagChange, TagDelta, TagQuery

_generations = itertools.count(1)


@dataclass
class _Folder:
    generation: int = field(default_factory=lambda: next(_generations))
    next_id: int = 1
    messages: dict[int, bytes] = field(default_factory=dict)
    #: ids in the order they were removed (the token counts how many it has seen)
    expunged: list[int] = field(default_factory=list)
    marks: dict[int, set[str]] = field(default_factory=dict)
    #: the user's tags (IMAP keywords, Outlook categories) and each message's
    #: modification sequence (CONDSTORE's MODSEQ): the last change of its tags
    tags: dict[int, set[str]] = field(default_factory=dict)
    modseqs: dict[int, int] = field(default_factory=dict)
    modseq: int = 1


class MemoryMailbox:
    """The mailbox's contents, shared by every :class:`MemorySource` on it.
    Its methods are what a mail client or an MDA would do."""

    def __init__(self) -> None:
        self.folders: dict[str, _Folder] = {"INBOX": _Folder()}
        self.listeners: set[asyncio.Queue[Change]] = set()
        #: when set, every call of a source raises it (a server down, a login refused)
        self.failure: Exception | None = None

    def _emit(self, change: Change) -> None:
        for queue in self.listeners:
            queue.put_nowait(change)

    def create_folder(self, folder: str) -> None:
        if folder not in self.folders:
            self.folders[folder] = _Folder()
            self._emit(Change("rescan", folder))

    def folder(self, folder: str) -> _Folder:
        try:
            return self.folders[folder]
        except KeyError:
            raise FolderMissing(f"folder {folder!r} does not exist", folder=folder) from None

    def put(self, folder: str, data: bytes) -> str:
        """Deliver a message; its source id."""
        f = self.folder(folder)
        n, f.next_id = f.next_id, f.next_id + 1
        f.messages[n] = bytes(data)
        f.modseq += 1
        f.modseqs[n] = f.modseq
        sid = f"{f.generation}:{n}"
        self._emit(Change("added", folder, sid))
        return sid

    def remove(self, folder: str, source_id: str) -> bytes:
        f = self.folder(folder)
        n = _number(f, source_id)
        if n is None or n not in f.messages:
            raise MessageVanished(f"{folder}: no message {source_id}", folder=folder, source_id=source_id)
        f.expunged.append(n)
        f.marks.pop(n, None)
        f.tags.pop(n, None)
        f.modseqs.pop(n, None)
        f.modseq += 1
        self._emit(Change("gone", folder, source_id))
        return f.messages.pop(n)

    def move(self, folder: str, source_id: str, dest: str) -> str:
        """Move a message, with its tags (as IMAP MOVE keeps keywords)."""
        self.folder(dest)
        f = self.folder(folder)
        n = _number(f, source_id)
        tags = set(f.tags.get(n, set())) if n is not None else set()
        sid = self.put(dest, self.remove(folder, source_id))
        if tags:
            self.tag(dest, sid, *tags)
        return sid

    def tag(self, folder: str, source_id: str, *tags: str, remove: bool = False) -> None:
        """Add (or ``remove``) tags on a message, as a mail client does."""
        f = self.folder(folder)
        n = _number(f, source_id)
        if n is None or n not in f.messages:
            raise MessageVanished(f"{folder}: no message {source_id}", folder=folder, source_id=source_id)
        have = f.tags.setdefault(n, set())
        if remove:
            have.difference_update(tags)
        else:
            have.update(tags)
        f.modseq += 1
        f.modseqs[n] = f.modseq
        self._emit(Change("tags", "*"))

    def renumber(self, folder: str) -> None:
        """A new generation (IMAP: a new UIDVALIDITY): every id changes."""
        f = self.folder(folder)
        self.folders[folder] = _Folder(
            messages=dict(f.messages), next_id=f.next_id, tags=dict(f.tags), modseqs=dict(f.modseqs), modseq=f.modseq
        )
        self._emit(Change("rescan", folder))


def _number(f: _Folder, source_id: str) -> int | None:
    gen, _, n = source_id.partition(":")
    if gen != str(f.generation) or not n.isdigit():
        return None
    return int(n)


#: mailboxes by name: every source of one name in this process sees the same mail
_MAILBOXES: dict[str, MemoryMailbox] = {}


def mailbox(name: str) -> MemoryMailbox:
    """The in-memory mailbox called ``name`` (made empty on first use)."""
    return _MAILBOXES.setdefault(name, MemoryMailbox())


def forget(name: str) -> None:
    _MAILBOXES.pop(name, None)


class MemorySource(Source):
    backend = "memory"

    def __init__(self, box: MemoryMailbox, *, marks: bool = False, seed: dict[str, list[Path]] | None = None) -> None:
        self.box = box
        self._marks = marks
        self._seed = seed or {}

    def _check(self) -> None:
        if self.box.failure is not None:
            raise self.box.failure

    async def open(self, *, create: bool = False) -> None:
        self._check()
        for folder, files in self._seed.items():
            if folder in self.box.folders and self.box.folders[folder].next_id > 1:
                continue  # seeded already (a second open, a reload)
            self.box.create_folder(folder)
            for path in files:
                try:
                    data = path.read_bytes()
                except OSError as exc:
                    raise MailboxUnavailable(f"memory mailbox: cannot read {path}: {exc.strerror}") from None
                self.box.put(folder, data)

    async def list_folders(self) -> list[str]:
        self._check()
        return sorted(self.box.folders)

    async def folder_exists(self, folder: str) -> bool:
        self._check()
        return folder in self.box.folders

    async def create_folder(self, folder: str) -> None:
        self._check()
        self.box.create_folder(folder)

    def _token(self, f: _Folder, last: int) -> str:
        return f"{f.generation}:{last}:{len(f.expunged)}"

    async def list_messages(self, folder: str) -> Listing:
        self._check()
        f = self.box.folder(folder)
        ids = sorted(f.messages)
        return Listing(folder, {f"{f.generation}:{n}": None for n in ids}, self._token(f, ids[-1] if ids else 0))

    async def list_changes(self, folder: str, token: str) -> Delta | None:
        self._check()
        f = self.box.folder(folder)
        try:
            gen, last, seen = (int(x) for x in token.split(":"))
        except ValueError:
            return None
        if gen != f.generation or seen > len(f.expunged):
            return None
        added: dict[str, str | None] = {f"{gen}:{n}": None for n in sorted(f.messages) if n > last}
        gone = frozenset(f"{gen}:{n}" for n in f.expunged[seen:] if n <= last)
        top = max([last, *(n for n in f.messages if n > last)])
        return Delta(folder, added, gone, token=self._token(f, top))

    def message_token(self, token: str, source_id: str) -> str | None:
        gen, _, seen = token.split(":")
        sgen, _, n = source_id.partition(":")
        return f"{gen}:{n}:{seen}" if sgen == gen else None

    def id_generation(self, source_id: str) -> str | None:
        return source_id.partition(":")[0]

    def _message(self, folder: str, source_id: str) -> bytes:
        self._check()
        f = self.box.folder(folder)
        n = _number(f, source_id)
        if n is None or n not in f.messages:
            raise MessageVanished(f"{folder}: no message {source_id}", folder=folder, source_id=source_id)
        return f.messages[n]

    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        return len(self._message(folder, source_id))

    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        return self._message(folder, source_id)

    async def watch(self, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self.box.listeners.add(queue)
        wanted = set(folders)
        try:
            while not stop.is_set():
                stopping = asyncio.ensure_future(stop.wait())
                getting = asyncio.ensure_future(queue.get())
                await asyncio.wait({stopping, getting}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if not getting.done():
                    getting.cancel()
                    break
                batch = [getting.result()]
                while not queue.empty():
                    batch.append(queue.get_nowait())
                batch = [c for c in batch if c.folder in wanted or c.kind == "tags"]
                if batch:
                    yield batch
        finally:
            self.box.listeners.discard(queue)

    @property
    def marks(self) -> bool:
        return self._marks

    async def mark(self, folder: str, source_ids: Sequence[str], state: MarkState) -> int:
        if not self._marks or folder not in self.box.folders:
            return 0
        f = self.box.folders[folder]
        done = 0
        for sid in source_ids:
            n = _number(f, sid)
            if n is not None and n in f.messages:
                f.marks.setdefault(n, set()).add(state)
                done += 1
        return done

    async def unmarked(self, folder: str, state: MarkState) -> set[str] | None:
        if not self._marks:
            return None
        f = self.box.folder(folder)
        return {f"{f.generation}:{n}" for n in f.messages if state not in f.marks.get(n, set())}

    # -- tags (CONDSTORE's model: a modification sequence per folder) ---------------

    @property
    def tags(self) -> bool:
        return True

    async def tag_changes(self, cursors: Mapping[str, str | None], query: TagQuery) -> AsyncIterator[TagDelta]:
        """Per folder, the messages changed since the cursor ``"GEN:MODSEQ"`` that
        carry a matching tag (every one in the query's untrack folders); with no
        cursor, every such message."""
        self._check()
        for name in sorted(self.box.folders):
            f = self.box.folders[name]
            gen, _, seq = (cursors.get(name) or "").partition(":")
            since = int(seq) if gen == str(f.generation) and seq.isdigit() else None
            if since is not None and since >= f.modseq:
                continue
            every = name in query.every_message_in
            hits = sorted(
                (f.modseqs.get(n, 0), n, query.matching(f.tags.get(n, ())))
                for n in f.messages
                if since is None or f.modseqs.get(n, 0) > since
            )
            hits = [h for h in hits if every or h[2]]
            token = f"{f.generation}:{f.modseq}"
            changes = []
            for i, (_, n, tags) in enumerate(hits):
                # each change covers those before it: up to just below the next one's modseq
                after = f"{f.generation}:{hits[i + 1][0] - 1}" if i + 1 < len(hits) and since is not None else None
                changes.append(TagChange(f"{f.generation}:{n}", tags, token if i + 1 == len(hits) else after))
            yield TagDelta(name, changes, token)


class MemoryConfig(Strict):
    """``memory:`` in a mailbox: an in-process mailbox, for tests and demonstrations."""

    mailbox: str | None = Field(
        default=None, description="Shared name of the in-memory mailbox; default: the mailbox's name."
    )
    folders: dict[str, list[Path]] = Field(
        default_factory=dict, description="Folder -> .eml files put into it when the mailbox is first opened."
    )
    marks: bool = Field(default=False, description="Record $Tracked/$TrackFailed marks.")


def _source(mb: Any) -> MemorySource:
    cfg: MemoryConfig = mb.backend_config
    return MemorySource(mailbox(cfg.mailbox or mb.name), marks=cfg.marks, seed=cfg.folders)


def _resolve(cfg: MemoryConfig, base_dir: Path) -> MemoryConfig:
    seed = {folder: [resolve_path(p, base_dir) for p in files] for folder, files in cfg.folders.items()}
    return cfg.model_copy(update={"folders": seed})


BACKEND = Backend(
    kind="memory",
    config=MemoryConfig,
    description="An in-memory mailbox (tests and demonstrations): {folders: {FOLDER: [FILE.eml, ...]}}.",
    noun="an in-memory mailbox",
    source=_source,
    location=lambda mb: f"memory:{mb.backend_config.mailbox or mb.name}",
    resolve=_resolve,
    tag_name=lambda name: None,  # any string, as the tests choose
)
