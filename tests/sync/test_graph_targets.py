"""The target contract on a Microsoft 365 mailbox's contacts and calendar (the Graph fake),
and what only Graph does: Outlook's edits read back into the written card, extended
properties keeping the UID, a 412, an expired delta link."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailfiler.sources.target import Target
from tests.graph.helpers import sync_target
from tests.servers.graph import GraphFake
from tests.sync.graphrig import graph
from tests.sync.target_contract import TargetContract, kind

__all__ = ["graph", "kind"]

#: the contract's events are in January 2024: a window far enough back to hold them
WINDOW = {"days_back": 3650, "days_ahead": 365}


class TestGraph(TargetContract):
    @pytest.fixture
    async def target(self, graph: GraphFake, kind: str) -> AsyncIterator[Target]:
        t = sync_target(graph, kind, **(WINDOW if kind == "calendar" else {}))
        await t.open()
        yield t
        await t.close()
