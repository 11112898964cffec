"""TLS: implicit (IMAPS) and STARTTLS against Dovecot with a test CA in ca_file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailfiler.errors import MailboxUnavailable
from mailfiler.sources.imap import ImapSettings, ImapSource
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot


def source_for(user: ImapUser, tls: str, **kw: object) -> ImapSource:
    return ImapSource(ImapSettings(**{**user.settings_kwargs(tls), "connect_timeout": 5.0, **kw}))  # type: ignore[arg-type]


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_tls_with_the_right_ca(imap_user: ImapUser, tls: str) -> None:
    with imap_user.client() as client:
        client.append("INBOX", b"Subject: over TLS\r\n\r\nsecret\r\n")
    source = source_for(imap_user, tls)
    await source.open()
    try:
        (sid,) = (await source.list_messages("INBOX")).messages
        assert await source.fetch("INBOX", sid) == b"Subject: over TLS\r\n\r\nsecret\r\n"
        # after STARTTLS the capabilities are asked for again: the post-login list
        assert "STARTTLS" not in source.capabilities
        assert "IDLE" in source.capabilities
        conn = source._conn
        assert conn is not None and conn.client is not None
        tls_object = conn.client.protocol.transport.get_extra_info("ssl_object")
        assert tls_object is not None and tls_object.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        await source.close()


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_a_wrong_ca_is_refused_clearly(imap_user: ImapUser, tls: str) -> None:
    assert imap_user.server.tls is not None
    source = source_for(imap_user, tls, ca_file=str(imap_user.server.tls.wrong_ca_file))
    with pytest.raises(MailboxUnavailable) as info:
        await source.open()
    message = str(info.value)
    assert "not trusted" in message and "ca_file" in message
    assert "127.0.0.1" in message
    assert info.value.reason == "tls-untrusted"  # type: ignore[attr-defined]


async def test_the_system_store_does_not_trust_a_private_ca(imap_user: ImapUser) -> None:
    with pytest.raises(MailboxUnavailable, match="not trusted"):
        await source_for(imap_user, "implicit", ca_file=None).open()


async def test_verification_can_be_turned_off_for_a_loopback_test_server(imap_user: ImapUser) -> None:
    assert imap_user.server.tls is not None
    source = source_for(imap_user, "implicit", ca_file=str(imap_user.server.tls.wrong_ca_file), verify_tls=False)
    await source.open()
    try:
        assert await source.folder_exists("INBOX")
    finally:
        await source.close()


@pytest.fixture(scope="module")
def no_tls_dovecot() -> Iterator[DovecotServer]:
    yield from start_dovecot(tls=False)


async def test_starttls_on_a_server_without_it(no_tls_dovecot: DovecotServer) -> None:
    user = no_tls_dovecot.add_user()
    source = ImapSource(ImapSettings(**{**user.settings_kwargs(), "tls": "starttls"}))  # type: ignore[arg-type]
    with pytest.raises(MailboxUnavailable, match="does not offer STARTTLS"):
        await source.open()
