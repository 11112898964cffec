"""Open the CRM store from a database URL.

SQLite runs in WAL mode with ``synchronous=normal`` (durable at checkpoint,
never corrupt) and a busy timeout so that the daemon and CLI commands can
share one file.  The WAL is checkpointed every 10,000 pages (40 MB) rather
than SQLite's 1,000: a backfill writes every message's text, and with the
default a checkpoint (which copies pages back and fsyncs) ran every few
batches, rewriting the same index pages each time; the store writer's time
per batch drops by about a fifth (bench/imap_backfill.py).  The price is a
wider window of commits that a power loss (not a crash of mailfiler) may
roll back; the cursor rolls back with them, so that mail is tracked again.
PostgreSQL is used through psycopg 3 (``psycopg``, part of every install)
when several daemons share one store.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import peewee

from mailfiler.errors import StoreDriverMissing, StoreUnavailable
from mailfiler.store.models import database_proxy

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": 10_000,
    "foreign_keys": 1,
    "cache_size": -16_000,
    "wal_autocheckpoint": 10_000,
}


def make_database(url: str, *, base_dir: Path | None = None, password: str | None = None) -> peewee.Database:
    """Build (but do not connect) a peewee database for ``url``."""
    if url.startswith("sqlite:///"):
        raw = url[len("sqlite:///") :]
        path = Path(unquote(raw)).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return peewee.SqliteDatabase(str(path), pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    if url.startswith(("postgresql://", "postgres://")):
        require_postgres_driver(url)
        parts = urlparse(url)
        kwargs: dict[str, object] = {}
        if parts.hostname:
            kwargs["host"] = parts.hostname
        if parts.port:
            kwargs["port"] = parts.port
        if parts.username:
            kwargs["user"] = unquote(parts.username)
        if password is not None:
            kwargs["password"] = password
        elif parts.password:
            kwargs["password"] = unquote(parts.password)
        dbname = parts.path.lstrip("/") or "mailfiler"
        # no autorollback=: peewee 4 always runs in autocommit mode (a failed
        # statement outside a transaction leaves no aborted transaction behind)
        # and deprecates the option, which warns on every connect
        # psycopg 3 even where an old psycopg2 is installed too: peewee would pick psycopg2
        return peewee.PostgresqlDatabase(dbname, prefer_psycopg3=True, **kwargs)  # type: ignore[arg-type]
    raise StoreUnavailable(f"unsupported database URL {url!r}", url=url)


def require_postgres_driver(url: str) -> None:
    """Raise :class:`StoreDriverMissing` unless psycopg 3 can be imported.

    peewee only says "driver not found" when it first connects, from deep in a
    traceback; this names the URL and lets ``config check`` find it before."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise StoreDriverMissing(
            f"database {redact(url)} needs the PostgreSQL driver psycopg, which is not installed ({exc})",
            url=redact(url),
        ) from exc


def redact(url: str) -> str:
    """The URL with any password removed, for logs and status."""
    parts = urlparse(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def connect(url: str, *, base_dir: Path | None = None, password: str | None = None) -> peewee.Database:
    """Open the store, bind the models to it, and check it is reachable."""
    db = make_database(url, base_dir=base_dir, password=password)
    if isinstance(db, peewee.SqliteDatabase):
        Path(db.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        db.connect(reuse_if_open=True)
    except peewee.ImproperlyConfigured as exc:  # a driver that imports but is unusable
        raise StoreDriverMissing(f"cannot open the store at {redact(url)}: {exc}", url=redact(url)) from exc
    except peewee.OperationalError as exc:
        raise StoreUnavailable(f"cannot open the store at {redact(url)}: {exc}", url=redact(url)) from exc
    database_proxy.initialize(db)
    return db


def is_sqlite(db: peewee.Database) -> bool:
    return isinstance(db, peewee.SqliteDatabase)


def transaction(db: peewee.Database) -> peewee._atomic:
    """A write transaction.  On SQLite take the write lock up front
    (IMMEDIATE) so two writers never deadlock upgrading read locks."""
    if is_sqlite(db):
        return db.atomic("IMMEDIATE")
    return db.atomic()
