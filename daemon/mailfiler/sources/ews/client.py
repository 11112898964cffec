"""exchangelib, run so that the event loop never blocks.

exchangelib is synchronous: every call runs in a thread pool bounded per
server and login (``max_connections``; exchangelib's session pool gets the same
size, so threads never queue for a session), under a timeout.  Its own retry
policy is FailFast: this module does the waiting, so a throttled server is
waited on as it asks (ErrorServerBusy's BackOffMilliseconds, capped) without
holding a thread, and a dropped connection (which exchangelib does not retry
with one session) is retried once.  What still fails is mapped onto the
distinct connection errors of :mod:`mailfiler.errors`.

exchangelib caches one protocol (sessions, retry policy) per endpoint and
credentials: mailboxes under one service account share its connections.
Streaming uses its own protocol (credentials tagged ``purpose="stream"``):
a GetStreamingEvents holds its session for minutes and must not starve the
requests."""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import requests.adapters
from exchangelib import DELEGATE, IMPERSONATION, Account, Build, Configuration, Credentials, Version
from exchangelib import errors as ex
from exchangelib.protocol import BaseProtocol, FailFast

from mailfiler.errors import (
    LoginRefused,
    MailboxMissing,
    MailboxUnavailable,
    ServerBusy,
    ServerUnreachable,
    TlsCertificateRefused,
)
from mailfiler.sources.ews.settings import VERSIONS, EwsSettings

log = logging.getLogger("mailfiler.sources.ews")
T = TypeVar("T")

#: how long a dropped connection waits before its one retry
DROP_RETRY_WAIT = 0.2


# -- TLS: a CA per server ------------------------------------------------------------------
# exchangelib builds its HTTP adapters from one class attribute; this adapter looks up
# the CA (or verify=False for a loopback test server) of the server it talks to.
_TLS: dict[str, str | bool] = {}


class _PerServerTlsAdapter(requests.adapters.HTTPAdapter):
    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        verify = _TLS.get(urlsplit(url).netloc.lower(), verify)
        super().cert_verify(conn, url, verify, cert)


def _install_tls(settings: EwsSettings) -> None:
    netloc = urlsplit(settings.url).netloc.lower()
    if not settings.verify_tls:
        _TLS[netloc] = False
    elif settings.ca_file:
        _TLS[netloc] = settings.ca_file
    if BaseProtocol.HTTP_ADAPTER_CLS is requests.adapters.HTTPAdapter:
        BaseProtocol.HTTP_ADAPTER_CLS = _PerServerTlsAdapter


# -- one thread pool per server and login ----------------------------------------------------
_POOLS: dict[tuple[str, str], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(settings: EwsSettings) -> ThreadPoolExecutor:
    with _POOLS_LOCK:
        pool = _POOLS.get(settings.endpoint_key)
        if pool is None:
            pool = ThreadPoolExecutor(settings.max_connections, thread_name_prefix="ews")
            _POOLS[settings.endpoint_key] = pool
        return pool


class _Credentials(Credentials):
    #: which protocol of exchangelib's cache (keyed by endpoint and credentials) this login gets
    purpose = "requests"


def _version(pin: str | None) -> Version | None:
    if pin is None:
        return None
    parts = VERSIONS.get(pin.lower()) or tuple(int(p) for p in pin.split("."))
    return Version(build=Build(*parts))


def make_account(settings: EwsSettings, *, purpose: str = "requests") -> Account:
    """An exchangelib Account (no network: the version is pinned, or probed at the first call)."""
    _install_tls(settings)
    secret = settings.secret()
    if settings.auth == "oauth2":
        from exchangelib import OAuth2AuthorizationCodeCredentials

        credentials: Any = OAuth2AuthorizationCodeCredentials(
            access_token={"access_token": secret, "token_type": "Bearer"}
        )
        auth_type = "OAuth 2.0"
    else:
        credentials = _Credentials(settings.username, secret)
        auth_type = "NTLM" if settings.auth == "ntlm" else "basic"
    if purpose != "requests":
        credentials.purpose = purpose
    config = Configuration(
        service_endpoint=settings.url,
        credentials=credentials,
        auth_type=auth_type,
        version=_version(settings.version),
        retry_policy=FailFast(),
        max_connections=settings.max_connections,
    )
    access = IMPERSONATION if settings.impersonate else DELEGATE
    account = Account(settings.mailbox, config=config, autodiscover=False, access_type=access)
    account.protocol.TIMEOUT = settings.timeout
    return account


# -- errors -------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def is_tls_failure(exc: BaseException) -> bool:
    return any(
        isinstance(e, ssl.SSLError | requests.exceptions.SSLError) or "CERTIFICATE_VERIFY_FAILED" in str(e)
        for e in _chain(exc)
    )


def is_drop(exc: BaseException) -> bool:
    """A connection cut or not answered (worth one retry), not a refusal."""
    if isinstance(exc, ex.ResponseMessageError) and not isinstance(exc, ex.ErrorTimeoutExpired):
        return False  # an answer from Exchange
    return isinstance(
        exc,
        ex.ErrorTimeoutExpired
        | requests.exceptions.ConnectionError
        | requests.exceptions.ChunkedEncodingError
        | ex.TransportError
        | ConnectionError,
    ) and not is_tls_failure(exc)


#: answers about one item, folder or subscription: the caller knows what they mean
ITEM_ERRORS: tuple[type[Exception], ...] = (
    ex.ErrorItemNotFound,
    ex.ErrorFolderNotFound,
    ex.ErrorInvalidSyncStateData,
    ex.ErrorIrresolvableConflict,
    ex.ErrorInvalidChangeKey,
    ex.ErrorMissedNotificationEvents,
    ex.ErrorSubscriptionNotFound,
    ex.ErrorInvalidSubscription,
    ex.ErrorInvalidIdMalformed,
    ex.ErrorFolderExists,
)


def map_error(exc: BaseException, settings: EwsSettings) -> Exception:
    """The mailfiler error for an exchangelib or transport failure of the mailbox as a whole."""
    where = f"{settings.mailbox} at {urlsplit(settings.url).netloc}"
    if isinstance(exc, ex.UnauthorizedError):
        settings.secret.invalidate()
        return LoginRefused(f"Exchange refused the login of {settings.username} ({where})", mailbox=settings.mailbox)
    if isinstance(exc, ex.ErrorImpersonateUserDenied | ex.ErrorAccessDenied):
        how = "impersonate" if settings.impersonate else "open"
        return LoginRefused(
            f"Exchange does not let {settings.username} {how} {settings.mailbox}: {exc} (for a service account the"
            " Exchange admin assigns the ApplicationImpersonation role; see the README)",
            mailbox=settings.mailbox,
        )
    if isinstance(exc, ex.ErrorNonExistentMailbox | ex.ErrorMailboxStoreUnavailable | ex.ErrorMailboxMoveInProgress):
        return MailboxMissing(f"no mailbox {where}: {exc}", mailbox=settings.mailbox)
    if isinstance(exc, ex.ErrorServerBusy | ex.ErrorTooManyObjectsOpened | ex.ErrorExceededConnectionCount):
        return ServerBusy(f"Exchange is throttling {where}: {exc}", mailbox=settings.mailbox)
    if is_tls_failure(exc):
        return TlsCertificateRefused(
            f"the TLS certificate of {urlsplit(settings.url).netloc} is not trusted: {exc}", mailbox=settings.mailbox
        )
    if is_drop(exc) or isinstance(exc, TimeoutError):
        return ServerUnreachable(
            f"no answer from Exchange ({where}): {exc or type(exc).__name__}", mailbox=settings.mailbox
        )
    if isinstance(exc, ex.ErrorInternalServerTransientError | ex.ErrorInternalServerError | ex.ErrorConnectionFailed):
        return MailboxUnavailable(f"Exchange failed ({where}): {exc}", mailbox=settings.mailbox)
    return MailboxUnavailable(f"EWS call failed ({where}): {type(exc).__name__}: {exc}", mailbox=settings.mailbox)


# -- calls -----------------------------------------------------------------------------------


class EwsClient:
    """Runs exchangelib calls for one mailbox in its server's pool."""

    def __init__(self, settings: EwsSettings) -> None:
        self.settings = settings
        self._account: Account | None = None
        #: requests made, for tests and benchmarks (throttled retries count too)
        self.calls = 0

    @property
    def account(self) -> Account:
        if self._account is None:
            self._account = make_account(self.settings)
        return self._account

    def forget_account(self) -> None:
        """After a refused login: the next call reads the secret again."""
        self._account = None

    async def run(self, fn: Callable[..., T], *args: Any, timeout: float | None = None, retry_drop: bool = True) -> T:
        """``fn(*args)`` in the pool; ErrorServerBusy waited out (capped), a drop retried once.

        Errors of single items or folders (ErrorItemNotFound, ErrorFolderNotFound,
        ErrorInvalidSyncStateData, ...) come through as exchangelib raises them for
        the caller to map; failures of the mailbox as a whole are mapped here."""
        loop = asyncio.get_running_loop()
        limit = timeout or self.settings.timeout
        waited = 0.0
        dropped = False
        while True:
            self.calls += 1
            try:
                future = loop.run_in_executor(_pool(self.settings), fn, *args)
                return await asyncio.wait_for(future, limit + 5)  # exchangelib's own timeout fires first
            except ex.ErrorServerBusy as exc:
                wait = min(max(exc.back_off or 1.0, 0.1), self.settings.max_back_off)
                if waited + wait > self.settings.max_back_off:
                    raise map_error(exc, self.settings) from exc
                log.info("Exchange asks %s to wait %.1f s (ErrorServerBusy)", self.settings.mailbox, wait)
                waited += wait
                await asyncio.sleep(wait)
            except (ex.UnauthorizedError, ex.ErrorImpersonateUserDenied, ex.ErrorNonExistentMailbox) as exc:
                self.forget_account()
                raise map_error(exc, self.settings) from exc
            except (ex.ErrorAccessDenied, ex.ErrorExceededConnectionCount, ex.ErrorMailboxStoreUnavailable) as exc:
                raise map_error(exc, self.settings) from exc
            except ITEM_ERRORS:
                raise
            except TimeoutError as exc:
                raise ServerUnreachable(
                    f"no answer from Exchange within {limit:.0f} s ({self.settings.mailbox})",
                    mailbox=self.settings.mailbox,
                ) from exc
            except Exception as exc:
                if retry_drop and not dropped and is_drop(exc):
                    dropped = True
                    log.info("connection to Exchange dropped (%s); retrying once", type(exc).__name__)
                    await asyncio.sleep(DROP_RETRY_WAIT)
                    continue
                raise map_error(exc, self.settings) from exc


__all__ = ["EwsClient", "is_drop", "make_account", "map_error"]
