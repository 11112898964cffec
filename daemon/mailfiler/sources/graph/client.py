"""Microsoft Graph over HTTPS: one httpx client per mailbox.

What every request gets here, so the Source never thinks about it:

* ``Authorization`` from a token provider, refreshed once on a 401;
* ``Prefer: IdType="ImmutableId"`` (ids that survive moves inside the mailbox);
* at most :data:`CONCURRENCY` requests in flight (Exchange Online allows 4 per
  app and mailbox; more is answered with 429);
* 429 and 503 retried after their ``Retry-After`` (capped), and the whole
  client waits that long, not just the request that met it, so concurrent
  requests do not hammer a throttled mailbox;
* a lost connection retried a few times (GET only: a PATCH is retried by its
  caller, which knows whether it is safe);
* a timeout on every request;
* Graph's errors mapped onto mailfiler's: :class:`LoginRefused`,
  :class:`TlsCertificateRefused`, :class:`ServerBusy`,
  :class:`ServerUnreachable`, :class:`MailboxMissing`, else
  :class:`GraphError` (a request the caller may handle: 404, 410, 412...).

Tokens are never logged (httpx logs no headers; our messages name the
request's path, never its Authorization).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from mailfiler.errors import (
    LoginRefused,
    MailboxMissing,
    MailboxUnavailable,
    ServerBusy,
    ServerUnreachable,
    TlsCertificateRefused,
)

log = logging.getLogger("mailfiler.graph")

#: requests in flight per mailbox (Exchange Online's MailboxConcurrency limit)
CONCURRENCY = 4
#: the longest Retry-After honoured in one wait (Graph asks for seconds to minutes)
MAX_RETRY_AFTER = 60.0
#: how long one request may keep being throttled before ServerBusy reaches the caller
THROTTLE_BUDGET = 300.0
#: attempts for a GET whose connection broke or that got a 5xx without Retry-After
NETWORK_ATTEMPTS = 3
#: at most this many requests in one $batch (Graph's limit)
BATCH_MAX = 20
IMMUTABLE = 'IdType="ImmutableId"'

#: the access token; called with the token Graph refused to get a new one
TokenGetter = Callable[[str | None], Awaitable[str]]


class GraphError(Exception):
    """A Graph answer the caller may handle (a 4xx other than auth, throttling or a missing mailbox)."""

    def __init__(self, status: int, code: str, message: str, headers: httpx.Headers | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or httpx.Headers()


class DeltaExpired(GraphError):
    """410: a delta or skip token Graph no longer has (syncStateNotFound, resyncRequired)."""


class BatchUnusable(Exception):
    """A $batch answer too large to hold, or cut short: ask for its parts one by one."""


@dataclass
class BatchAnswer:
    status: int
    headers: dict[str, str]
    body: Any


def _error_of(status: int, body: Any, headers: httpx.Headers) -> tuple[str, str]:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("code") or status), str(err.get("message") or "")
    return str(status), ""


def _retry_after(headers: httpx.Headers | dict[str, str], default: float) -> float:
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        wait = float(value) if value is not None else default
    except ValueError:
        wait = default
    return min(max(wait, 0.0), MAX_RETRY_AFTER)


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verified TLS: the system's CAs, or only those of ``ca_file``."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


class GraphClient:
    """Requests to one mailbox's Graph root (``.../v1.0/users/{u}`` or ``.../v1.0/me``)."""

    def __init__(
        self,
        root: str,
        mailbox_path: str,
        token: TokenGetter,
        *,
        ca_file: str | None = None,
        timeout: float = 60.0,
        concurrency: int = CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.root = root.rstrip("/")  # https://graph.microsoft.com/v1.0
        self.mailbox_path = mailbox_path  # /users/{id} or /me
        self._token = token
        self.timeout = timeout
        self._gate = asyncio.Semaphore(concurrency)
        self._not_before = 0.0  # monotonic: no request before this (a Retry-After)
        self._http = httpx.AsyncClient(
            verify=ssl_context(ca_file),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 15.0)),
            limits=httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency),
            trust_env=ca_file is None,  # with a ca_file, environment CA bundles must not replace it
            transport=transport,
            follow_redirects=False,
        )
        #: requests sent (each try, each $batch counted once), for status and the benchmarks
        self.requests = 0
        self.throttled = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    def url(self, path: str) -> str:
        """A mailbox-relative path (``/mailFolders``) or a full URL (a nextLink) as a URL."""
        if path.startswith("https://") or path.startswith("http://"):
            return path
        return f"{self.root}{self.mailbox_path}{path}"

    # -- one request ---------------------------------------------------------------

    async def wait_turn(self) -> None:
        """Until a Retry-After the client met has passed."""
        await self._wait_turn()

    async def _wait_turn(self) -> None:
        delay = self._not_before - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _throttled(self, wait: float) -> None:
        self.throttled += 1
        self._not_before = max(self._not_before, time.monotonic() + wait)

    def _headers(self, token: str, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Prefer": IMMUTABLE, "Accept": "application/json"}
        if extra:
            for key, value in extra.items():
                headers[key] = f"{IMMUTABLE}, {value}" if key == "Prefer" else value
        return headers

    @contextlib.asynccontextmanager
    async def open(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """A successful (2xx) response, its body not yet read (stream it or ``aread``).
        Holds one of the mailbox's request slots until the block ends."""
        url = self.url(path)
        what = f"{method} {urlsplit(url).path}"
        throttled_since: float | None = None
        refreshed = False
        broken = 0
        while True:
            await self._wait_turn()
            token = await self._token(None)
            async with self._gate:
                try:
                    request = self._http.build_request(method, url, json=json, headers=self._headers(token, headers))
                    self.requests += 1
                    response = await self._http.send(request, stream=True)
                except httpx.ConnectError as exc:
                    raise _connect_error(exc, url) from exc
                except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                    broken += 1
                    if method != "GET" or broken >= NETWORK_ATTEMPTS:
                        if isinstance(exc, httpx.ConnectTimeout):
                            raise ServerUnreachable(f"Graph did not answer {what} in time") from exc
                        raise MailboxUnavailable(f"Graph connection lost during {what}: {type(exc).__name__}") from exc
                    log.info("graph: %s: connection lost (%s), retrying", what, type(exc).__name__)
                    await asyncio.sleep(0.5 * broken)
                    continue
                try:
                    if response.status_code < 300:
                        yield response
                        return
                    body = await _read_json(response)
                finally:
                    await response.aclose()
            status = response.status_code
            code, message = _error_of(status, body, response.headers)
            if status in (429, 503) or (status >= 500 and method == "GET"):
                now = time.monotonic()
                throttled_since = throttled_since or now
                default = 2.0 if status in (429, 503) else 1.0
                wait = _retry_after(response.headers, default)
                if status >= 500 and status != 503:
                    broken += 1
                    if broken >= NETWORK_ATTEMPTS:
                        raise MailboxUnavailable(f"Graph answered {what} with {status} {code}: {message}")
                if now - throttled_since + wait > THROTTLE_BUDGET:
                    raise ServerBusy(
                        f"Graph kept throttling {what} ({status} {code}) for {now - throttled_since:.0f} s"
                    )
                log.info("graph: %s: %s %s, waiting %.1f s", what, status, code, wait)
                self._throttled(wait)
                continue
            if status == 401 and not refreshed:
                refreshed = True
                await self._token(token)
                continue
            raise map_error(status, code, message, what, response.headers)

    async def request(
        self, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[Any, httpx.Headers]:
        """A JSON answer (None for 204) and its headers.  A GET whose answer breaks
        off part way (a dropped connection) is asked again."""
        for attempt in range(1, NETWORK_ATTEMPTS + 1):
            try:
                async with self.open(method, path, json=json, headers=headers) as response:
                    data = await asyncio.wait_for(response.aread(), self.timeout)
                    if not data:
                        return None, response.headers
                    return _loads(data), response.headers
            except (httpx.TransportError, TimeoutError, ValueError) as exc:
                what = f"{method} {urlsplit(self.url(path)).path}"
                if method != "GET" or attempt == NETWORK_ATTEMPTS:
                    raise MailboxUnavailable(f"Graph's answer to {what} broke off: {type(exc).__name__}") from exc
                log.info("graph: %s: the answer broke off (%s), asking again", what, type(exc).__name__)
                await asyncio.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    async def get(self, path: str, **params: str) -> Any:
        if params:
            path = f"{path}?{httpx.QueryParams(params)}"
        return (await self.request("GET", path))[0]

    async def pages(self, path: str, *, headers: dict[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Every page of a collection, following ``@odata.nextLink``.  A delta
        round's last page carries ``@odata.deltaLink``."""
        url: str | None = path
        while url is not None:
            page, _ = await self.request("GET", url, headers=headers)
            if not isinstance(page, dict) or not isinstance(page.get("value"), list):
                raise MailboxUnavailable(f"Graph answered {urlsplit(url).path} without a value list")
            yield page
            url = page.get("@odata.nextLink")

    async def batch(self, requests: list[dict[str, Any]], *, max_bytes: int | None = None) -> dict[str, BatchAnswer]:
        """Up to :data:`BATCH_MAX` requests (``id``, ``method``, ``url`` relative to
        the Graph root, optional ``headers``/``body``) in one round trip.  Each
        answer is its own (a throttled sub-request is a 429 there: the caller
        retries what it needs).  Non-JSON bodies come base64-encoded.  With
        ``max_bytes``, an answer larger than that, or one that breaks off, is
        :class:`BatchUnusable` (the caller asks for those things one by one)."""
        assert 0 < len(requests) <= BATCH_MAX
        for req in requests:
            req["headers"] = {"Prefer": IMMUTABLE, **(req.get("headers") or {})}
            if "body" in req:
                req["headers"].setdefault("Content-Type", "application/json")
        if max_bytes is None:
            body, _ = await self.request("POST", f"{self.root}/$batch", json={"requests": requests})
        else:
            body = await self._bounded_batch(requests, max_bytes)
        out: dict[str, BatchAnswer] = {}
        for item in (body or {}).get("responses", []):
            out[str(item.get("id"))] = BatchAnswer(
                int(item.get("status", 500)), dict(item.get("headers") or {}), item.get("body")
            )
        return out

    async def _bounded_batch(self, requests: list[dict[str, Any]], max_bytes: int) -> Any:
        parts: list[bytes] = []
        size = 0
        try:
            async with self.open("POST", f"{self.root}/$batch", json={"requests": requests}) as response:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise BatchUnusable(f"the $batch answer is over {max_bytes} bytes")
                    parts.append(chunk)
            return _loads(b"".join(parts))
        except (httpx.TransportError, ValueError) as exc:
            raise BatchUnusable(f"the $batch answer broke off or is not JSON: {type(exc).__name__}") from exc

    def note_throttled(self, headers: dict[str, str]) -> None:
        """A sub-request of a $batch was throttled: the whole client waits."""
        self._throttled(_retry_after(headers, 2.0))


def _loads(data: bytes) -> Any:
    import json

    return json.loads(data)


async def _read_json(response: httpx.Response) -> Any:
    try:
        data = await asyncio.wait_for(response.aread(), 30.0)
        return _loads(data) if data else None
    except (ValueError, httpx.HTTPError, TimeoutError):
        return None


def _connect_error(exc: httpx.ConnectError, url: str) -> MailboxUnavailable:
    host = urlsplit(url).netloc
    cause = exc.__context__ or exc.__cause__
    text = f"{exc} {cause or ''}"
    if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return TlsCertificateRefused(f"the TLS certificate of {host} is not trusted: {exc}")
    return ServerUnreachable(f"cannot connect to {host}: {exc}")


def map_error(status: int, code: str, message: str, what: str, headers: httpx.Headers) -> Exception:
    """A Graph error answer as mailfiler's error."""
    text = f"Graph answered {what} with {status} {code}" + (f": {message}" if message else "")
    if status == 401:
        return LoginRefused(text + " (the token was refused)")
    if status == 403 and code in ("ErrorAccessDenied", "Authorization_RequestDenied", "AccessDenied"):
        return LoginRefused(
            text + " (the app lacks the Mail.ReadWrite permission or admin consent, or an application"
            " access policy excludes this mailbox)"
        )
    if status == 404 and code in ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "UserNotFound"):
        return MailboxMissing(text)
    if status == 410:
        return DeltaExpired(status, code, message, headers)
    return GraphError(status, code, message, headers)
