"""One IMAP connection on top of aioimaplib 2.0.3, with its known defects contained.

The defects (``../shared/reference/libs.md`` section 2) and what this module does:

* **Hangs after a lost connection.**  ``conn_lost_cb`` fires but pending
  commands and ``wait_server_push`` never return.  Every call here races the
  command against a "lost" event and an ``asyncio.wait_for``-style deadline;
  either one raises :class:`~mailfiler.errors.MailboxUnavailable` and marks
  the connection broken.  A broken connection is never reused: a cancelled
  command stays in aioimaplib's pending table and would block the next one.
* **Recursion once per response line** (``_handle_responses``, issue 118):
  :class:`_Protocol` replaces it with a loop, so a burst of thousands of
  EXPUNGE lines cannot crash it; callers still fetch in batches of at most
  400 UIDs.
* **Untagged responses outside a command are dropped** (logged "ignored"):
  a watcher connection keeps them in its push queue instead.
* **``* `` stripped anywhere in a line** (``line.replace(b'* ', b'')``): only
  the prefix is stripped here, so a folder named "a * b" survives.
* **No quoting, no mUTF-7, no STARTTLS, no NOTIFY, EXAMINE leaves the state
  AUTH, LOGIN sends the user name unquoted:** commands are built here with
  :mod:`mailfiler.sources.imapproto` quoting; STARTTLS upgrades the transport
  with ``loop.start_tls``; NOTIFY is registered in aioimaplib's command table.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from aioimaplib import aioimaplib as core

from mailfiler.errors import (
    FolderMissing,
    LoginRefused,
    MailboxUnavailable,
    ServerBusy,
    ServerUnreachable,
    SourceError,
    TlsCertificateRefused,
)
from mailfiler.sources import imapproto as proto
from mailfiler.util.secrets import load_client_cert

log = logging.getLogger("mailfiler.sources.imap")

TlsMode = Literal["implicit", "starttls", "none"]
T = TypeVar("T")

# RFC 5465 NOTIFY is not in aioimaplib's table, and execute() refuses unknown
# commands.  Synchronous like IDLE: nothing else may run while it is set up.
core.Commands.setdefault("NOTIFY", core.Cmd("NOTIFY", (core.AUTH, core.SELECTED), core.Exec.is_sync))


@dataclass(frozen=True)
class ImapSettings:
    """How to reach and log in to one IMAP mailbox."""

    host: str
    port: int = 993
    username: str = ""
    password: str = field(default="", repr=False)  # never in logs or tracebacks
    #: where the password (or token) comes from at each login, when not fixed:
    #: a password command or an OAuth2 token helper (tokens expire)
    secret: Callable[[], str] | None = field(default=None, repr=False)
    #: login: LOGIN with a password; xoauth2: AUTHENTICATE XOAUTH2 with a token
    mechanism: Literal["login", "xoauth2"] = "login"
    tls: TlsMode = "implicit"
    #: PEM file of the CA(s) to trust instead of the system store
    ca_file: str | None = None
    #: a TLS client certificate (PEM; with its key, or the key in ``client_key``)
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    #: False only for a loopback test server with a certificate nobody signed
    verify_tls: bool = True
    #: seconds any single IMAP command may take (reset while data flows)
    timeout: float = 30.0
    #: seconds to connect, greet, negotiate TLS and log in
    connect_timeout: float = 15.0
    #: re-issue IDLE this often (RFC 2177 says < 29 min; NATs drop idle flows sooner)
    idle_renew: float = 300.0
    #: servers without NOTIFY: folders beyond ``max_idle`` are checked this often
    poll_interval: float = 15.0
    #: with NOTIFY: a STATUS sweep of every watched folder this often, as a safety net
    #: (10 s: Dovecot's NOTIFY misses some changes until its own 30 s idle check;
    #: a STATUS per folder bounds tracking delay for those to about this)
    sweep_interval: float = 10.0
    #: with NOTIFY, on a server with LIST-STATUS: every watched folder's STATUS in
    #: one command this often (Dovecot's NOTIFY sometimes goes quiet for up to its
    #: 30 s mailbox_idle_check_interval; see bench/README.md); 0 turns it off
    quick_sweep: float = 2.0
    #: ... and this often while the mailbox is busy (a push or a change seen in the
    #: last BUSY_WINDOW seconds: Dovecot's NOTIFY goes quiet right after activity)
    busy_sweep: float = 0.5
    #: servers without NOTIFY: at most this many IDLE connections (one folder each)
    max_idle: int = 3
    #: use NOTIFY when the server offers it (False forces the IDLE + poll strategy)
    use_notify: bool = True
    #: (tracked, failed) IMAP keywords to mark messages with, e.g. ("$Tracked",
    #: "$TrackFailed"); None (the default) never writes to the mailbox
    keywords: tuple[str, str] | None = None
    #: track by tag is on: NOTIFY also subscribes to flag changes (a tag set pushes a pass)
    flag_changes: bool = False
    #: tag passes use CONDSTORE where offered (False: the search every pass, as without it)
    tag_condstore: bool = True

    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def ssl_context(settings: ImapSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    if settings.client_cert is not None:
        load_client_cert(ctx, settings.client_cert, settings.client_key)
    if not settings.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Protocol(core.IMAP4ClientProtocol):
    """aioimaplib's protocol with the per-line recursion and the prefix strip fixed."""

    #: keep untagged responses nobody waits for (a watcher connection)
    keep_unsolicited = False
    # set by aioimaplib's protocol (untyped), read below
    incomplete_line: bytes
    current_command: core.Command | None

    def data_received(self, d: bytes) -> None:
        # upstream formats every chunk for a debug line ("%s" % d) even when debug
        # logging is off: a repr of each 64 KB read, most of a fetch's cost
        try:
            self._handle_responses(self.incomplete_line + d, self._handle_line, self.current_command)
            self.incomplete_line = b""
            self.current_command = None
        except core.IncompleteRead as incomplete_read:
            self.current_command = incomplete_read.cmd
            self.incomplete_line = incomplete_read.data

    def _handle_responses(self, data, line_handler, current_cmd=None) -> None:  # type: ignore[no-untyped-def]
        # The upstream version calls itself once per line (RecursionError on a
        # few thousand lines, issue 118); this is the same logic as a loop.
        while True:
            if not data:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and _wait_data(current_cmd):
                    raise core.IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                data = current_cmd.append_literal_data(data)
                if current_cmd.wait_literal_data():
                    raise core.IncompleteRead(current_cmd)
            line, separator, tail = data.partition(core.CRLF)
            if not separator:
                raise core.IncompleteRead(current_cmd, data)
            cmd = line_handler(line, current_cmd)
            begin_literal = core.literal_data_re.match(line)
            if begin_literal:
                if cmd is None:
                    cmd = core.Command("NIL", "unused", loop=self.loop)
                cmd.begin_literal_data(int(begin_literal.group("size")))
                data, current_cmd = tail, cmd
            elif cmd is not None and _wait_data(cmd):
                data, current_cmd = tail, cmd
            else:
                data, current_cmd = tail, None

    def _untagged_response(self, line: bytes):  # type: ignore[no-untyped-def]
        line = line[2:] if line.startswith(b"* ") else line
        if self.pending_sync_command is not None:
            self.pending_sync_command.append_to_resp(line)
            return self.pending_sync_command
        match = core.message_data_re.match(line)
        if match:
            name = match.group(1).decode().upper()
            text = line
        else:
            word, _, text = line.partition(b" ")
            name = word.decode("ascii", "replace").upper()
        command = self.pending_async_commands.get(name)
        if command is not None:
            command.append_to_resp(text)
            return command
        command = self.pending_async_commands.get("NOOP")
        if command is not None:
            command.append_to_resp(line)
            return command
        if self.keep_unsolicited:
            self.idle_queue.put_nowait([line])
        else:
            log.debug("unsolicited IMAP response ignored: %.200r", line)
        return None


class _LazyTimer:
    """aioimaplib's per-command inactivity timeout, without rescheduling a timer
    on every response line and literal chunk (a cancel and a call_later each: a
    400-message FETCH did 2,400 of them).  Activity only notes the time; the one
    timer, when it fires, checks how long the command has really been idle and
    waits out the rest.  Same rule: the command times out after ``timeout``
    seconds without data."""

    _loop: asyncio.AbstractEventLoop
    _timeout: float | None
    _timer: asyncio.Handle

    def _set_timer(self) -> None:
        self._last_activity = self._loop.time()
        if self._timeout is not None:
            self._timer = self._loop.call_later(self._timeout, self._check_idle)

    def _reset_timer(self) -> None:
        self._last_activity = self._loop.time()

    def _check_idle(self) -> None:
        assert self._timeout is not None
        idle = self._loop.time() - self._last_activity
        if idle >= self._timeout:
            self._timeout_callback()  # type: ignore[attr-defined]
        else:
            self._timer = self._loop.call_later(self._timeout - idle, self._check_idle)


class _Command(_LazyTimer, core.Command):
    pass


class _FetchCommand(_LazyTimer, core.FetchCommand):
    pass


def _wait_data(cmd: core.Command) -> bool:
    """``cmd.wait_data()``, in constant time for a FETCH.

    Upstream's ``FetchCommand.wait_data`` rescans every response line so far
    on each call (twice per message: quadratic in a batch of 400).  The same
    answer, kept up to date over the lines added since the last call: are the
    parentheses since the last ``n FETCH (`` line unbalanced?  Literal data
    (bytearray lines) does not count, as upstream."""
    if not isinstance(cmd, core.FetchCommand):
        return cmd.wait_data()
    state = cmd.__dict__.setdefault("_mailfiler_parens", [0, 0])  # [lines scanned, open - close]
    lines = cmd._resp_lines  # noqa: SLF001 - the lines upstream's wait_data reads
    fetch_re = core.FetchCommand.FETCH_MESSAGE_DATA_RE
    scanned, balance = state
    for line in lines[scanned:]:
        if isinstance(line, bytes):
            if fetch_re.match(line):
                balance = 0
            balance += line.count(b"(") - line.count(b")")
    state[0], state[1] = len(lines), balance
    return balance != 0


class _Client(core.IMAP4):
    def create_client(self, host, port, loop, conn_lost_cb=None, ssl_context=None) -> None:  # type: ignore[no-untyped-def]
        local_loop = loop if loop is not None else asyncio.get_running_loop()
        self.protocol = _Protocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(
            local_loop.create_connection(lambda: self.protocol, host, port, ssl=ssl_context)
        )


class ImapConnection:
    """A logged-in connection.  Use :meth:`connect`; every method either
    succeeds within its timeout or raises a :class:`SourceError` subclass."""

    def __init__(self, settings: ImapSettings, *, purpose: str = "commands", keep_unsolicited: bool = False) -> None:
        self.settings = settings
        self.purpose = purpose
        self.keep_unsolicited = keep_unsolicited
        self.client: _Client | None = None
        self.capabilities: frozenset[str] = frozenset()
        self.separator: str | None = "/"
        self.selected: str | None = None  # folder examined (or selected read-write) now
        self.read_write = False  # selected with SELECT (to store keywords), not EXAMINE
        self.uidvalidity: int | None = None
        #: PERMANENTFLAGS of the folder selected read-write (None: not known)
        self.permanent_flags: frozenset[str] | None = None
        #: the selected folder's FLAGS: every keyword defined in it (track by tag's prefix form)
        self.mailbox_flags: frozenset[str] | None = None
        #: ENABLE QRESYNC done: EXAMINE can ask for VANISHED (EARLIER)
        self.qresync = False
        self.broken = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lost = asyncio.Event()
        self._lost_reason = ""

    # -- lifecycle --------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, settings: ImapSettings, *, purpose: str = "commands", keep_unsolicited: bool = False
    ) -> ImapConnection:
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
        self.client = _Client(s.host, s.port, timeout=s.connect_timeout, conn_lost_cb=self._on_lost, ssl_context=ctx)
        self.client.protocol.keep_unsolicited = self.keep_unsolicited
        try:
            await self.client.wait_hello_from_server()
        except ssl.SSLCertVerificationError as exc:
            raise TlsCertificateRefused(
                f"the TLS certificate of IMAP server {s.host}:{s.port} is not trusted: "
                f"{exc.verify_message or exc}; check ca_file",
                host=s.host,
                port=s.port,
                reason="tls-untrusted",
            ) from exc
        except TimeoutError:  # an OSError too: aioimaplib's own greeting timeout
            raise self._no_answer() from None
        except (OSError, core.AioImapException) as exc:
            raise connect_error(exc, s) from exc
        self._keepalive()
        if s.tls == "starttls":
            await self._starttls()
        await self._login()

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
                f"IMAP server {s.host}:{s.port} refused STARTTLS: {_text(response)}", host=s.host, port=s.port
            )
        try:
            transport = await self.loop.start_tls(protocol.transport, protocol, ssl_context(s), server_hostname=s.host)
        except ssl.SSLCertVerificationError as exc:
            raise TlsCertificateRefused(
                f"the TLS certificate of IMAP server {s.host}:{s.port} is not trusted: "
                f"{exc.verify_message or exc}; check ca_file",
                host=s.host,
                port=s.port,
                reason="tls-untrusted",
            ) from exc
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
            text = _text(response)
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
            return _FetchCommand(
                protocol.new_tag(), *args, prefix=prefix, loop=self.loop, timeout=self.settings.timeout
            )
        return _Command(
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

    # -- mailbox-level helpers -------------------------------------------------------------

    def wire(self, folder: str) -> str:
        try:
            return proto.quoted_mailbox(folder, self.separator)
        except ValueError as exc:
            raise FolderMissing(str(exc), folder=folder) from exc

    async def enable_qresync(self) -> bool:
        """ENABLE QRESYNC (RFC 7162) where offered: EXAMINE can then report what
        was expunged since a HIGHESTMODSEQ.  The server sends VANISHED instead of
        EXPUNGE on this connection from now on."""
        if "QRESYNC" not in self.capabilities:
            return False
        response = await self.simple("ENABLE", "QRESYNC")
        self.qresync = response.result == "OK" and any(
            b"QRESYNC" in bytes(line).upper() for line in response.lines[:-1]
        )
        return self.qresync

    async def examine(self, folder: str) -> dict[str, int]:
        """EXAMINE (read-only: never clears \\Recent or sets \\Seen) -> UIDVALIDITY, UIDNEXT,
        EXISTS and HIGHESTMODSEQ (absent without CONDSTORE, or with NOMODSEQ)."""
        info, _ = await self._open_mailbox("EXAMINE", folder)
        return info

    async def examine_since(self, folder: str, uidvalidity: int, modseq: int) -> tuple[dict[str, int], list[range]]:
        """EXAMINE with QRESYNC parameters: the folder's numbers as :meth:`examine`,
        and the UIDs expunged since ``modseq`` (``VANISHED (EARLIER)``; it may name
        UIDs that never existed).  If UIDVALIDITY is no longer ``uidvalidity`` the
        server ignores the parameters: the caller must compare it."""
        if not self.qresync:
            raise SourceError("EXAMINE (QRESYNC ...) without ENABLE QRESYNC", folder=folder)
        return await self._open_mailbox("EXAMINE", folder, f"(QRESYNC ({uidvalidity} {modseq}))")

    async def select(self, folder: str) -> dict[str, int]:
        """SELECT read-write, only to store keywords: sets :attr:`permanent_flags`.
        (It claims \\Recent, which IMAP4rev2 has dropped; it never sets \\Seen.)"""
        info, _ = await self._open_mailbox("SELECT", folder)
        return info

    async def _open_mailbox(self, verb: str, folder: str, *params: str) -> tuple[dict[str, int], list[range]]:
        self.selected = None
        self.read_write = False
        self.permanent_flags = None
        response = await self.simple(verb, self.wire(folder), *params)
        assert self.client is not None
        if response.result != "OK":
            # a failed EXAMINE leaves no mailbox selected (RFC 3501 6.3.2)
            self.client.protocol.state = core.AUTH
            raise folder_error(folder, response, self.settings)
        lines = response.lines
        codes = proto.response_codes(lines)
        info = {"EXISTS": proto.untagged_number(lines, b"EXISTS") or 0}
        for key in ("UIDVALIDITY", "UIDNEXT", "HIGHESTMODSEQ"):
            if codes.get(key, "").isdigit():
                info[key] = int(codes[key])
        vanished = proto.parse_vanished(lines[:-1]) if params else []
        self.mailbox_flags = _flags_line(lines)
        # aioimaplib sends EXAMINE as a "simple command" and leaves its state at
        # AUTH, so UID FETCH/SEARCH would be refused: it is SELECTED now
        self.client.protocol.state = core.SELECTED
        self.selected = folder
        self.uidvalidity = info.get("UIDVALIDITY")
        if verb == "SELECT":
            self.read_write = "READ-ONLY" not in codes
            self.permanent_flags = proto.parse_flag_list(codes.get("PERMANENTFLAGS", "()"))
        return info, vanished

    async def uid_store(self, uids: str, action: str, flags: str) -> bool:
        """UID STORE on the folder selected read-write (``+FLAGS.SILENT``: no
        FETCH echo); False if the server refused it."""
        response = await self.execute(self.command("STORE", uids, action, flags, prefix="UID"), "UID STORE")
        return response.result == "OK"

    async def uid_search(self, criteria: str = "ALL") -> set[int]:
        """UIDs matching ``criteria`` in the examined folder (ESEARCH when offered:
        ranges instead of one number per message)."""
        esearch = "ESEARCH" in self.capabilities
        if esearch:
            command = self.command("SEARCH", "RETURN", "(ALL)", criteria, prefix="UID", untagged="ESEARCH")
        else:
            command = self.command("SEARCH", criteria, prefix="UID")
        response = await self.execute(command, "UID SEARCH")
        if response.result != "OK":
            raise SourceError(f"UID SEARCH in {self.selected!r} failed: {_text(response)}", folder=self.selected)
        return proto.parse_search(response.lines[:-1], esearch=esearch)

    async def uid_fetch(self, uids: str, items: str, timeout: float | None = None) -> list[dict[str, proto.Token]]:
        """FETCH data items of the UIDs in ``uids`` (a set of at most
        :data:`~mailfiler.sources.imapproto.FETCH_BATCH`); responses without a UID
        (unsolicited flag updates) are left out."""
        response = await self.execute(self.command("FETCH", uids, items, prefix="UID"), "UID FETCH", timeout)
        if response.result != "OK":
            if response.result == "NO":
                return []  # e.g. [EXPUNGEISSUED]: what is gone is simply not returned
            raise SourceError(f"UID FETCH in {self.selected!r} failed: {_text(response)}", folder=self.selected)
        out = []
        # one response at a time, each dropped once parsed: a batch of large
        # messages is held once, not as lines, then joined, then sliced
        for line in proto.iter_responses(response.lines, -1):
            try:
                _, data = proto.parse_fetch(line)
            except proto.ParseError:
                log.debug("unparsable FETCH line %.200r", line)
                continue
            finally:
                del line  # before the next one is joined
            if proto.fetch_uid(data) is not None:
                out.append(data)
        return out

    async def status(self, folder: str, items: str = "(MESSAGES UIDNEXT UIDVALIDITY)") -> dict[str, int] | None:
        """STATUS of a folder; None if it does not exist."""
        if folder == self.selected:
            # STATUS on the selected mailbox answers from this session's view
            # (Dovecot: even after the folder was deleted; RFC 3501 6.3.10 says
            # not to): look afresh instead
            try:
                info = await self.examine(folder)
            except FolderMissing:
                return None
            return {"MESSAGES": info["EXISTS"], **{k: v for k, v in info.items() if k != "EXISTS"}}
        response = await self.simple("STATUS", self.wire(folder), items)
        if response.result != "OK":
            if is_nonexistent(response):
                return None
            raise folder_error(folder, response, self.settings)
        for line in proto.join_literals(response.lines[:-1]):
            with contextlib.suppress(proto.ParseError):
                return proto.parse_status(line)[1]
        return None

    async def list_status(
        self, folders: Sequence[str], items: str = "(MESSAGES UIDNEXT UIDVALIDITY)"
    ) -> dict[str, dict[str, int] | None]:
        """STATUS of many folders in one round trip: RFC 5819 LIST-STATUS with
        RFC 5258 multiple patterns (check ``LIST-STATUS`` in the capabilities
        first).  None for a folder that does not exist; the selected folder is
        looked at afresh, as :meth:`status` does."""
        out: dict[str, dict[str, int] | None] = {}
        names: dict[str, str] = {}  # wire name -> folder
        for folder in folders:
            if folder == self.selected:
                out[folder] = await self.status(folder)
                continue
            try:
                self.wire(folder)  # refuses a name it cannot send
            except FolderMissing:
                out[folder] = None
                continue
            names[proto.folder_to_wire(folder, self.separator)] = folder
        if not names:
            return out
        patterns = " ".join(proto.quote(wire) for wire in names)
        # only the STATUS lines are wanted: aioimaplib hands a command the untagged
        # responses of its own name, here STATUS (the LIST lines are dropped)
        response = await self.simple("LIST", '""', f"({patterns})", "RETURN", f"(STATUS {items})", untagged="STATUS")
        if response.result != "OK":
            raise SourceError(f"LIST-STATUS on {self.settings.where()} failed: {_text(response)}")
        found: dict[str, dict[str, int]] = {}
        for line in proto.join_literals(response.lines[:-1]):
            with contextlib.suppress(proto.ParseError):
                name, status = proto.parse_status(line)
                found[name] = status
        for wire, folder in names.items():
            # INBOX is case-insensitive; "*" and "%" in a name may match more: only exact names count
            out[folder] = found.get(wire) or (found.get(proto.INBOX) if proto.is_inbox(folder) else None)
        return out


def _flags_line(lines: Sequence[bytes | bytearray]) -> frozenset[str] | None:
    """The flags and keywords an EXAMINE's or SELECT's ``FLAGS (...)`` line defines."""
    for line in lines:
        if isinstance(line, bytes) and line[:7].upper() == b"FLAGS (":
            return proto.parse_flag_list(line[6:].decode("ascii", "replace"))
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


def _text(response) -> str:  # type: ignore[no-untyped-def]
    last = response.lines[-1] if response.lines else b""
    return bytes(last).decode("utf-8", "replace").strip()


def is_nonexistent(response) -> bool:  # type: ignore[no-untyped-def]
    text = _text(response).upper()
    return "[NONEXISTENT]" in text or "DOESN'T EXIST" in text or "DOES NOT EXIST" in text or "NOT FOUND" in text


def folder_error(folder: str, response, settings: ImapSettings) -> SourceError:  # type: ignore[no-untyped-def]
    if is_nonexistent(response):
        return FolderMissing(f"folder {folder!r} does not exist on {settings.where()}", folder=folder)
    return SourceError(f"IMAP folder {folder!r} on {settings.where()}: {_text(response)}", folder=folder)
