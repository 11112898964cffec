"""One logged-in IMAP connection on top of aioimaplib, bounded: opening it
(TLS or STARTTLS, login, capabilities), running each command against a
deadline and connection loss, server pushes, closing it; and what a failed
connect or login means.  The mailbox commands are
:class:`~mailfiler.sources.imapconn.ImapConnection`'s.

aioimaplib **hangs after a lost connection** (``../shared/reference/libs.md``
section 2): ``conn_lost_cb`` fires but pending commands and
``wait_server_push`` never return.  Every call here races the command against
a "lost" event and an ``asyncio.wait_for``-style deadline; either one raises
:class:`~mailfiler.errors.MailboxUnavailable` and marks the connection broken.
A broken connection is never reused: a cancelled command stays in aioimaplib's
pending table and would block the next one.  Its protocol handler's defects
are fixed in :mod:`mailfiler.sources.imapfixes`.  aioimaplib has no quoting,
no mUTF-7 and no STARTTLS, and sends LOGIN's user name unquoted: commands are
built here with :mod:`mailfiler.sources.imapproto` quoting; STARTTLS upgrades
the transport with ``loop.start_tls``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import ssl
from collections.abc import Awaitable
from typing import Self, TypeVar

from aioimaplib import aioimaplib as core

from mailfiler.errors import (
    LoginRefused,
    MailboxUnavailable,
    ServerBusy,
    ServerUnreachable,
    SourceError,
    TlsCertificateRefused,
)
from mailfiler.sources import imapproto as proto
from mailfiler.sources.imapfixes import Client, Command, FetchCommand
from mailfiler.sources.imapsettings import ImapSettings, ssl_context

T = TypeVar("T")


class ImapLink:
    """A logged-in connection.  Use :meth:`connect`; every method either
    succeeds within its timeout or raises a :class:`SourceError` subclass."""

    def __init__(self, settings: ImapSettings, *, purpose: str = "commands", keep_unsolicited: bool = False) -> None:
        self.settings = settings
        self.purpose = purpose
        self.keep_unsolicited = keep_unsolicited
        self.client: Client | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.separator: str | None = "/"
        self.broken = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lost = asyncio.Event()
        self._lost_reason = ""

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, settings: ImapSettings, *, purpose: str = "commands", keep_unsolicited: bool = False
    ) -> Self:
        conn = cls(settings, purpose=purpose, keep_unsolicited=keep_unsolicited)
        try:
            await asyncio.wait_for(conn._open(), settings.connect_timeout)
        except TimeoutError:
            conn.abort()
            raise conn._no_answer() from None
        except BaseException:
            conn.abort()
            raise
        return conn

    def _no_answer(self) -> MailboxUnavailable:
        s = self.settings
        return ServerUnreachable(
            f"IMAP server {s.host}:{s.port} did not answer within {s.connect_timeout:g} s "
            f"(connect, TLS and login for {s.username})",
            host=s.host,
            port=s.port,
            user=s.username,
        )

    async def _open(self) -> None:
        s = self.settings
        self.loop = asyncio.get_running_loop()
        ctx = ssl_context(s) if s.tls == "implicit" else None
        self.client = Client(s.host, s.port, timeout=s.connect_timeout, conn_lost_cb=self._on_lost, ssl_context=ctx)
        self.client.protocol.keep_unsolicited = self.keep_unsolicited
        try:
            await self.client.wait_hello_from_server()
        except ssl.SSLCertVerificationError as exc:
            raise self._untrusted(exc) from exc
        except TimeoutError:  # an OSError too: aioimaplib's own greeting timeout
            raise self._no_answer() from None
        except (OSError, core.AioImapException) as exc:
            raise connect_error(exc, s) from exc
        self._keepalive()
        if s.tls == "starttls":
            await self._starttls()
        await self._login()

    def _untrusted(self, exc: ssl.SSLCertVerificationError) -> TlsCertificateRefused:
        s = self.settings
        return TlsCertificateRefused(
            f"the TLS certificate of IMAP server {s.host}:{s.port} is not trusted: "
            f"{exc.verify_message or exc}; check ca_file",
            host=s.host,
            port=s.port,
            reason="tls-untrusted",
        )

    def _keepalive(self) -> None:
        # NAT boxes drop idle flows silently; keepalives make the kernel notice
        assert self.client is not None
        transport = self.client.protocol.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    async def _starttls(self) -> None:
        s = self.settings
        assert self.client is not None and self.loop is not None
        protocol = self.client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise MailboxUnavailable(
                f"IMAP server {s.host}:{s.port} does not offer STARTTLS (tls: starttls)", host=s.host, port=s.port
            )
        response = await self.simple("STARTTLS")
        if response.result != "OK":
            raise MailboxUnavailable(
                f"IMAP server {s.host}:{s.port} refused STARTTLS: {response_text(response)}", host=s.host, port=s.port
            )
        try:
            transport = await self.loop.start_tls(protocol.transport, protocol, ssl_context(s), server_hostname=s.host)
        except ssl.SSLCertVerificationError as exc:
            raise self._untrusted(exc) from exc
        except (OSError, ssl.SSLError) as exc:
            raise MailboxUnavailable(
                f"STARTTLS with {s.host}:{s.port} failed: {exc}", host=s.host, port=s.port
            ) from exc
        protocol.transport = transport
        # capabilities sent before TLS are not to be trusted (RFC 3501 6.2.1)
        await self.run(protocol.capability(), "CAPABILITY")

    async def _login(self) -> None:
        s = self.settings
        assert self.client is not None
        protocol = self.client.protocol
        # a command may block (a password manager): not on the event loop
        secret = await asyncio.to_thread(s.secret) if s.secret is not None else s.password
        try:
            if s.mechanism == "xoauth2":
                sasl = base64.b64encode(f"user={s.username}\1auth=Bearer {secret}\1\1".encode()).decode("ascii")
                command = core.Command("AUTHENTICATE", protocol.new_tag(), "XOAUTH2", sasl, loop=self.loop)
                scrub = sasl
            else:
                command = core.Command(
                    "LOGIN", protocol.new_tag(), proto.quote(s.username), proto.quote(secret), loop=self.loop
                )
                scrub = proto.quote(secret)
        except ValueError as exc:  # CR/LF/NUL in the user name or password
            raise MailboxUnavailable(f"IMAP login for {s.username} on {s.host}:{s.port}: {exc}") from exc
        response = await self.run(protocol.execute(command, scrub=scrub), "LOGIN")
        if response.result != "OK":
            text = response_text(response)
            reason = login_failure_reason(response.result, text)
            invalidate = getattr(s.secret, "invalidate", None)
            if reason == "auth-failed" and invalidate is not None:
                invalidate()  # an OAuth2 token the server no longer takes: ask for a new one
            raise (LoginRefused if reason == "auth-failed" else ServerBusy)(
                f"IMAP login as {s.username} on {s.host}:{s.port} failed: {text or response.result}",
                host=s.host,
                port=s.port,
                user=s.username,
                reason=reason,
            )
        protocol.state = core.AUTH
        await self.run(protocol.capability(), "CAPABILITY")
        self.capabilities = frozenset(c.upper() for c in protocol.capabilities)
        self.separator = await self._separator()

    async def _separator(self) -> str | None:
        response = await self.simple("LIST", '""', '""')
        for line in proto.join_literals(response.lines[:-1]):
            with contextlib.suppress(proto.ParseError):
                return proto.parse_list(line).separator
        return "/"

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost_reason = str(exc) if exc else "closed by the server"
        self._lost.set()

    @property
    def usable(self) -> bool:
        return (
            not self.broken
            and not self._lost.is_set()
            and self.client is not None
            and self.loop is asyncio.get_running_loop()
        )

    def abort(self) -> None:
        """Drop the connection without a goodbye (also cancels a pending connect)."""
        self.broken = True
        if self.client is None:
            return
        task = getattr(self.client, "_client_task", None)
        if task is not None and not task.done():
            task.cancel()
        transport = self.client.protocol.transport
        if transport is not None and self.loop is not None and not self.loop.is_closed():
            transport.abort()
        for t in list(self.client.tasks) + list(self.client.protocol.tasks):
            t.cancel()

    async def logout(self, timeout: float = 1.0) -> None:
        """LOGOUT politely (bounded), then drop the transport."""
        if self.usable:
            assert self.client is not None
            try:
                if self.client.has_pending_idle():
                    self.client.idle_done()
                await asyncio.wait_for(self.client.protocol.logout(), timeout)
            except (TimeoutError, OSError, core.AioImapException, SourceError):
                pass
        self.abort()

    # -- running commands --------------------------------------------------------------

    def unavailable(self, what: str, why: str) -> MailboxUnavailable:
        s = self.settings
        return MailboxUnavailable(
            f"IMAP connection to {s.host}:{s.port} ({s.username}, {self.purpose}) {why} during {what}",
            host=s.host,
            port=s.port,
            user=s.username,
        )

    async def run(self, aw: Awaitable[T], what: str, timeout: float | None = None) -> T:
        """Await an aioimaplib call, bounded by a deadline and by connection loss."""
        if not self.usable:
            if asyncio.iscoroutine(aw):
                aw.close()
            raise self.unavailable(what, "is closed" if not self._lost.is_set() else f"was lost ({self._lost_reason})")
        task = asyncio.ensure_future(aw)
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {task, lost}, timeout=timeout or self.settings.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
                self.broken = True
        if task in done:
            try:
                return task.result()
            except core.CommandTimeout:
                self.broken = True
                raise self.unavailable(what, "timed out") from None
            except core.Abort as exc:
                self.broken = True
                raise self.unavailable(what, f"failed ({exc})") from exc
            except OSError as exc:
                self.broken = True
                raise self.unavailable(what, f"failed ({exc})") from exc
        self.broken = True
        if lost in done:
            raise self.unavailable(what, f"was lost ({self._lost_reason})")
        raise self.unavailable(what, f"got no answer within {timeout or self.settings.timeout:.0f} s")

    def command(self, name: str, *args: str, prefix: str | None = None, untagged: str | None = None) -> core.Command:
        assert self.client is not None
        protocol = self.client.protocol
        if name == "FETCH":
            return FetchCommand(protocol.new_tag(), *args, prefix=prefix, loop=self.loop, timeout=self.settings.timeout)
        return Command(
            name,
            protocol.new_tag(),
            *args,
            prefix=prefix,
            untagged_resp_name=untagged,
            loop=self.loop,
            timeout=self.settings.timeout,
        )

    async def execute(self, command: core.Command, what: str | None = None, timeout: float | None = None):  # type: ignore[no-untyped-def]
        assert self.client is not None
        return await self.run(self.client.protocol.execute(command), what or command.name, timeout)

    async def simple(self, name: str, *args: str, untagged: str | None = None):  # type: ignore[no-untyped-def]
        return await self.execute(self.command(name, *args, untagged=untagged))

    async def next_push(self, timeout: float | None = None) -> list[bytes | bytearray] | None:
        """The next batch of server pushes (IDLE or unsolicited), or None after
        ``timeout`` (default: a while past the IDLE renewal)."""
        assert self.client is not None
        queue = self.client.protocol.idle_queue
        if not queue.empty():
            return queue.get_nowait()
        if not self.usable:
            raise self.unavailable("IDLE", f"was lost ({self._lost_reason or 'closed'})")
        getter = asyncio.ensure_future(queue.get())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait(
                {getter, lost}, timeout=timeout or self.settings.idle_renew + 30, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
            if not getter.done():
                getter.cancel()
        if getter.done() and not getter.cancelled():
            return getter.result()
        if self._lost.is_set():
            self.broken = True
            raise self.unavailable("IDLE", f"was lost ({self._lost_reason})")
        return None


def connect_error(exc: BaseException, s: ImapSettings) -> MailboxUnavailable:
    """The error for a connection that could not be made: refused, a name that
    does not resolve and no route are "unreachable"; anything else (a greeting
    the client cannot read) stays a plain unavailable mailbox."""
    where = f"IMAP server {s.host}:{s.port}"
    if isinstance(exc, socket.gaierror):
        why = f"the name {s.host} does not resolve ({exc.strerror or exc})"
        return ServerUnreachable(f"cannot reach {where}: {why}", host=s.host, port=s.port, reason="dns")
    if isinstance(exc, ConnectionRefusedError):
        why = "connection refused (nothing listens there)"
        return ServerUnreachable(f"cannot reach {where}: {why}", host=s.host, port=s.port, reason="refused")
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        why = exc.strerror or str(exc) or type(exc).__name__
        return ServerUnreachable(f"cannot reach {where}: {why}", host=s.host, port=s.port, reason="network")
    return MailboxUnavailable(f"cannot connect to {where}: {exc or type(exc).__name__}", host=s.host, port=s.port)


def login_failure_reason(result: str, text: str) -> str:
    """Why a LOGIN failed, from its response code (RFC 5530) where there is one."""
    upper = text.upper()
    if "[LIMIT]" in upper or "[INUSE]" in upper or "THROTTL" in upper:
        return "too-many-connections"  # Dovecot: mail_max_userip_connections; Gmail, Exchange: throttling
    if "[UNAVAILABLE]" in upper or "[SERVERBUG]" in upper or result == "BAD":
        return "server-unavailable"
    return "auth-failed"  # [AUTHENTICATIONFAILED], or a plain NO


def response_text(response) -> str:  # type: ignore[no-untyped-def]
    """The text of a response's last (tagged) line."""
    last = response.lines[-1] if response.lines else b""
    return bytes(last).decode("utf-8", "replace").strip()
