"""Secrets come from files (or systemd credentials), never from the config
text or the environment, and are never logged."""

from __future__ import annotations

import os
from pathlib import Path

from mailfiler.errors import UserError


class SecretUnavailable(UserError):
    """A secret file could not be read."""

    code = "secret-unavailable"


def read_secret(spec: str, *, what: str) -> str:
    """Read a secret from a file.  ``${CREDENTIALS_DIRECTORY}`` (systemd's
    ``LoadCredential=``) and other variables are expanded at read time."""
    if "${CREDENTIALS_DIRECTORY}" in spec and "CREDENTIALS_DIRECTORY" not in os.environ:
        raise SecretUnavailable(
            f"{what}: {spec} names $CREDENTIALS_DIRECTORY, which is only set under systemd with LoadCredential=",
            path=spec,
        )
    path = Path(os.path.expandvars(spec)).expanduser()
    try:
        value = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretUnavailable(f"{what}: cannot read {path}: {exc.strerror}", path=str(path)) from exc
    value = value.rstrip("\r\n")
    if not value:
        raise SecretUnavailable(f"{what}: {path} is empty", path=str(path))
    return value
