"""Secrets come from files (or systemd credentials), never from the config
text or the environment, and are never logged."""

from __future__ import annotations

import os
import subprocess
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


def run_secret_command(argv: list[str], *, what: str, timeout: float = 30.0) -> str:
    """Run a program (no shell) that prints a secret, e.g. a password manager
    or an OAuth2 token helper; return its first output line.  Its output is
    never logged, nor its error output (it might echo the secret)."""
    try:
        # argv from the admin's config, never a shell
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise SecretUnavailable(f"{what}: program {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise SecretUnavailable(f"{what}: {argv[0]} did not finish within {timeout:g} s") from None
    except OSError as exc:
        raise SecretUnavailable(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        raise SecretUnavailable(f"{what}: {argv[0]} exited with status {done.returncode}")
    value = done.stdout.split("\n", 1)[0].rstrip("\r")
    if not value:
        raise SecretUnavailable(f"{what}: {argv[0]} printed nothing")
    return value
