"""The vdir target: a folder of ``.vcf`` or ``.ics`` files, one item per file.

The layout vdirsyncer, khard and khal use
(https://vdirsyncer.pimutils.org/en/stable/vdir.html): the file name is the
href, any other file (hidden, a temp file, another extension) is not an
item.  Writes go to a temp file that is fsynced and renamed into place, and
the folder is fsynced, so an item is either the old or the new one, after a
crash too (vdirsyncer's own ``atomic_write`` does not fsync).

The etag is the file's mtime (ns), size and inode: cheap to list from a
directory scan, and a rename always makes a new inode, so a rewrite within
one mtime tick is still seen.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mailfiler.sources.target import (
    Fetched,
    SyncItemExists,
    SyncItemNotFound,
    SyncPreconditionFailed,
    SyncTargetUnavailable,
    Target,
    href_for,
)
from mailfiler.util.fsio import atomic_write, fsync_dir


def _etag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns:x}-{st.st_size:x}-{st.st_ino:x}"


class VdirTarget(Target):
    backend = "vdir"

    def __init__(self, kind: str, path: Path) -> None:
        super().__init__(kind, str(path))
        self.path = Path(path)

    async def open(self, *, create: bool = True) -> None:
        if create and not self.path.exists():
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._unavailable(exc) from exc
        if not self.path.is_dir():
            why = "is not a folder" if self.path.exists() else "does not exist"
            raise SyncTargetUnavailable(f"{self.kind} folder {self.path} {why}", location=str(self.path))

    def _unavailable(self, exc: OSError) -> SyncTargetUnavailable:
        return SyncTargetUnavailable(f"{self.kind} folder {self.path}: {exc.strerror or exc}", location=str(self.path))

    def _file(self, href: str) -> Path:
        if "/" in href or href.startswith(".") or not href.endswith(self.extension):
            raise SyncItemNotFound(f"{self.path}: {href!r} is not an item name", href=href)
        return self.path / href

    async def list(self) -> dict[str, str]:
        items: dict[str, str] = {}
        try:
            with os.scandir(self.path) as it:
                for entry in it:
                    if entry.name.startswith(".") or not entry.name.endswith(self.extension):
                        continue
                    try:
                        if entry.is_file():
                            items[entry.name] = _etag(entry.stat())
                    except FileNotFoundError:
                        continue  # removed while listing
        except OSError as exc:
            raise self._unavailable(exc) from exc
        return items

    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]:  # in this class, list is the method
        found = []
        for href in hrefs:
            path = self._file(href)
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    data = fh.read()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._unavailable(exc) from exc
            modified = dt.datetime.fromtimestamp(st.st_mtime, dt.UTC).replace(tzinfo=None)
            found.append(Fetched(href, _etag(st), data, modified))
        return found

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        href = href_for(uid, self.kind)
        path = self._file(href)
        # write a temp file, then hard-link it into place: link() fails when the
        # name exists (never replaces an item that appeared meanwhile) and a
        # reader never sees a half-written or empty item
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".tmp-")
        try:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)
        except FileExistsError:
            raise SyncItemExists(f"{path} exists already", href=href) from None
        except OSError as exc:
            raise self._unavailable(exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        fsync_dir(self.path)
        return href, _etag(path.stat())

    async def update(self, href: str, data: bytes, etag: str) -> str:
        path = self._file(href)
        self._check(path, href, etag)
        self._write(path, data)
        return _etag(path.stat())

    async def delete(self, href: str, etag: str) -> None:
        path = self._file(href)
        self._check(path, href, etag)
        try:
            path.unlink()
            fsync_dir(self.path)
        except FileNotFoundError:
            raise SyncItemNotFound(f"{path} is gone", href=href) from None
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def _check(self, path: Path, href: str, etag: str) -> None:
        try:
            current = _etag(path.stat())
        except FileNotFoundError:
            raise SyncItemNotFound(f"{path} is gone", href=href) from None
        if current != etag:
            raise SyncPreconditionFailed(f"{path} changed since it was read", href=href)

    def _write(self, path: Path, data: bytes) -> None:
        try:
            atomic_write(path, data, mode=0o600)
        except OSError as exc:
            raise self._unavailable(exc) from exc
