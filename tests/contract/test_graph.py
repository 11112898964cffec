"""The Source contract for the Microsoft Graph backend, against the Graph fake
(tests/servers/graph/: Microsoft 365 cannot be reached from here).

The admin is Outlook and the user acting through the fake's test-facing API
(deliver, move, delete, mark read, categories); the source signs in app-only
with a client secret, as an organisation's registration would."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailfiler.sources.graph.source import GraphSource
from tests.contract.source_contract import AdminMessage, Backend, MailboxAdmin, SourceContract
from tests.graph.helpers import CATEGORIES, UPN, source, tenant
from tests.servers.graph import GraphFake
from tests.servers.tls import Tls


class GraphAdmin(MailboxAdmin):
    def __init__(self, graph: GraphFake) -> None:
        self.graph = graph

    async def create_folder(self, folder: str) -> None:
        self.graph.make_folder(UPN, folder)

    async def put(self, folder: str, data: bytes, *, seen: bool = False) -> AdminMessage:
        msg = self.graph.deliver(UPN, folder, data)
        if seen:
            self.graph.mark_read(UPN, msg)
        return AdminMessage(folder, msg)

    async def remove(self, msg: AdminMessage) -> None:
        self.graph.delete(UPN, msg.ref)  # type: ignore[arg-type]

    async def move(self, msg: AdminMessage, folder: str) -> AdminMessage:
        return AdminMessage(folder, self.graph.move(UPN, msg.ref, folder))  # type: ignore[arg-type]

    async def flag(self, msg: AdminMessage, flags: str = "S") -> AdminMessage:
        if "S" in flags:
            self.graph.mark_read(UPN, msg.ref)  # type: ignore[arg-type]
        if "F" in flags:  # Outlook's nearest to a flag the fake keeps: a category the user sets
            self.graph.set_categories(UPN, msg.ref, ["Red category"])  # type: ignore[arg-type]
        return msg

    async def tag(self, msg: AdminMessage, *tags: str, remove: bool = False) -> None:
        """Outlook's categories, set or cleared on the message (a PATCH as Graph records it)."""
        now = list(msg.ref.categories)  # type: ignore[attr-defined]
        if remove:
            gone = {t.lower() for t in tags}
            new = [c for c in now if c.lower() not in gone]
        else:
            new = [*now, *(t for t in tags if t.lower() not in {c.lower() for c in now})]
        self.graph.set_categories(UPN, msg.ref, new)  # type: ignore[arg-type]

    async def snapshot(self) -> object:
        box = self.graph.mailbox(UPN)
        with box.tenant.lock:
            return sorted(
                (m.immutable_id, m.folder_id, m.mime, m.is_read, tuple(m.categories), m.change_key)
                for m in box.messages.values()
            )


class TestGraph(SourceContract):
    # polling: 0.1 s after a change, stretching to 0.3 s when quiet
    watch_latency = 2.0
    quiet_period = 1.0
    watch_ready_timeout = 10.0

    @pytest.fixture
    def backend(self, graph_tls: Tls) -> Iterator[Backend]:
        with GraphFake(graph_tls) as graph:
            tenant(graph)
            # the contract's mailbox has an INBOX and nothing else it names; Exchange makes an Archive
            graph.delete_folder(UPN, "Archive")
            yield Backend(source(graph), GraphAdmin(graph), marking=lambda: source(graph, categories=CATEGORIES))

    async def test_marks_are_outlook_categories(self, backend: Backend) -> None:
        src = backend.source
        admin = backend.admin
        assert isinstance(admin, GraphAdmin) and isinstance(src, GraphSource)
        await src.open()
        marker = source(admin.graph, categories=CATEGORIES)
        await marker.open()
        try:
            msg = (await admin.put("INBOX", b"Subject: x\r\nMessage-ID: <c@x>\r\n\r\nbody\r\n")).ref
            admin.graph.set_categories(UPN, msg, ["Blue category"])  # the user's own stays
            (sid,) = (await src.list_messages("INBOX")).messages
            assert await marker.mark("INBOX", [sid], "failed") == 1
            assert msg.categories == ["Blue category", CATEGORIES[1]]
            assert await marker.mark("INBOX", [sid], "tracked") == 1
            assert msg.categories == ["Blue category", CATEGORIES[0]]
            assert not msg.is_read  # never marked read
        finally:
            await marker.close()
            await src.close()
