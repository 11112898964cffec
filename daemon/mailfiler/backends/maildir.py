"""The Maildir backend's registry entry: ``maildir: PATH`` (with the
mailbox's ``layout:``), read by :class:`mailfiler.sources.maildir.MaildirSource`."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

from mailfiler.backends import Backend
from mailfiler.config.base import resolve_path


def _source(mailbox: Any) -> Any:
    from mailfiler.sources.maildir import MaildirSource

    return MaildirSource(mailbox.backend_config, mailbox.layout)


def _identity(value: Any, base_dir: Path) -> Hashable | None:
    if isinstance(value, str) and not value.strip():
        # pydantic would turn "" into Path("."), silently the config's own folder
        raise ValueError("maildir must not be empty")
    return str(resolve_path(Path(value), base_dir)) if isinstance(value, str) else None


def _check(mailbox: Any) -> list[str]:
    root: Path = mailbox.backend_config
    if not root.exists():
        return [
            f"maildir {root} does not exist (mailfiler creates missing folders inside a mailbox, never the"
            f" mailbox itself); check the path, or create it: mkdir -p {root}"
        ]
    if not root.is_dir():
        return [f"maildir {root} is not a directory"]
    return []


BACKEND = Backend(
    kind="maildir",
    config=Path,
    description="Root of a local Maildir (layout: maildir++ or fs).",
    noun="a Maildir",
    source=_source,
    location=lambda mailbox: str(mailbox.backend_config),
    resolve=lambda value, base_dir: resolve_path(value, base_dir),
    identity=_identity,
    check=_check,
)
