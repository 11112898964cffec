"""Content-addressed attachment files under ``state_dir/blobs``.

A blob is written (and fsynced) before the transaction that refers to it,
so a crash can leave an unreferenced blob but never a row without its file.
The same bytes are stored once, whatever message carries them."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mailfiler.util.fsio import atomic_write


class BlobStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "blobs"

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if not target.exists():
            atomic_write(target, data)
        return digest

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()
