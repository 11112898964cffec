"""Faults: a server that dies, says BYE, stalls or refuses; wrong credentials.

Every IMAP call must end within its timeout with MailboxUnavailable (aioimaplib
itself hangs after a lost connection); the daemon's supervisor then retries.
The server that gets killed here is this module's own, not the session's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from mailfiler.errors import MailboxUnavailable
from mailfiler.sources.base import Change
from mailfiler.sources.imap import ImapSettings, ImapSource
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot
from tests.servers.postgres import free_port

PROMPT = 3.0  # seconds within which a failure must surface


@pytest.fixture(scope="module")
def victim() -> Iterator[DovecotServer]:
    yield from start_dovecot(tls=False)


@pytest.fixture
def victim_user(victim: DovecotServer) -> Iterator[ImapUser]:
    if victim.process is None or victim.process.poll() is not None:
        victim.start()
    user = victim.add_user()
    try:
        yield user
    finally:
        if victim.process is None or victim.process.poll() is not None:
            victim.start()
        victim.remove_user_mail(user.name)


class Watching:
    """``source.watch`` in a task; batches collected; ready once the first
    batch (the initial rescan) has arrived."""

    def __init__(self, source: ImapSource, folders: list[str]) -> None:
        self.source = source
        self.folders = folders
        self.stop = asyncio.Event()
        self.batches: list[list[Change]] = []
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.source.watch(self.folders, self.stop):
            self.batches.append(batch)
            self.ready.set()

    async def started(self, timeout: float = 10.0) -> None:
        ready = asyncio.ensure_future(self.ready.wait())
        done, _ = await asyncio.wait({self.task, ready}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self.task in done:
            self.task.result()
        assert self.ready.is_set(), "watch() did not start"

    async def ends_with(self, exc_type: type[BaseException], within: float) -> BaseException:
        started = time.monotonic()
        done, _ = await asyncio.wait({self.task}, timeout=within)
        assert self.task in done, f"watch() still running {within} s after the fault"
        exc = self.task.exception()
        assert isinstance(exc, exc_type), f"watch() ended with {exc!r}"
        assert time.monotonic() - started <= within
        return exc

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 5)


def settings(user: ImapUser, **kw: object) -> ImapSettings:
    return ImapSettings(**{**user.settings_kwargs(), "timeout": 5.0, "connect_timeout": 3.0, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("use_notify", [True, False], ids=["notify", "idle"])
async def test_a_killed_server_ends_watch_promptly(
    victim: DovecotServer, victim_user: ImapUser, use_notify: bool
) -> None:
    source = ImapSource(settings(victim_user, use_notify=use_notify))
    await source.open()
    watching = Watching(source, ["INBOX"])
    try:
        await watching.started()
        victim.kill()
        exc = await watching.ends_with(MailboxUnavailable, PROMPT)
        assert "127.0.0.1" in str(exc)
        # the command connection is gone too, and says so instead of hanging
        started = time.monotonic()
        with pytest.raises(MailboxUnavailable):
            await source.list_messages("INBOX")
        assert time.monotonic() - started < PROMPT
        # once the server is back, the next call connects afresh
        victim.start()
        assert (await source.list_messages("INBOX")).messages == {}
    finally:
        await watching.close()
        await source.close()


async def test_bye_from_the_server_ends_watch_promptly(victim: DovecotServer, victim_user: ImapUser) -> None:
    source = ImapSource(settings(victim_user))
    await source.open()
    watching = Watching(source, ["INBOX"])
    try:
        await watching.started()
        victim_user.kick()  # doveadm kick: "* BYE" and close
        await watching.ends_with(MailboxUnavailable, PROMPT)
    finally:
        await watching.close()
        await source.close()


async def test_a_server_restart_ends_watch_and_open_works_again(victim: DovecotServer, victim_user: ImapUser) -> None:
    source = ImapSource(settings(victim_user))
    await source.open()
    watching = Watching(source, ["INBOX"])
    try:
        await watching.started()
        victim.restart()  # SIGTERM: Dovecot says BYE to every session
        await watching.ends_with(MailboxUnavailable, PROMPT + 2)
    finally:
        await watching.close()
    await source.close()
    await source.open()
    assert await source.folder_exists("INBOX")
    await source.close()


async def test_wrong_password_names_user_and_server_but_not_the_password(imap_user: ImapUser) -> None:
    s = ImapSettings(**{**imap_user.settings_kwargs(), "password": "not-the-Pa55word"})  # type: ignore[arg-type]
    source = ImapSource(s)
    started = time.monotonic()
    with pytest.raises(MailboxUnavailable) as info:
        await source.open()
    assert time.monotonic() - started < PROMPT
    message = str(info.value)
    assert imap_user.name in message
    assert f"127.0.0.1:{imap_user.server.port}" in message
    assert "not-the-Pa55word" not in message
    assert "AUTHENTICATIONFAILED" in message
    assert info.value.reason == "auth-failed"  # type: ignore[attr-defined]


async def test_a_closed_port_is_unavailable() -> None:
    port = free_port()
    source = ImapSource(ImapSettings("127.0.0.1", port, "nobody", "x", tls="none", connect_timeout=3))
    with pytest.raises(MailboxUnavailable, match=f"127.0.0.1:{port}"):
        await source.open()


@contextlib.asynccontextmanager
async def fake_server(script: dict[bytes, bytes], greeting: bytes | None = b"* OK fake\r\n") -> AsyncIterator[int]:
    """A loopback server that greets (or not) and answers the commands whose
    name is in ``script`` (``{tag}`` is filled in); any other command is left
    unanswered: a server that stalls."""

    handlers: set[asyncio.Task] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            if greeting:
                writer.write(greeting)
            while line := await reader.readline():
                tag, _, rest = line.decode().strip().partition(" ")
                name = rest.split(" ", 1)[0].upper().encode()
                if name in script:
                    writer.write(script[name].replace(b"{tag}", tag.encode()))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


async def test_a_server_that_never_greets() -> None:
    async with fake_server({}, greeting=None) as port:
        source = ImapSource(ImapSettings("127.0.0.1", port, "u", "p", tls="none", connect_timeout=0.5))
        started = time.monotonic()
        with pytest.raises(MailboxUnavailable, match="did not answer"):
            await source.open()
        assert time.monotonic() - started < 2


async def test_a_server_that_stalls_after_login() -> None:
    script = {
        b"CAPABILITY": b"* CAPABILITY IMAP4rev1 IDLE\r\n{tag} OK done\r\n",
        b"LOGIN": b"{tag} OK logged in\r\n",
        b"LIST": b'* LIST (\\Noselect) "/" ""\r\n{tag} OK done\r\n',
        b"LOGOUT": b"* BYE\r\n{tag} OK bye\r\n",
    }
    async with fake_server(script) as port:
        source = ImapSource(ImapSettings("127.0.0.1", port, "u", "p", tls="none", timeout=0.5, connect_timeout=2))
        await source.open()
        started = time.monotonic()
        with pytest.raises(MailboxUnavailable, match="EXAMINE"):
            await source.list_messages("INBOX")  # EXAMINE gets no answer
        assert time.monotonic() - started < 2
        await source.close()


async def test_too_many_connections_is_told_apart_from_a_wrong_password(imap_user: ImapUser) -> None:
    """Dovecot allows 10 connections per user and IP (mail_max_userip_connections)."""
    clients = [imap_user.client() for _ in range(10)]
    try:
        with pytest.raises(MailboxUnavailable) as info:
            await ImapSource(settings(imap_user)).open()
        assert info.value.reason == "too-many-connections"  # type: ignore[attr-defined]
        assert imap_user.name in str(info.value)
    finally:
        for client in clients:
            client.close()


def test_the_password_is_not_in_the_settings_repr() -> None:
    s = ImapSettings("imap.example.org", 993, "alice", "hunter2-secret")
    assert "hunter2-secret" not in repr(s)
    assert "hunter2-secret" not in repr(ImapSource(s))
