"""The Source contract for the in-memory backend (mailfiler.backends.memory),
the one the tracker, rules and worker tests use where a server adds nothing."""

from __future__ import annotations

import itertools

import pytest

from mailfiler.backends.memory import MemoryMailbox, MemorySource
from tests.contract.source_contract import AdminMessage, Backend, MailboxAdmin, SourceContract

_seen = itertools.count()


class MemoryAdmin(MailboxAdmin):
    """A mail client, through the mailbox's own methods."""

    def __init__(self, box: MemoryMailbox) -> None:
        self.box = box

    async def create_folder(self, folder: str) -> None:
        self.box.create_folder(folder)

    async def put(self, folder: str, data: bytes, *, seen: bool = False) -> AdminMessage:
        return AdminMessage(folder, self.box.put(folder, data))

    async def remove(self, msg: AdminMessage) -> None:
        self.box.remove(msg.folder, str(msg.ref))

    async def move(self, msg: AdminMessage, folder: str) -> AdminMessage:
        return AdminMessage(folder, self.box.move(msg.folder, str(msg.ref), folder))

    async def flag(self, msg: AdminMessage, flags: str = "S") -> AdminMessage:
        return msg  # flags are not kept: a flag change is no change

    async def tag(self, msg: AdminMessage, *tags: str, remove: bool = False) -> None:
        self.box.tag(msg.folder, str(msg.ref), *tags, remove=remove)

    async def snapshot(self) -> object:
        return {
            name: (f.generation, dict(f.messages), list(f.expunged), {k: set(v) for k, v in f.marks.items()})
            for name, f in self.box.folders.items()
        }


class TestMemory(SourceContract):
    watch_latency = 0.5
    quiet_period = 0.2

    @pytest.fixture
    def backend(self) -> Backend:
        box = MemoryMailbox()
        return Backend(MemorySource(box), MemoryAdmin(box), marking=lambda: MemorySource(box, marks=True))

    async def test_a_new_generation_makes_the_token_useless(self, backend: Backend) -> None:
        source, box = backend.source, backend.admin.box  # type: ignore[attr-defined]
        box.put("INBOX", b"Subject: a\r\n\r\nx\r\n")
        listing = await source.list_messages("INBOX")
        assert listing.token is not None
        box.renumber("INBOX")
        assert await source.list_changes("INBOX", listing.token) is None
        assert set((await source.list_messages("INBOX")).messages).isdisjoint(listing.messages)

    async def test_a_failure_set_on_the_mailbox_is_raised(self, backend: Backend) -> None:
        from mailfiler.errors import LoginRefused

        backend.admin.box.failure = LoginRefused("memory: refused")  # type: ignore[attr-defined]
        with pytest.raises(LoginRefused):
            await backend.source.open()
