"""``auth: oauth2`` for an EWS mailbox: the bearer token printed by oauth2_token_command, sent
as ``Authorization: Bearer`` (Exchange with modern authentication); the fake Exchange takes the
tokens a test grants.  A refused token is LoginRefused and the next login asks the command again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from exchangelib.protocol import close_connections

from mailfiler.errors import LoginRefused, SyncTargetUnavailable
from mailfiler.sources.ews import EwsSettings, EwsSource
from mailfiler.sources.ews.contacts import ContactsTarget
from mailfiler.util.secrets import SecretProvider
from tests.servers.ews import EwsServer
from tests.servers.tls import make_tls
from tests.sync.target_contract import item

ALICE = "alice@example.com"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EwsServer]:
    # a bearer token goes over TLS only (oauthlib refuses http://), as with Exchange
    users = [{"smtp": ALICE, "password": "pw", "folders": ["Inbox/Tracked"]}]
    with EwsServer(users, auth={"bearer"}, tls=make_tls(tmp_path)) as fake:
        yield fake
    close_connections()


def settings(server: EwsServer, token_file: Path) -> EwsSettings:
    # the command prints whatever token the file holds now (a refresh by the identity provider)
    secret = SecretProvider("test", oauth2_token_command=["cat", str(token_file)])
    assert server.tls is not None
    return EwsSettings(
        url=server.ews_url, username=ALICE, secret=secret, auth="oauth2", mailbox=ALICE, version="2016",
        ca_file=str(server.tls.ca_file),
    )  # fmt: skip


async def test_a_bearer_token_from_the_command_opens_the_mailbox(server: EwsServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1")
    server.grant_token("tok-1", ALICE)
    source = EwsSource(settings(server, token))
    await source.open()
    try:
        assert "INBOX/Tracked" in await source.list_folders()
    finally:
        await source.close()
    assert all(r.headers.get("authorization") == "Bearer tok-1" for r in server.requests)


async def test_a_refused_token_is_login_refused(server: EwsServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("expired")
    with pytest.raises(LoginRefused):
        await EwsSource(settings(server, token)).open()


async def test_the_sync_targets_log_in_with_the_token(server: EwsServer, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-2")
    target = ContactsTarget(settings(server, token))
    with pytest.raises(SyncTargetUnavailable, match="refused"):
        await target.list()
    server.grant_token("tok-2", ALICE)
    target = ContactsTarget(settings(server, token))
    href, _ = await target.upload(item("contacts", "u1"), uid="u1")
    assert list(await target.list()) == [href]
