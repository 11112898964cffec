"""The target contract on the vdir and memory targets, plus what only a vdir does."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailfiler.errors import SyncTargetUnavailable
from mailfiler.sources.target import Target
from mailfiler.sync.memory import MemoryTarget
from mailfiler.sync.vdir import VdirTarget
from tests.sync.target_contract import TargetContract, item, kind

__all__ = ["kind"]


class TestVdir(TargetContract):
    @pytest.fixture
    async def target(self, tmp_path: Path, kind: str) -> AsyncIterator[Target]:
        t = VdirTarget(kind, tmp_path / "collection")
        await t.open()
        yield t
        await t.close()


class TestMemory(TargetContract):
    @pytest.fixture
    async def target(self, kind: str) -> AsyncIterator[Target]:
        t = MemoryTarget(kind)
        await t.open()
        yield t


async def test_vdir_lists_only_items(tmp_path: Path) -> None:
    t = VdirTarget("contacts", tmp_path)
    await t.open()
    (tmp_path / ".tmp-123").write_bytes(b"half")
    (tmp_path / "notes.txt").write_bytes(b"x")
    (tmp_path / "sub.vcf").mkdir()
    href, _ = await t.upload(item("contacts", "u1"), uid="u1")
    assert list(await t.list()) == [href]


async def test_vdir_writes_leave_no_temp_files(tmp_path: Path) -> None:
    t = VdirTarget("calendar", tmp_path)
    await t.open()
    href, etag = await t.upload(item("calendar", "u1"), uid="u1")
    await t.update(href, item("calendar", "u1", "B"), etag)
    assert sorted(os.listdir(tmp_path)) == [href]
    assert oct((tmp_path / href).stat().st_mode & 0o777) == "0o600"


async def test_vdir_sees_a_rewrite_within_one_mtime_tick(tmp_path: Path) -> None:
    t = VdirTarget("contacts", tmp_path)
    await t.open()
    href, etag = await t.upload(item("contacts", "u1"), uid="u1")
    st = (tmp_path / href).stat()
    # a client rewrites the file with the same size and then resets the mtime
    tmp = tmp_path / ".x"
    tmp.write_bytes(item("contacts", "u1", "Åsa Öbarg"))
    os.replace(tmp, tmp_path / href)
    os.utime(tmp_path / href, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (await t.list())[href] != etag


async def test_vdir_missing_folder_without_create(tmp_path: Path) -> None:
    t = VdirTarget("contacts", tmp_path / "nope")
    with pytest.raises(SyncTargetUnavailable, match="does not exist"):
        await t.open(create=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SyncTargetUnavailable, match="is not a folder"):
        await VdirTarget("contacts", tmp_path / "file").open()
