"""Shared fixtures. Server fixtures live in tests/servers/; import them here to share them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers.postgres import fresh_postgres_url, postgres_server, postgres_url
from tests.servers.tls import Tls, make_tls

__all__ = ["fresh_postgres_url", "postgres_server", "postgres_url"]
pytest_plugins = ("tests.servers.dovecot",)  # dovecot, imap_user fixtures and the dovecot marker

_POSTGRES_FIXTURES = {"postgres_server", "postgres_url", "fresh_postgres_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use a PostgreSQL fixture get the `postgres` marker, so `-m "not postgres"` works.
    for item in items:
        if _POSTGRES_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def graph_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A CA and a loopback certificate for the fake Graph (and msal's authority on it)."""
    return make_tls(Path(tmp_path_factory.mktemp("graph-tls")))
