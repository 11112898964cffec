"""An asyncio ManageSieve client (RFC 5804): the commands mailfiler needs.

Written here rather than taken from sievelib: sievelib's client is
synchronous, has one class-wide 5 s read timeout, and verifies TLS only
against the system's CAs (no ``ca_file``).  The protocol is small: lines of
quoted strings and literals, answered by OK/NO/BYE.

Every call runs under ``timeout``; connecting, STARTTLS and the login under
``connect_timeout``.  TLS is verified (``ca_file`` or the system's CAs);
STARTTLS is required unless ``tls="none"``, which the config allows only
on loopback.  Logins use SASL PLAIN (or XOAUTH2 with a token helper).  The
password is never logged: errors quote the server, never the command.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mailfiler.errors import ServerRulesError, ServerRulesUnavailable, ServerRulesUnsupported

log = logging.getLogger("mailfiler.serverrules.managesieve")

DEFAULT_PORT = 4190
#: the largest string the server may send (a script, a message): bounded memory
MAX_LITERAL = 4 * 1024 * 1024
MAX_LINE = 64 * 1024


@dataclass(frozen=True)
class SieveSettings:
    host: str
    port: int = DEFAULT_PORT
    username: str = ""
    #: called (in a thread) at each login: reads the password file or runs the helper
    secret: Callable[[], str] | None = field(default=None, repr=False)
    password: str = field(default="", repr=False)
    mechanism: Literal["plain", "xoauth2"] = "plain"
    tls: Literal["starttls", "none"] = "starttls"
    ca_file: str | None = None
    verify_tls: bool = True
    timeout: float = 30.0
    connect_timeout: float = 15.0

    def where(self) -> str:
        return f"sieve://{self.username}@{self.host}:{self.port}"


class SieveNo(ServerRulesError):
    """The server answered NO (or BYE) to a command; ``code`` is its response code."""

    code = "server-rules-refused"
    # set from the keyword fields by MailfilerError
    response_code: str | None
    text: str

    def __init__(self, message: str, *, response_code: str | None, text: str) -> None:
        super().__init__(message, response_code=response_code, text=text)


@dataclass
class Response:
    kind: str  # OK | NO | BYE
    code: str | None
    text: str
    #: the lines before it, each a list of strings (quoted or literal) and atoms
    lines: list[list[str]]


def _quote(value: str) -> str:
    """A quoted string, or a literal when it cannot be quoted (RFC 5804 4)."""
    if "\r" in value or "\n" in value or '"' in value or "\\" in value or len(value.encode()) > 1024:
        return _literal(value)
    return '"' + value + '"'


class ManageSieve:
    """One authenticated connection.  Use as ``async with ManageSieve(settings) as ms:``."""

    def __init__(self, settings: SieveSettings) -> None:
        self.s = settings
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.capabilities: dict[str, str] = {}

    async def __aenter__(self) -> ManageSieve:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- capabilities --------------------------------------------------------------

    @property
    def sieve_extensions(self) -> set[str]:
        return set(self.capabilities.get("SIEVE", "").lower().split())

    @property
    def implementation(self) -> str:
        return self.capabilities.get("IMPLEMENTATION", "")

    def _set_capabilities(self, resp: Response) -> None:
        caps: dict[str, str] = {}
        for line in resp.lines:
            if line:
                caps[line[0].upper()] = " ".join(line[1:])
        self.capabilities = caps

    # -- connection ----------------------------------------------------------------

    async def connect(self) -> None:
        s = self.s
        try:
            async with asyncio.timeout(s.connect_timeout):
                self.reader, self.writer = await asyncio.open_connection(s.host, s.port, limit=MAX_LINE)
                self._set_capabilities(await self._response())
                if s.tls == "starttls":
                    await self._starttls()
                await self._login()
        except TimeoutError:
            await self.close()
            raise ServerRulesUnavailable(
                f"{s.where()}: no answer within {s.connect_timeout:g} s (connect, TLS and login)"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            await self.close()
            raise ServerRulesUnavailable(
                f"{s.where()}: the server's TLS certificate is not trusted ({exc.verify_message});"
                " set ca_file if it uses a private CA"
            ) from None
        except (OSError, ssl.SSLError) as exc:
            await self.close()
            raise ServerRulesUnavailable(
                f"{s.where()}: cannot connect ({exc.strerror or exc}); is ManageSieve enabled on port {s.port}?"
            ) from None
        except ValueError:
            await self.close()
            raise ServerRulesError(
                f"{s.where()}: the server's greeting could not be read; is it ManageSieve?"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _starttls(self) -> None:
        s = self.s
        if "STARTTLS" not in self.capabilities:
            raise ServerRulesUnsupported(
                f"{s.where()}: the server does not offer STARTTLS; mailfiler does not send a password in clear"
            )
        await self._command("STARTTLS")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=s.ca_file)
        if not s.verify_tls:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        assert self.writer is not None
        await self.writer.start_tls(ctx, server_hostname=s.host)
        # RFC 5804 2.2: the server sends its capabilities again after TLS
        self._set_capabilities(await self._response())

    async def _login(self) -> None:
        s = self.s
        offered = self.capabilities.get("SASL", "").upper().split()
        secret = await asyncio.to_thread(s.secret) if s.secret is not None else s.password
        if s.mechanism == "xoauth2":
            mech = "XOAUTH2" if "XOAUTH2" in offered else "OAUTHBEARER" if "OAUTHBEARER" in offered else ""
            if not mech:
                raise ServerRulesUnsupported(
                    f"{s.where()}: the server offers no OAuth2 login (SASL {' '.join(offered)})"
                )
            if mech == "XOAUTH2":
                raw = f"user={s.username}\1auth=Bearer {secret}\1\1"
            else:
                raw = f"n,a={s.username},\1auth=Bearer {secret}\1\1"
        else:
            mech = "PLAIN"
            if "PLAIN" not in offered:
                raise ServerRulesUnsupported(f"{s.where()}: the server offers no SASL PLAIN (SASL {' '.join(offered)})")
            raw = f"\0{s.username}\0{secret}"
        token = base64.b64encode(raw.encode("utf-8")).decode("ascii")
        try:
            await self._command(f'AUTHENTICATE "{mech}" "{token}"', what="AUTHENTICATE")
        except SieveNo as exc:
            raise ServerRulesUnavailable(f"{s.where()}: login refused: {exc.text or exc.response_code}") from None

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is None:
            return
        try:
            async with asyncio.timeout(2):
                if not writer.is_closing():
                    writer.write(b"LOGOUT\r\n")
                    await writer.drain()
                writer.close()
                await writer.wait_closed()
        except (TimeoutError, OSError, ssl.SSLError):
            writer.transport.abort()

    # -- commands --------------------------------------------------------------------

    async def list_scripts(self) -> list[tuple[str, bool]]:
        """(name, active) for every script."""
        resp = await self._command("LISTSCRIPTS")
        return [(line[0], len(line) > 1 and line[1].upper() == "ACTIVE") for line in resp.lines if line]

    async def get_script(self, name: str) -> str:
        resp = await self._command(f"GETSCRIPT {_quote(name)}", what=f"GETSCRIPT {name}")
        return resp.lines[0][0] if resp.lines and resp.lines[0] else ""

    async def put_script(self, name: str, text: str) -> list[str]:
        """Store (or replace) a script; returns the server's warnings, if any."""
        resp = await self._command(f"PUTSCRIPT {_quote(name)} {_literal(text)}", what=f"PUTSCRIPT {name}")
        return _warnings(resp)

    async def check_script(self, text: str) -> list[str]:
        """The server's verdict without storing (RFC 5804 2.12); raises SieveNo with its errors."""
        if "VERSION" not in self.capabilities:
            return []  # a server before ManageSieve 1.0: PUTSCRIPT checks instead
        resp = await self._command(f"CHECKSCRIPT {_literal(text)}", what="CHECKSCRIPT")
        return _warnings(resp)

    async def set_active(self, name: str) -> None:
        await self._command(f"SETACTIVE {_quote(name)}", what=f"SETACTIVE {name}")

    async def delete_script(self, name: str) -> None:
        await self._command(f"DELETESCRIPT {_quote(name)}", what=f"DELETESCRIPT {name}")

    async def _command(self, line: str, *, what: str | None = None) -> Response:
        if self.writer is None:
            raise ServerRulesUnavailable(f"{self.s.where()}: not connected")
        what = what or line.split(" ", 1)[0]
        try:
            async with asyncio.timeout(self.s.timeout):
                self.writer.write(line.encode("utf-8") + b"\r\n")
                await self.writer.drain()
                resp = await self._response()
        except TimeoutError:
            self._broken()
            raise ServerRulesUnavailable(
                f"{self.s.where()}: {what} had no answer within {self.s.timeout:g} s"
            ) from None
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
            self._broken()
            raise ServerRulesUnavailable(f"{self.s.where()}: the connection broke during {what}: {exc}") from None
        except ValueError:
            self._broken()
            raise ServerRulesError(f"{self.s.where()}: the server's answer to {what} could not be read") from None
        except ServerRulesError:
            self._broken()  # an answer over the limits: the rest of it would be read as the next one
            raise
        if resp.kind != "OK":
            if resp.kind == "BYE":
                self._broken()
            detail = resp.text or resp.code or resp.kind
            raise SieveNo(f"{self.s.where()}: {what} refused: {detail}", response_code=resp.code, text=resp.text)
        return resp

    def _broken(self) -> None:
        if self.writer is not None:
            self.writer.transport.abort()
        self.writer = self.reader = None

    async def _response(self) -> Response:
        """Read lines up to OK/NO/BYE."""
        lines: list[list[str]] = []
        while True:
            tokens = await self._line()
            if tokens and tokens[0][1] == "atom" and tokens[0][0].upper() in ("OK", "NO", "BYE"):
                kind = tokens[0][0].upper()
                rest = tokens[1:]
                code = None
                if rest and rest[0][1] == "code":
                    code = rest[0][0]
                    rest = rest[1:]
                text = " ".join(t for t, _ in rest)
                return Response(kind, code, text, lines)
            lines.append([t for t, _ in tokens])

    async def _line(self) -> list[tuple[str, str]]:
        """One response line as (value, kind) tokens; literals are read in full."""
        assert self.reader is not None
        tokens: list[tuple[str, str]] = []
        raw = await self._readline()
        pos = 0
        while True:
            while pos < len(raw) and raw[pos] == " ":
                pos += 1
            if pos >= len(raw):
                return tokens
            ch = raw[pos]
            if ch == '"':
                value, pos = _read_quoted(raw, pos)
                tokens.append((value, "string"))
            elif ch == "{":
                end = raw.index("}", pos)
                size = int(raw[pos + 1 : end].rstrip("+"))
                if size > MAX_LITERAL:
                    raise ServerRulesError(
                        f"{self.s.where()}: the server sent {size} bytes at once (over {MAX_LITERAL})"
                    )
                data = await self.reader.readexactly(size)
                tokens.append((data.decode("utf-8", errors="replace"), "string"))
                raw, pos = await self._readline(), 0  # the rest of the line after the literal
            elif ch == "(":
                end = raw.index(")", pos)
                tokens.append((raw[pos + 1 : end], "code"))
                pos = end + 1
            else:
                end = raw.find(" ", pos)
                end = len(raw) if end < 0 else end
                tokens.append((raw[pos:end], "atom"))
                pos = end

    async def _readline(self) -> str:
        assert self.reader is not None
        try:
            data = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ServerRulesError(f"{self.s.where()}: a response line is longer than {MAX_LINE} bytes") from None
        return data.rstrip(b"\r\n").decode("utf-8", errors="replace")


def _read_quoted(raw: str, pos: int) -> tuple[str, int]:
    out = []
    i = pos + 1
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "".join(out), i


def _literal(text: str) -> str:
    return f"{{{len(text.encode('utf-8'))}+}}\r\n{text}"


def _warnings(resp: Response) -> list[str]:
    if resp.code and resp.code.upper().startswith("WARNINGS"):
        return [ln for ln in resp.text.splitlines() if ln.strip()]
    return []


__all__ = ["DEFAULT_PORT", "ManageSieve", "SieveNo", "SieveSettings"]
