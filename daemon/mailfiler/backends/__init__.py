"""The mailbox backend registry: a backend is one module plus one line in
:data:`BACKENDS`.

A mailbox's config names its backend by a key (``maildir:``, ``imap:``,
``memory:``; later ``ews:`` and ``graph:``): exactly one of the registry's
kinds.  Everything the rest of mailfiler needs to know about a backend comes
from its :class:`Backend` entry, so config, service, sync and CLI code never
branch on a backend's name (``tests/test_backend_boundaries.py`` keeps it so).

A backend module defines ``BACKEND = Backend(...)`` and imports only light
modules at import time (the config schema imports every backend module to
build the mailbox model); its Source and network libraries are imported in
the factory.  See ``docs/backends.md`` for writing one.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailfiler.sources.base import Source
    from mailfiler.sources.inboxrules import RulesBackend
    from mailfiler.sources.target import Target

#: kind -> the module holding its ``BACKEND``.  The one line a new backend adds.
BACKENDS: dict[str, str] = {
    "maildir": "mailfiler.backends.maildir",
    "imap": "mailfiler.backends.imap",
    "memory": "mailfiler.backends.memory",
    "graph": "mailfiler.backends.graph",
    "ews": "mailfiler.backends.ews",
}


def _no_identity(value: Any, base_dir: Path) -> Hashable | None:
    return None


def _no_targets(mailbox: Any, base_dir: Path) -> list[Target]:
    return []


def _no_problems(mailbox: Any) -> list[str]:
    return []


def _same(value: Any, base_dir: Path) -> Any:
    return value


async def _list_with_source(backend: Backend, mailbox: Any) -> list[str]:
    source = backend.source(mailbox)
    await source.open()
    try:
        return await source.list_folders()
    finally:
        await source.close()


@dataclass(frozen=True)
class Backend:
    """What mailfiler knows about one kind of mailbox.

    Every callable takes the validated mailbox config (``schema.Mailbox``);
    ``mailbox.backend_config`` is the value under the backend's key."""

    #: the mailbox config key, and the name shown in status (``Mailbox.backend``)
    kind: str
    #: the type of the value under the key (a pydantic model, or e.g. Path)
    config: Any
    #: what the key is, for the schema's description
    description: str
    #: a Source for the mailbox (not opened)
    source: Callable[[Any], Source]
    #: where the mailbox is, for ``status`` and logs; never holds a secret
    location: Callable[[Any], str]
    #: the config value with its paths made absolute (relative to the config file's folder)
    resolve: Callable[[Any, Path], Any] = _same
    #: from the raw (unvalidated) value: what two mailboxes must not share (e.g. a
    #: Maildir's resolved path), or None; raise ValueError for a problem at the key
    identity: Callable[[Any, Path], Hashable | None] = _no_identity
    #: sync targets (contacts, calendar) the backend brings itself, besides ``sync:``; the
    #: engine syncs each as a main collection, under the mailbox's ``sync:`` policies
    targets: Callable[[Any, Path], list[Target]] = _no_targets
    #: what ``config check`` finds wrong on this machine with a valid config (a
    #: Maildir root that does not exist): one sentence each; the daemon starts anyway
    check: Callable[[Any], list[str]] = _no_problems
    #: the mailbox in a sentence: "a Maildir has none"
    noun: str = "this mailbox"
    #: the mailbox's folders ("/"-separated); default: open a Source and list
    list_folders: Callable[[Any], Awaitable[list[str]]] | None = None
    #: the mailbox's inbox rules on its server (issue 20): (mailbox, the folder hierarchy
    #: separator its opened Source reports, or None) -> a RulesBackend that reads them and
    #: writes mailfiler's own (Sieve over ManageSieve, EWS inbox rules, Graph messageRules);
    #: None: the mailbox has no rules on a server
    server_rules: Callable[[Any, str | None], RulesBackend] | None = None
    #: what is wrong with a tag name (``track_tags:``) on this backend, in a sentence, or
    #: None when it is fine: an IMAP keyword is one atom, an Outlook category may hold
    #: spaces.  None: the backend has no tags, and ``track_tags:`` is refused
    tag_name: Callable[[str], str | None] | None = None
    #: a configured folder path as the backend's listings spell it, so that a tracked
    #: folder is one name everywhere (EWS and Graph list the Inbox as ``INBOX`` and take
    #: ``Inbox/Clients`` for it); None: paths are taken as written
    folder_name: Callable[[str], str] | None = None

    async def folders(self, mailbox: Any) -> list[str]:
        if self.list_folders is not None:
            return await self.list_folders(mailbox)
        return await _list_with_source(self, mailbox)


@cache
def registry() -> dict[str, Backend]:
    """Every registered backend, by kind."""
    out: dict[str, Backend] = {}
    for kind, module in BACKENDS.items():
        backend: Backend = importlib.import_module(module).BACKEND
        assert backend.kind == kind, f"{module} registers {backend.kind!r}, not {kind!r}"
        out[kind] = backend
    return out


def backend_of(mailbox: Any) -> Backend:
    """The registry entry of a validated mailbox config."""
    return registry()[mailbox.backend]


def make_source(mailbox: Any) -> Source:
    """A Source for a validated mailbox config (not opened)."""
    return backend_of(mailbox).source(mailbox)


__all__ = ["BACKENDS", "Backend", "backend_of", "make_source", "registry"]

# The schema builds its mailbox model from this registry at import time, and the
# backend modules import the config package: importing the schema here, once
# the registry is defined, makes every import order end in the same state.
import mailfiler.config.schema  # noqa: E402,F401
