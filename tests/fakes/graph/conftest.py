"""Fixtures for the Graph fake's own tests: a tenant with one user and one app on loopback HTTPS."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.servers.graph import GraphFake
from tests.servers.tls import Tls

UPN = "adele@contoso.onmicrosoft.com"
APP_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
SECRET = "not-a-real-secret"


@pytest.fixture
def graph(graph_tls: Tls) -> Iterator[GraphFake]:
    with GraphFake(graph_tls) as fake:
        fake.add_user(UPN, "Adele Vance", ["Inbox/Clients/Acme", "Inbox/Clients/Öresund"])
        fake.identity.register_app(APP_ID, secret=SECRET, public=True)
        yield fake


def verify(graph: GraphFake) -> ssl.SSLContext:
    assert graph.tls is not None
    return ssl.create_default_context(cafile=str(graph.tls.ca_file))


def app_token(graph: GraphFake, client_id: str = APP_ID, secret: str = SECRET) -> str:
    resp = httpx.post(f"{graph.authority}/oauth2/v2.0/token", verify=verify(graph), timeout=10, data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        "scope": "https://graph.microsoft.com/.default",
    })  # fmt: skip
    resp.raise_for_status()
    return str(resp.json()["access_token"])


@pytest.fixture
def api(graph: GraphFake) -> Iterator[httpx.Client]:
    """An app-only httpx client on /v1.0 (as the Graph backend will be)."""
    headers = {"Authorization": f"Bearer {app_token(graph)}"}
    with httpx.Client(base_url=f"{graph.url}/v1.0", verify=verify(graph), headers=headers, timeout=10) as client:
        yield client


def user_path(graph: GraphFake) -> str:
    return f"/users/{graph.mailbox(UPN).id}"


def shape(value: Any) -> Any:
    """A JSON value reduced to its structure: keys and nesting kept, scalars as their type name."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


def covers(ours: Any, documented: Any) -> bool:
    """Every key of the documented structure is in ours, with the same kind of value."""
    if isinstance(documented, dict):
        return isinstance(ours, dict) and all(k in ours and covers(ours[k], v) for k, v in documented.items())
    if isinstance(documented, list):
        return isinstance(ours, list) and (not documented or not ours or covers(ours[0], documented[0]))
    return ours == documented or ours == "NoneType"
