"""Fixtures for the sync tests: a migrated store on SQLite and PostgreSQL
(as tests/store/conftest.py), a mailbox row, and vdir folders on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.conftest import store  # noqa: F401 - the same fixture, on SQLite and PostgreSQL
from tests.store.helpers import Store, migrated_store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """SQLite only: for tests about the files, not the database."""
    with migrated_store("sqlite", f"sqlite:///{tmp_path / 'store.sqlite3'}", tmp_path) as opened:
        yield opened
