"""The Source contract for the EWS backend, against the fake Exchange (tests/servers/ews).

Two ways in, each running the whole contract: the user's own login (Basic),
and a service account impersonating the mailbox (NTLM), as a server-side
deployment connects.  The admin acts as Outlook through the fake's test API
(deliver, move, delete, read flags), so what it does reaches the Source only
over EWS."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count

import pytest
from exchangelib.protocol import close_connections

from mailfiler.sources.ews import EwsSettings, EwsSource
from mailfiler.util.secrets import SecretProvider
from tests.contract.source_contract import AdminMessage, Backend, MailboxAdmin, SourceContract
from tests.servers.ews import EwsServer

_users = count()


def fake_path(folder: str) -> str:
    """The fake's paths name the Inbox as Exchange does."""
    parts = folder.split("/")
    if parts[0].upper() == "INBOX":
        parts[0] = "Inbox"
    return "/".join(parts)


class EwsAdmin(MailboxAdmin):
    def __init__(self, server: EwsServer, smtp: str) -> None:
        self.server = server
        self.smtp = smtp

    async def create_folder(self, folder: str) -> None:
        self.server.create_folder(self.smtp, fake_path(folder))

    async def put(self, folder: str, data: bytes, *, seen: bool = False) -> AdminMessage:
        return AdminMessage(folder, self.server.deliver(self.smtp, data, fake_path(folder), is_read=seen))

    async def remove(self, msg: AdminMessage) -> None:
        self.server.delete_item(str(msg.ref))

    async def move(self, msg: AdminMessage, folder: str) -> AdminMessage:
        return AdminMessage(folder, self.server.move_item(str(msg.ref), fake_path(folder)))

    async def flag(self, msg: AdminMessage, flags: str = "S") -> AdminMessage:
        if "S" in flags:
            self.server.set_read(str(msg.ref))
        if "F" in flags:  # a follow-up flag is a property change: a new ChangeKey, nothing else
            self.server.touch_item(str(msg.ref))
        return msg

    async def tag(self, msg: AdminMessage, *tags: str, remove: bool = False) -> None:
        """Outlook's categories: set or cleared on the item (UpdateItem as Exchange records it)."""
        now = self.server.item(str(msg.ref)).categories
        if remove:
            gone = {t.lower() for t in tags}
            new = [c for c in now if c.lower() not in gone]
        else:
            new = [*now, *(t for t in tags if t.lower() not in {c.lower() for c in now})]
        self.server.set_categories(str(msg.ref), new)

    async def snapshot(self) -> object:
        with self.server.store.lock:
            mailbox = self.server.store.mailbox(self.smtp)
            return sorted(
                (f.id, f.name, i.id, i.change_key, i.is_read, tuple(i.categories), i.mime)
                for f in mailbox.folders.values()
                for i in f.items.values()
            )


def secret(value: str) -> SecretProvider:
    return SecretProvider("test", password_command=["printf", value])


@pytest.fixture(scope="module")
def ews_server() -> Iterator[EwsServer]:
    with EwsServer(
        [{"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": ["*"]}]
    ) as server:
        # a stream the client cut holds its slot (3 per account) until the server's next write:
        # frequent heartbeats free the slots of the many short watches of the suite
        server.hub.heartbeat = 0.5
        yield server
    close_connections()


def ews_backend(server: EwsServer, *, impersonate: bool) -> Backend:
    smtp = f"user{next(_users)}@example.com"
    server.add_user(smtp, password="pw-user")
    if impersonate:
        settings = EwsSettings(url=server.ews_url, username="svc", secret=secret("pw-svc"), auth="ntlm",
                               mailbox=smtp, impersonate=True, version="2016")  # fmt: skip
    else:
        settings = EwsSettings(url=server.ews_url, username=smtp, secret=secret("pw-user"), auth="basic",
                               mailbox=smtp, version="2016")  # fmt: skip
    marking = EwsSettings(**{**settings.__dict__, "categories": ("Tracked in CRM", "Not tracked (see CRM)")})
    return Backend(EwsSource(settings), EwsAdmin(server, smtp), marking=lambda: EwsSource(marking))


class EwsContract(SourceContract):
    watch_latency = 2.0
    quiet_period = 0.8
    watch_ready_timeout = 10.0


class TestEwsOwnLogin(EwsContract):
    @pytest.fixture
    def backend(self, ews_server: EwsServer) -> Backend:
        return ews_backend(ews_server, impersonate=False)


class TestEwsImpersonation(EwsContract):
    @pytest.fixture
    def backend(self, ews_server: EwsServer) -> Backend:
        return ews_backend(ews_server, impersonate=True)
