"""What ``config check`` verifies beyond the schema: the things a valid file
can still get wrong on this machine.

Kept out of config loading on purpose: the daemon must start (and report in
``status``) while, say, a Maildir is unmounted, but an admin who runs
``config check`` wants to hear about it before starting anything."""

from __future__ import annotations

import sys

from mailfiler.backends import backend_of
from mailfiler.config.loader import LoadedConfig
from mailfiler.errors import StoreDriverMissing


def environment_problems(loaded: LoadedConfig) -> list[str]:
    """One sentence per problem, each starting with the config file's path."""
    from mailfiler.store.db import require_postgres_driver

    cfg = loaded.config
    problems: list[str] = []
    if cfg.database.startswith(("postgresql://", "postgres://")):
        try:
            require_postgres_driver(cfg.database)
        except StoreDriverMissing as exc:
            problems.append(f"{exc}; install it: {sys.executable} -m pip install 'psycopg[binary]'")
    for mb in cfg.mailboxes:
        problems.extend(f"mailbox {mb.name}: {p}" for p in backend_of(mb).check(mb))
    return [f"{loaded.path}: {p}" for p in problems]
