"""Fixtures for the sync tests: a migrated store on SQLite and PostgreSQL
(as tests/store/conftest.py), a mailbox row, and vdir folders on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailfiler.store import db as storedb
from mailfiler.store.migrations import migrate
from tests.store.helpers import Store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    db = storedb.connect(url)
    try:
        migrate(db)
        yield Store(request.param, url, db, tmp_path / "state")
    finally:
        db.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """SQLite only: for tests about the files, not the database."""
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    db = storedb.connect(url)
    try:
        migrate(db)
        yield Store("sqlite", url, db, tmp_path / "state")
    finally:
        db.close()
