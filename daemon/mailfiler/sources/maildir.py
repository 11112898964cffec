"""Maildir backend, watched with watchfiles (inotify).

Layouts: ``maildir++`` (Dovecot, Courier: INBOX is the root, ``A/B`` is
``.A.B``, names in IMAP modified UTF-7) and ``fs`` (``A/B`` is ``A/B``).
A message's source id is its file name up to the ``:`` that starts the
flags, so ``new/x`` -> ``cur/x:2,S`` (a client reading it) is no change.
Files are only ever read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import watchfiles

from mailfiler.errors import FolderMissing, MailboxMissing, MailboxRootMissing, MessageVanished
from mailfiler.sources.base import Change, Listing, Source
from mailfiler.util import mutf7

log = logging.getLogger("mailfiler.sources.maildir")

SUBDIRS = ("new", "cur")
INBOX = "INBOX"


def source_id_of(filename: str) -> str:
    return filename.split(":", 1)[0]


class MaildirSource(Source):
    backend = "maildir"

    def __init__(self, root: Path, layout: str = "maildir++", *, step_ms: int = 10, debounce_ms: int = 200) -> None:
        self.root = Path(root)
        self.layout = layout
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms

    # -- names ------------------------------------------------------------------

    def folder_dir(self, folder: str) -> Path:
        if folder.upper() == INBOX:
            return self.root
        if self.layout == "fs":
            return self.root.joinpath(*folder.split("/"))
        return self.root / ("." + ".".join(mutf7.encode(part) for part in folder.split("/")))

    def folder_of_dir(self, directory: Path) -> str | None:
        try:
            rel = directory.relative_to(self.root)
        except ValueError:
            return None
        if rel == Path("."):
            return INBOX
        if self.layout == "fs":
            return "/".join(rel.parts)
        if len(rel.parts) != 1 or not rel.name.startswith(".") or rel.name in (".", ".."):
            return None
        try:
            return "/".join(mutf7.decode(part) for part in rel.name[1:].split("."))
        except ValueError:
            return None

    # -- Source API ----------------------------------------------------------

    async def open(self, *, create: bool = False) -> None:
        # ``create`` makes missing folders inside the mailbox, never the root: a
        # mistyped ``maildir:`` must fail, not become a new, empty, watched Maildir
        try:
            self.root.stat()
        except FileNotFoundError:
            raise MailboxRootMissing(
                f"Maildir {self.root} does not exist; mailfiler creates missing folders inside a mailbox,"
                " never the mailbox itself",
                path=str(self.root),
            ) from None
        except OSError as exc:  # a parent directory we may not enter, say
            why = exc.strerror
            raise MailboxMissing(f"Maildir {self.root} cannot be read: {why}", path=str(self.root)) from exc
        if not self.root.is_dir():
            raise MailboxMissing(f"Maildir {self.root} is not a directory", path=str(self.root))
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise MailboxMissing(f"Maildir {self.root} is not readable by this user", path=str(self.root))
        if create:
            # an existing but empty root gets an Inbox too, as any MDA would make it
            for sub in ("cur", "new", "tmp"):
                (self.root / sub).mkdir(exist_ok=True)

    async def list_folders(self) -> list[str]:
        found: list[str] = []
        if not self.root.is_dir():
            return found
        if (self.root / "cur").is_dir():
            found.append(INBOX)
        if self.layout == "fs":
            for dirpath, dirnames, _ in os.walk(self.root):
                dirnames[:] = [d for d in dirnames if d not in ("new", "cur", "tmp") and not d.startswith(".")]
                here = Path(dirpath)
                if here != self.root and (here / "cur").is_dir():
                    found.append("/".join(here.relative_to(self.root).parts))
        else:
            for entry in os.scandir(self.root):
                if entry.is_dir() and entry.name.startswith(".") and entry.name not in (".", ".."):
                    name = self.folder_of_dir(Path(entry.path))
                    if name and (Path(entry.path) / "cur").is_dir():
                        found.append(name)
        return sorted(found)

    async def folder_exists(self, folder: str) -> bool:
        base = self.folder_dir(folder)
        return all((base / sub).is_dir() for sub in SUBDIRS)

    async def create_folder(self, folder: str) -> None:
        if not self.root.is_dir():  # gone since open(): unmounted, say; never make a new root
            raise MailboxRootMissing(f"Maildir {self.root} does not exist (any more)", path=str(self.root))
        base = self.folder_dir(folder)
        for sub in ("tmp", "new", "cur"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        if self.layout == "maildir++" and folder.upper() != INBOX:
            # Courier/Dovecot mark Maildir++ subfolders with this file
            (base / "maildirfolder").touch(exist_ok=True)

    def _scan(self, folder: str) -> dict[str, str]:
        base = self.folder_dir(folder)
        messages: dict[str, str] = {}
        for sub in SUBDIRS:
            try:
                with os.scandir(base / sub) as it:
                    for entry in it:
                        if entry.name.startswith("."):
                            continue
                        messages[source_id_of(entry.name)] = entry.path
            except FileNotFoundError as exc:
                raise FolderMissing(f"folder {folder!r} does not exist in {self.root}", folder=folder) from exc
        return messages

    async def list_messages(self, folder: str) -> Listing:
        return Listing(folder, dict(self._scan(folder)))

    def _locate(self, folder: str, source_id: str, hint: str | None) -> Path:
        if hint and os.path.exists(hint):
            return Path(hint)
        # the file was renamed since (new/ -> cur/, flags changed): look again
        base = self.folder_dir(folder)
        for sub in SUBDIRS:
            candidate = base / sub / source_id
            if candidate.exists():
                return candidate
            try:
                with os.scandir(base / sub) as it:
                    for entry in it:
                        if source_id_of(entry.name) == source_id:
                            return Path(entry.path)
            except FileNotFoundError:
                break
        raise MessageVanished(f"{folder}/{source_id} is gone", folder=folder, source_id=source_id)

    async def size(self, folder: str, source_id: str, hint: str | None = None) -> int:
        for _ in range(3):
            path = self._locate(folder, source_id, hint)
            try:
                return path.stat().st_size
            except FileNotFoundError:
                hint = None
        raise MessageVanished(f"{folder}/{source_id} is gone", folder=folder, source_id=source_id)

    async def fetch(self, folder: str, source_id: str, hint: str | None = None) -> bytes:
        for _ in range(3):
            path = self._locate(folder, source_id, hint)
            try:
                return path.read_bytes()
            except FileNotFoundError:
                hint = None  # renamed between locate and open: locate again
            except IsADirectoryError as exc:
                raise MessageVanished(f"{path} is a directory", folder=folder, source_id=source_id) from exc
        raise MessageVanished(f"{folder}/{source_id} is gone", folder=folder, source_id=source_id)

    async def copy_raw(self, folder: str, source_id: str, hint: str | None, dest: str) -> bool:
        shutil.copyfile(self._locate(folder, source_id, hint), dest)
        return True

    # -- push ---------------------------------------------------------------------

    def _classify(self, path: Path) -> tuple[str, str | None] | None:
        """(folder, file name or None for a directory event) for a path that
        matters, else None."""
        if path.parent.name in SUBDIRS:
            folder = self.folder_of_dir(path.parent.parent)
            return (folder, path.name) if folder else None
        if path.name in SUBDIRS:
            folder = self.folder_of_dir(path.parent)
            return (folder, None) if folder else None
        if path.name != "tmp":
            # a folder directory itself: created, or renamed into place whole
            # (IMAP RENAME), possibly already holding mail
            folder = self.folder_of_dir(path)
            return (folder, None) if folder and folder != INBOX else None
        return None

    async def watch(self, folders: Sequence[str], stop: asyncio.Event) -> AsyncIterator[list[Change]]:
        wanted = set(folders)

        def keep(change: watchfiles.Change, path: str) -> bool:
            return "/new" in path or "/cur" in path or self._classify(Path(path)) is not None

        async for batch in watchfiles.awatch(
            self.root,
            watch_filter=keep,
            step=self.step_ms,
            debounce=self.debounce_ms,
            stop_event=stop,
            recursive=True,
            rust_timeout=5_000,
            yield_on_timeout=False,
        ):
            changes = self._batch_to_changes(batch, wanted)
            if changes:
                yield changes

    def _batch_to_changes(self, batch: set[tuple[watchfiles.Change, str]], wanted: set[str]) -> list[Change]:
        added: dict[tuple[str, str], str] = {}
        deleted: set[tuple[str, str]] = set()
        added_paths: set[str] = set()
        deleted_paths: dict[tuple[str, str], set[str]] = {}
        rescans: set[str] = set()
        for kind, raw_path in batch:
            where = self._classify(Path(raw_path))
            if where is None:
                continue
            folder, filename = where
            if folder not in wanted and not (filename is None and self.layout == "fs"):
                continue
            if filename is None:
                rescans.add(folder)
                if self.layout == "fs":
                    # a directory renamed in whole brings its subfolders with it
                    rescans.update(f for f in wanted if f.startswith(folder + "/"))
                continue
            if filename.startswith("."):
                continue
            sid = source_id_of(filename)
            if kind in (watchfiles.Change.added, watchfiles.Change.modified):
                added[(folder, sid)] = raw_path
                added_paths.add(raw_path)
            elif kind == watchfiles.Change.deleted:
                deleted.add((folder, sid))
                deleted_paths.setdefault((folder, sid), set()).add(raw_path)
        rescans &= wanted
        # A delete may be half of a rename (new/ -> cur/, flag change), and an
        # add may be followed by a move out within the same batch (read, then
        # moved at once): the batch is a set, so order is lost.  Only what is
        # really absent now is gone; a still-existing added file proves presence.
        maybe_gone = {
            key for key in deleted if key[0] not in rescans and not (key in added and os.path.exists(added[key]))
        }
        gone: list[tuple[str, str]] = []
        if maybe_gone:
            by_folder: dict[str, set[str]] = {}
            for folder, sid in maybe_gone:
                by_folder.setdefault(folder, set()).add(sid)
            for folder, sids in by_folder.items():
                try:
                    present = set(self._scan(folder))
                except FolderMissing:
                    present = set()
                gone.extend((folder, sid) for sid in sorted(sids - present))
        changes = [Change("rescan", f) for f in sorted(rescans)]
        gone_keys = set(gone)
        # A message renamed within its folder (new/x -> cur/x:2,S, a flag
        # change) is a delete plus an add of the same id: no change, unless
        # the deleted file itself appeared in this batch (a new message read
        # at once must still be reported).
        renamed = {key for key, paths in deleted_paths.items() if key in added and not paths & added_paths}
        for (folder, sid), path in added.items():
            if folder not in rescans and (folder, sid) not in gone_keys and (folder, sid) not in renamed:
                changes.append(Change("added", folder, sid, path))
        changes.extend(Change("gone", folder, sid) for folder, sid in gone)
        return changes
