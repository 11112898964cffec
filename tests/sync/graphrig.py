"""Sync tests against a Microsoft 365 mailbox: the Graph fake on loopback HTTPS with the
test user, and a sync :class:`Rig` whose contacts and calendar are that mailbox's."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.graph.helpers import UPN, connection, sync_target, tenant
from tests.servers.graph import GraphFake
from tests.servers.graph.calendar import Event
from tests.servers.graph.model import Contact
from tests.servers.tls import Tls
from tests.store.helpers import Store
from tests.sync.helpers import Rig, make_mailbox


@pytest.fixture
def graph(graph_tls: Tls) -> Iterator[GraphFake]:
    with GraphFake(graph_tls) as fake:
        tenant(fake)
        yield fake


@pytest.fixture
async def grig(store: Store, tmp_path: Path, graph: GraphFake) -> AsyncIterator[Rig]:
    """The engine syncing the CRM with the test user's Outlook contacts and calendar."""
    conn = connection(graph)
    contacts, calendar = sync_target(graph, "contacts", conn=conn), sync_target(graph, "calendar", conn=conn)
    yield Rig(store.db, tmp_path, make_mailbox(), contacts_target=contacts, calendar_target=calendar)
    await contacts.close()
    await calendar.close()


def outlook_contacts(graph: GraphFake) -> dict[str, Contact]:
    """The user's contacts in Outlook, by display name."""
    return {str(c.fields.get("displayName")): c for c in graph.mailbox(UPN).contacts.values()}


def outlook_events(graph: GraphFake) -> dict[str, Event]:
    return {str(e.fields.get("subject")): e for e in graph.calendar(UPN).events.values()}


def requests_of(rig: Rig) -> Any:
    target: Any = rig.contacts_target
    return target.connection.client
