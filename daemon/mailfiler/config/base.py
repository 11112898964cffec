"""Pieces of the config schema that backends share: the strict base model,
loopback hosts, and how paths in the file are resolved.  Kept apart from
:mod:`mailfiler.config.schema` so that a backend's config model can import
them while the schema imports the backend registry."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

#: hosts for which TLS may be turned off or left unverified (a test server)
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def resolve_path(path: Path, base_dir: Path) -> Path:
    """Expand ~, anchor relative paths at *base_dir*, and fold ``..``.

    normpath, not resolve(): symlinks are left alone, as the admin wrote them.
    """
    path = path.expanduser()
    if not path.is_absolute():
        path = base_dir / path
    return Path(os.path.normpath(path))


def secret_path(spec: str | None, base_dir: Path) -> str | None:
    """A secret file's path; ``${VARS}`` (systemd credentials) are expanded when it is read."""
    if spec is None or "$" in spec:
        return spec
    return str(resolve_path(Path(spec), base_dir))
