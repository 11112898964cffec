"""The ManageSieve client against misbehaving servers on loopback (small asyncio
servers written here): every fault is a mailfiler error, never a hang."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from mailfiler.errors import ServerRulesError, ServerRulesUnavailable, ServerRulesUnsupported
from mailfiler.sources.sieve.managesieve import ManageSieve, SieveSettings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
CAPS = b'"IMPLEMENTATION" "fake"\r\n"SASL" "PLAIN"\r\n"SIEVE" "fileinto include"\r\n"VERSION" "1.0"\r\n'


async def _against(handler: Handler, **kw: object) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    settings = SieveSettings(host="127.0.0.1", port=port, username="u", password="p", timeout=1, connect_timeout=1)
    settings = SieveSettings(**{**settings.__dict__, **kw})  # type: ignore[arg-type]
    try:
        async with ManageSieve(settings) as ms:
            await ms.list_scripts()
    finally:
        srv.close()
        await srv.wait_closed()


def run(handler: Handler, **kw: object) -> None:
    asyncio.run(asyncio.wait_for(_against(handler, **kw), timeout=10))


async def _garbled_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"{abc}\r\n")
    await writer.drain()
    await asyncio.sleep(0.2)


async def _no_starttls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(CAPS + b'OK "hi"\r\n')
    await writer.drain()
    await reader.read(100)


async def _huge_literal(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(CAPS + b'OK "hi"\r\n')
    await writer.drain()
    await reader.readline()  # AUTHENTICATE
    writer.write(b'OK "in"\r\n')
    await writer.drain()
    await reader.readline()  # LISTSCRIPTS
    writer.write(b"{999999999}\r\n")
    await writer.drain()
    await asyncio.sleep(0.5)


async def _stalls_after_login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(CAPS + b'OK "hi"\r\n')
    await writer.drain()
    await reader.readline()
    writer.write(b'OK "in"\r\n')
    await writer.drain()
    await asyncio.sleep(5)


async def _bye(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(CAPS + b'OK "hi"\r\n')
    await writer.drain()
    await reader.readline()
    writer.write(b'NO (AUTH-TOO-WEAK) "nope"\r\n')
    await writer.drain()


def test_a_garbled_greeting_is_an_error() -> None:
    with pytest.raises(ServerRulesError, match="could not be read"):
        run(_garbled_greeting, tls="none")


def test_no_starttls_means_no_password_sent() -> None:
    with pytest.raises(ServerRulesUnsupported, match="does not offer STARTTLS"):
        run(_no_starttls)


def test_a_literal_over_the_limit_is_refused() -> None:
    with pytest.raises(ServerRulesError, match="bytes at once"):
        run(_huge_literal, tls="none")


def test_a_stalled_command_times_out() -> None:
    with pytest.raises(ServerRulesUnavailable, match="LISTSCRIPTS had no answer within 1 s"):
        run(_stalls_after_login, tls="none")


def test_a_refused_login_names_the_server_answer() -> None:
    with pytest.raises(ServerRulesUnavailable, match="login refused: nope"):
        run(_bye, tls="none")
