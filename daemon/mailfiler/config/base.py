"""Pieces of the config schema that backends and the schema's parts share: the
strict base model, record references, loopback hosts, and how paths in the file
are resolved.  Kept apart from
:mod:`mailfiler.config.schema` so that a backend's config model can import
them while the schema imports the backend registry."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

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


#: an entity type's name
ENTITY_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def parse_ref(value: str) -> tuple[str, str]:
    """Split ``ENTITY:KEY``; raise ValueError with a helpful message."""
    entity, sep, key = value.partition(":")
    if not sep or not entity or not key:
        raise ValueError(f"expected ENTITY:KEY such as account:contoso, got {value!r}")
    if not ENTITY_RE.match(entity):
        raise ValueError(f"entity type {entity!r} must be lower-case letters, digits and _")
    return entity, key


def _check_ref(value: str | None) -> str | None:
    if value is not None:
        parse_ref(value)
    return value


#: an optional ENTITY:KEY reference, checked for shape (the loader checks the entity type)
OptionalRef = Annotated[str | None, AfterValidator(_check_ref)]


def never_track_entry(v: str) -> str:
    v = v.strip().lower()
    if v.startswith("@"):
        if len(v) < 2 or "@" in v[1:] or "/" in v:
            raise ValueError(f"never_track entry {v!r}: a domain is written @example.com")
    elif "@" not in v or v.startswith("@") or v.endswith("@"):
        raise ValueError(f"never_track entry {v!r}: expected an address (a@example.com) or a domain (@example.com)")
    return v
