"""Graph backend tests: a GraphFake tenant, a mailbox in it, and GraphSources signed in to it."""

from __future__ import annotations

import dataclasses
from typing import Any

from mailfiler.sources.graph.auth import SignIn
from mailfiler.sources.graph.source import GraphSettings, GraphSource
from tests.servers.graph import GraphFake

UPN = "adele@contoso.onmicrosoft.com"
APP_ID = "6731de76-14a6-49ae-97bc-6eba6914391e"
SECRET = "not-a-real-secret"
CATEGORIES = ("Tracked in CRM", "Not tracked (see CRM)")


def sign_in(graph: GraphFake, **overrides: Any) -> SignIn:
    assert graph.tls is not None
    base = SignIn(
        tenant=graph.tenant.id,
        client_id=APP_ID,
        authority=graph.url,
        secret=lambda: SECRET,
        ca_file=str(graph.tls.ca_file),
        timeout=10.0,
    )
    return dataclasses.replace(base, **overrides)


def settings(graph: GraphFake, **overrides: Any) -> GraphSettings:
    assert graph.tls is not None
    base = GraphSettings(
        sign_in=sign_in(graph),
        user=UPN,
        graph_root=f"{graph.url}/v1.0",
        ca_file=str(graph.tls.ca_file),
        timeout=15.0,
        poll_min=0.1,
        poll_max=0.3,
    )
    return dataclasses.replace(base, **overrides)


def source(graph: GraphFake, **overrides: Any) -> GraphSource:
    return GraphSource(settings(graph, **overrides))


def tenant(graph: GraphFake, folders: list[str] = ()) -> GraphFake:  # type: ignore[assignment]
    """The test user and the app (a secret, and a public client for device code)."""
    graph.add_user(UPN, "Adele Vance", list(folders))
    graph.identity.register_app(APP_ID, secret=SECRET, public=True)
    return graph


def connection(graph: GraphFake, **overrides: Any) -> Any:
    """The shared Graph client of a mailbox's sync-back targets."""
    from mailfiler.sources.graph.targets import GraphConnection

    return GraphConnection(settings(graph, **overrides))


def sync_target(graph: GraphFake, kind: str, *, conn: Any = None, **window: Any) -> Any:
    """A sync-back target of the test user (not opened); calendar ``window`` as (days back, days ahead)."""
    from mailfiler.sources.graph.contacts import GraphContacts

    conn = conn or connection(graph)
    if kind == "contacts":
        return GraphContacts(conn, f"graph://{UPN}/contacts")
    from mailfiler.sources.graph.calendar import GraphCalendar

    return GraphCalendar(conn, f"graph://{UPN}/calendar", **window)
