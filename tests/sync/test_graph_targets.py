"""The target contract on a Microsoft 365 mailbox's contacts and calendar (the Graph fake),
and what only Graph does: Outlook's edits read back into the written card, extended
properties keeping the UID, a 412, an expired delta link."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailfiler.sources.target import Target
from tests.graph.helpers import sync_target, tenant
from tests.servers.graph import GraphFake
from tests.servers.tls import Tls, make_tls
from tests.sync.target_contract import TargetContract, kind

__all__ = ["kind"]

#: the contract's events are in January 2024: a window far enough back to hold them
WINDOW = {"days_back": 3650, "days_ahead": 365}


@pytest.fixture(scope="module")
def graph_tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    return make_tls(Path(tmp_path_factory.mktemp("graph-tls")))


@pytest.fixture
def graph(graph_tls: Tls) -> Iterator[GraphFake]:
    with GraphFake(graph_tls) as fake:
        tenant(fake)
        yield fake


class TestGraph(TargetContract):
    @pytest.fixture
    async def target(self, graph: GraphFake, kind: str) -> AsyncIterator[Target]:
        t = sync_target(graph, kind, **(WINDOW if kind == "calendar" else {}))
        await t.open()
        yield t
        await t.close()
