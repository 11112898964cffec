"""Distinct connection errors (issues 16 and 21): each way a mailbox can fail to
open is its own class in mailfiler.errors, with its own hint from the one
mapping in mailfiler.cli.errors.  Against the real Dovecot where it can say it;
DNS only through the mapping, since the tests never leave loopback."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from mailfiler import errors as e
from mailfiler.cli.errors import EXIT_UNAVAILABLE, describe, hint_for
from mailfiler.sources.imap import ImapSettings, ImapSource
from mailfiler.sources.imaplink import connect_error
from mailfiler.sources.maildir import MaildirSource
from tests.servers.dovecot import ImapUser
from tests.servers.postgres import free_port
from tests.sources.test_imap_faults import fake_server


def settings(user: ImapUser, tls: str = "none", **kw: object) -> ImapSettings:
    return ImapSettings(**{**user.settings_kwargs(tls), "timeout": 5.0, "connect_timeout": 3.0, **kw})  # type: ignore[arg-type]


async def opening(s: ImapSettings) -> e.MailboxUnavailable:
    source = ImapSource(s)
    with pytest.raises(e.MailboxUnavailable) as info:
        await source.open()
    await source.close()
    return info.value


async def test_a_wrong_password_is_a_refused_login(imap_user: ImapUser) -> None:
    err = await opening(settings(imap_user, password="not-the-Pa55word"))
    assert type(err) is e.LoginRefused and err.code == "login-refused"
    assert "not-the-Pa55word" not in str(err)
    assert "password" in describe(err)[2] and "path" not in describe(err)[2]


async def test_a_refused_login_asks_the_token_command_again(imap_user: ImapUser) -> None:
    asked: list[str] = []

    class Provider:
        def __call__(self) -> str:
            return "wrong"

        def invalidate(self) -> None:
            asked.append("invalidate")

    err = await opening(settings(imap_user, password="", secret=Provider()))
    assert isinstance(err, e.LoginRefused) and asked == ["invalidate"]


@pytest.mark.parametrize("tls", ["implicit", "starttls"])
async def test_an_untrusted_certificate_is_refused_tls(imap_user: ImapUser, tls: str) -> None:
    assert imap_user.server.tls is not None
    err = await opening(settings(imap_user, tls, ca_file=str(imap_user.server.tls.wrong_ca_file)))
    assert type(err) is e.TlsCertificateRefused and err.reason == "tls-untrusted"  # type: ignore[attr-defined]
    assert "ca_file" in describe(err)[2]


async def test_too_many_connections_is_a_busy_server(imap_user: ImapUser) -> None:
    clients = [imap_user.client() for _ in range(10)]  # Dovecot's mail_max_userip_connections
    try:
        err = await opening(settings(imap_user))
    finally:
        for client in clients:
            client.close()
    assert type(err) is e.ServerBusy and err.reason == "too-many-connections"  # type: ignore[attr-defined]
    assert "busy" in describe(err)[2]


async def test_a_closed_port_is_an_unreachable_server() -> None:
    port = free_port()
    err = await opening(ImapSettings("127.0.0.1", port, "nobody", "x", tls="none", connect_timeout=3))
    assert type(err) is e.ServerUnreachable and err.reason == "refused"  # type: ignore[attr-defined]
    assert "connection refused" in str(err) and f"127.0.0.1:{port}" in str(err)
    assert "host and port" in describe(err)[2]


async def test_a_server_that_never_answers_is_unreachable() -> None:
    async with fake_server({}, greeting=None) as port:
        started = time.monotonic()
        err = await opening(ImapSettings("127.0.0.1", port, "u", "p", tls="none", connect_timeout=0.5))
    assert type(err) is e.ServerUnreachable and "did not answer" in str(err)
    assert time.monotonic() - started < 2


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    s = ImapSettings("imap.example.invalid", 993, "alice", "x")
    err = connect_error(socket.gaierror(socket.EAI_NONAME, "Name or service not known"), s)
    assert type(err) is e.ServerUnreachable and err.reason == "dns"  # type: ignore[attr-defined]
    assert "does not resolve" in str(err)


async def test_a_missing_imap_folder_is_folder_missing(imap_user: ImapUser) -> None:
    source = ImapSource(settings(imap_user))
    await source.open()
    try:
        with pytest.raises(e.FolderMissing):
            await source.list_messages("No/Such/Folder")
    finally:
        await source.close()


async def test_a_missing_maildir_is_a_missing_mailbox(tmp_path: Path) -> None:
    with pytest.raises(e.MailboxMissing) as info:
        await MaildirSource(tmp_path / "nope", "maildir++").open()
    assert "does not exist" in str(info.value)


def test_each_error_has_its_own_hint() -> None:
    classes = [e.LoginRefused, e.TlsCertificateRefused, e.ServerBusy, e.ServerUnreachable, e.MailboxMissing,
               e.FolderMissing]  # fmt: skip
    hints = [describe(cls("x"))[2] for cls in classes]
    assert all(hints) and len(set(hints)) == len(hints)
    assert all(describe(cls("x"))[0] == EXIT_UNAVAILABLE for cls in classes[:5])
    # status keeps only the code; the hint comes from the same mapping
    assert [hint_for(cls.code) for cls in classes] == hints
    assert hint_for(None) == "" and hint_for("no-such-code") == ""
