"""Fixtures for the store tests: every test runs on SQLite and on PostgreSQL.

``store`` is a connected, migrated store (the models are bound to it through
the DatabaseProxy). SQLite lives in ``tmp_path``; PostgreSQL gets a fresh
database per test from ``fresh_postgres_url`` and is marked ``postgres``, so
``-m "not postgres"`` leaves only the SQLite half.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.helpers import Store, migrated_store


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    with migrated_store(request.param, url, tmp_path) as store:
        yield store
