"""The EWS backend's errors (the fake Exchange): each failure of a mailbox is its own
mailfiler error, so that status gives the right hint; busy answers are waited out as
Exchange asks, up to a cap; a dropped connection is retried once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from exchangelib.protocol import close_connections

from mailfiler.errors import FolderMissing, LoginRefused, MailboxMissing, ServerBusy, ServerUnreachable
from mailfiler.sources.ews import EwsSettings, EwsSource
from mailfiler.util.secrets import SecretProvider
from tests.servers.ews import EwsServer

ALICE = "alice@example.com"


@pytest.fixture
def server() -> Iterator[EwsServer]:
    users = [{"smtp": ALICE, "password": "pw", "folders": ["Inbox/Tracked"]},
             {"smtp": "svc@example.com", "username": "svc", "password": "pw-svc", "impersonate": []}]  # fmt: skip
    with EwsServer(users) as fake:
        yield fake
    close_connections()


def settings(server: EwsServer, password: str = "pw", **kw: object) -> EwsSettings:
    secret = SecretProvider("test", password_command=["printf", password])
    base = EwsSettings(url=server.ews_url, username=ALICE, secret=secret, auth="basic", mailbox=ALICE, version="2016")
    return replace(base, **kw)  # type: ignore[arg-type]


async def test_wrong_password_is_login_refused(server: EwsServer) -> None:
    with pytest.raises(LoginRefused, match="refused the login"):
        await EwsSource(settings(server, "wrong")).open()


async def test_impersonation_without_the_role_names_it(server: EwsServer) -> None:
    source = EwsSource(settings(server, "pw-svc", username="svc", impersonate=True, auth="ntlm"))
    with pytest.raises(LoginRefused, match="ApplicationImpersonation"):
        await source.open()


async def test_unknown_mailbox_is_mailbox_missing(server: EwsServer) -> None:
    with pytest.raises(MailboxMissing):
        await EwsSource(settings(server, mailbox="nobody@example.com")).open()


async def test_closed_port_is_server_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    secret = SecretProvider("test", password_command=["printf", "pw"])
    source = EwsSource(EwsSettings(url=f"http://127.0.0.1:{port}/EWS/Exchange.asmx", username=ALICE, secret=secret,
                                   auth="basic", mailbox=ALICE, version="2016"))  # fmt: skip
    with pytest.raises(ServerUnreachable):
        await source.open()


async def test_busy_is_waited_out_as_asked_then_server_busy_past_the_cap(server: EwsServer) -> None:
    source = EwsSource(settings(server, max_back_off=1.5))
    await source.open()
    server.inject_busy("SyncFolderItems", back_off_ms=600, times=1)
    started = time.monotonic()
    await source.list_messages("INBOX/Tracked")
    assert time.monotonic() - started >= 0.6
    server.throttle_for(10.0, back_off_ms=700, operation="SyncFolderItems")
    before = server.faults.fired["*"]
    with pytest.raises(ServerBusy):
        await source.list_messages("INBOX/Tracked")
    assert server.faults.fired["*"] - before <= 3  # waited as told, then gave up: no hammering


async def test_a_dropped_connection_is_retried_once_and_a_missing_folder_is_folder_missing(server: EwsServer) -> None:
    source = EwsSource(settings(server))
    await source.open()
    item = server.deliver(ALICE, b"Subject: x\r\n\r\nhi\r\n", "Inbox/Tracked")
    server.inject_drop("GetItem", times=1)
    assert await source.fetch("INBOX/Tracked", item) == b"Subject: x\r\n\r\nhi\r\n"
    with pytest.raises(FolderMissing):
        await source.list_messages("INBOX/Nowhere")
    server.delete_folder(ALICE, "Inbox/Tracked")
    with pytest.raises(FolderMissing):
        await source.list_messages("INBOX/Tracked")
