"""The HTTP side of a CalDAV or CardDAV target
(:class:`~mailfiler.sync.dav.DavTarget`): its httpx client, with the login
(:mod:`mailfiler.sync.davauth`), TLS and a timeout on every request, and what
no caller can handle (a failed connection, a timeout, a refused login, a
redirect, an oversized reply) as :class:`SyncTargetUnavailable`.  The password
is never logged and never part of ``location``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from mailfiler import __version__
from mailfiler.sources.target import SyncTargetUnavailable
from mailfiler.sync.davauth import BearerAuth, LoginAuth
from mailfiler.util.secrets import SecretUnavailable, load_client_cert

log = logging.getLogger("mailfiler.sync.dav")
# httpx logs every request at INFO: thousands of lines on a first sync.  Quietened
# unless the admin configured those loggers (the daemon's DEBUG still shows them).
for _name in ("httpx", "httpcore"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_TIMEOUT = 60.0
#: a multistatus larger than this is refused (a broken or hostile server)
MAX_REPLY_BYTES = 256 * 1024 * 1024
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def ssl_context(
    ca_file: str | Path | None = None,
    verify: bool = True,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext | bool:
    """TLS settings for httpx: the system's CAs, or *ca_file*'s; ``verify=False`` only when asked;
    a client certificate when one is configured."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if client_cert is not None:
        load_client_cert(ctx, client_cert, client_key)
    if not verify:
        if client_cert is None:
            return False
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class DavHttp:
    """Opening, closing and sending, as a mixin of :class:`mailfiler.sync.dav.DavTarget`
    (which holds the settings)."""

    if TYPE_CHECKING:
        url: str
        noun: str
        username: str | None
        _password: str | Callable[[], str] | None
        _bearer: Callable[[], str] | None
        client_cert: str | None
        client_key: str | None
        ca_file: str | Path | None
        verify: bool
        timeout: float
        wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None
        client: httpx.AsyncClient | None
        _create: bool

    async def open(self, *, create: bool = True) -> None:
        self._create = create
        if self.client is not None:
            return
        auth: LoginAuth | BearerAuth | None = None
        safe = self.url.startswith("https://") or urlsplit(self.url).hostname in _LOOPBACK
        if self.username is not None:
            # a password command may take a while: not on the event loop
            password = await asyncio.to_thread(self._password) if callable(self._password) else self._password
            auth = LoginAuth(self.username, password or "", basic_first=safe)
        elif self._bearer is not None:
            auth = BearerAuth(await asyncio.to_thread(self._bearer))
        try:
            verify = ssl_context(self.ca_file, self.verify, self.client_cert, self.client_key)
        except SecretUnavailable as exc:
            raise self._unavailable(str(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise self._unavailable(f"cannot read ca_file {self.ca_file}: {exc}") from exc
        if not self.verify:
            log.warning(
                "%s: TLS certificates are not checked (verify: false)", self.url, extra={"event": "tls-unverified"}
            )
        if auth is not None and not safe:
            log.warning(
                "%s: the password goes over plain http (in clear, unless the server asks for Digest)",
                self.url,
                extra={"event": "plain-http"},
            )
        transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport(verify=verify)
        if self.wrap_transport is not None:
            transport = self.wrap_transport(transport)
        self.client = httpx.AsyncClient(
            auth=auth,
            timeout=httpx.Timeout(self.timeout),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": f"mailfiler/{__version__}"},
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def _unavailable(self, why: str) -> SyncTargetUnavailable:
        return SyncTargetUnavailable(f"{self.noun} {self.url}: {why}", location=self.url)

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        redirects: bool = False,
    ) -> httpx.Response:
        """One request; what no caller can handle becomes SyncTargetUnavailable
        (a redirect too, unless the caller follows them: discovery does)."""
        if self.client is None:
            await self.open(create=self._create)
        assert self.client is not None
        try:
            resp = await self.client.request(method, url, headers=headers, content=content)
        except httpx.TimeoutException:
            raise self._unavailable(f"no answer within {self.timeout:g} s ({method})") from None
        except httpx.TransportError as exc:
            raise self._unavailable(_transport_error(exc)) from None
        if resp.status_code == 401:
            raise self._unavailable("the server refused the login (HTTP 401): check username and password_file")
        if 300 <= resp.status_code < 400 and not redirects:
            where = resp.headers.get("location", "?")
            raise self._unavailable(f"the server redirects to {where} (HTTP {resp.status_code}); use that URL")
        if len(resp.content) > MAX_REPLY_BYTES:
            raise self._unavailable(f"the reply to {method} is over {MAX_REPLY_BYTES} bytes")
        return resp


def _transport_error(exc: httpx.TransportError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the server's TLS certificate is not trusted ({cause.verify_message}); "
                "set ca_file to the CA that signed it"
            )
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({exc or type(exc).__name__})"
    return f"the connection failed ({type(exc).__name__}: {exc})"
