"""The Source contract for the Maildir backend, in both layouts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from mailfiler.sources.maildir import MaildirSource
from tests.contract.source_contract import NON_ASCII, AdminMessage, Backend, MailboxAdmin, SourceContract
from tests.mailgen import (
    drop_into_maildir,
    fs_folder_dir,
    maildirpp_folder_dir,
    make_maildir_folder,
    move_message,
)


class MaildirAdmin(MailboxAdmin):
    """A mail client and an MDA, by file operations (the mailgen helpers,
    independent of the code under test)."""

    def __init__(self, root: Path, layout: str) -> None:
        self.root = root
        self.layout = layout

    def folder_dir(self, folder: str) -> Path:
        return (
            maildirpp_folder_dir(self.root, folder) if self.layout == "maildir++" else fs_folder_dir(self.root, folder)
        )

    async def create_folder(self, folder: str) -> None:
        path = make_maildir_folder(self.folder_dir(folder))
        if self.layout == "maildir++" and folder.upper() != "INBOX":
            (path / "maildirfolder").touch()

    async def put(self, folder: str, data: bytes, *, seen: bool = False) -> AdminMessage:
        path = drop_into_maildir(self.folder_dir(folder), data, flags="S" if seen else None, fsync=False)
        return AdminMessage(folder, path)

    async def remove(self, msg: AdminMessage) -> None:
        Path(msg.ref).unlink()

    async def move(self, msg: AdminMessage, folder: str) -> AdminMessage:
        return AdminMessage(folder, move_message(Path(msg.ref), self.folder_dir(folder)))

    async def flag(self, msg: AdminMessage, flags: str = "S") -> AdminMessage:
        path = Path(msg.ref)
        base, _, info = path.name.partition(":2,")
        target = path.parent.parent / "cur" / (base + ":2," + "".join(sorted(set(info + flags))))
        os.rename(path, target)
        return AdminMessage(msg.folder, target)

    async def snapshot(self) -> object:
        state = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            here = Path(dirpath)
            state.append((str(here.relative_to(self.root)), "dir", here.stat().st_mtime_ns))
            for name in sorted(filenames):
                path = here / name
                st = path.stat()
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                state.append((str(path.relative_to(self.root)), st.st_size, digest, st.st_mtime_ns, st.st_mode))
        return state


def _maildir_backend(tmp_path: Path, layout: str) -> Backend:
    root = make_maildir_folder(tmp_path / "Maildir")  # INBOX
    return Backend(MaildirSource(root, layout), MaildirAdmin(root, layout))


class TestMaildirPlusPlus(SourceContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return _maildir_backend(tmp_path, "maildir++")

    async def test_folders_are_dot_separated_modified_utf7(self, backend: Backend) -> None:
        await backend.source.create_folder(NON_ASCII)
        await backend.source.create_folder("Projekt & Co/2024")
        root = backend.admin.root  # type: ignore[attr-defined]
        made = sorted(p.name for p in root.iterdir() if p.name.startswith("."))
        assert made == [".Kunder.&AMU-kesson AB", ".Projekt &- Co.2024"]
        assert (root / ".Kunder.&AMU-kesson AB" / "maildirfolder").is_file()


class TestMaildirFs(SourceContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Backend:
        return _maildir_backend(tmp_path, "fs")

    async def test_folders_are_nested_directories(self, backend: Backend) -> None:
        await backend.source.create_folder(NON_ASCII)
        root = backend.admin.root  # type: ignore[attr-defined]
        assert (root / "Kunder" / "Åkesson AB" / "cur").is_dir()
        # a parent that is only a directory (no cur/) is not a folder
        assert "Kunder" not in await backend.source.list_folders()
