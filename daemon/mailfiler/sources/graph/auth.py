"""Sign-in to Microsoft 365 with msal, Microsoft's own client.

Two ways, chosen by the config:

* **app-only** (client credentials): one app registration in the tenant, a
  client secret (``password_file``/``password_command``) or a certificate
  (``client_cert`` + ``client_key``), and ``user:`` names the mailbox
  (``/users/{upn}``).  The way Dynamics reaches Exchange Online; one app serves
  many mailboxes, scoped by an application access policy.
* **device code** for one user: ``mailfiler login MAILBOX`` prints a code to
  enter at microsoft.com/devicelogin; the refresh token lands in a token cache
  in ``state_dir`` (mode 0600) and the daemon refreshes it silently (``/me``).

msal is synchronous: every call runs in a thread, bounded by ``timeout`` (the
thread's HTTP calls have the same timeout, so none outlives it for long).
Tokens and secrets are never logged; errors carry msal's error code and
description, which hold neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailfiler.errors import LoginRefused, ServerUnreachable, TlsCertificateRefused

log = logging.getLogger("mailfiler.graph")

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
APP_SCOPES = ["https://graph.microsoft.com/.default"]
#: delegated scopes of a device-code sign-in (msal adds openid, profile, offline_access)
USER_SCOPES = ["https://graph.microsoft.com/Mail.ReadWrite"]
#: what sync-back adds to them (the contacts and the calendar of the user)
SYNC_BACK_SCOPES = ("https://graph.microsoft.com/Contacts.ReadWrite", "https://graph.microsoft.com/Calendars.ReadWrite")


@dataclass(frozen=True)
class SignIn:
    """How a mailbox signs in (no secret held here: ``secret`` reads it when needed)."""

    tenant: str
    client_id: str
    authority: str = DEFAULT_AUTHORITY
    #: app-only: the client secret, read at sign-in (a SecretProvider); None for a certificate or device code
    secret: Callable[[], str] | None = None
    #: app-only with a certificate: PEM files
    client_cert: str | None = None
    client_key: str | None = None
    #: device code: the token cache file
    cache_file: Path | None = None
    ca_file: str | None = None
    timeout: float = 30.0
    #: device code: delegated scopes besides Mail.ReadWrite (sync-back's)
    extra_scopes: tuple[str, ...] = ()

    @property
    def user_scopes(self) -> list[str]:
        return USER_SCOPES + list(self.extra_scopes)

    @property
    def app_only(self) -> bool:
        return self.secret is not None or self.client_cert is not None

    @property
    def authority_url(self) -> str:
        return f"{self.authority.rstrip('/')}/{self.tenant}"


def _http_session(sign_in: SignIn) -> Any:
    import requests

    session = requests.Session()
    if sign_in.ca_file:
        session.verify = sign_in.ca_file
        # else REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE from the environment override session.verify
        session.trust_env = False
    session.request = functools.partial(session.request, timeout=sign_in.timeout)  # type: ignore[method-assign]
    return session


def _certificate_credential(cert_file: str, key_file: str | None) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    cert_pem = Path(cert_file).read_bytes()
    key_pem = Path(key_file).read_bytes() if key_file else cert_pem
    cert = x509.load_pem_x509_certificate(cert_pem)
    return {
        "private_key": key_pem.decode(),
        "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),
        "public_certificate": cert.public_bytes(Encoding.PEM).decode(),
    }


class TokenCacheFile:
    """msal's serializable cache kept in a 0600 file, written atomically when it changed.

    The daemon and the CLI (``folders list``...) may refresh the same user's tokens, and
    the identity platform may rotate the refresh token on each use: every use reads the
    file again under an exclusive lock (:meth:`locked`), so a process never refreshes
    with a refresh token another one has already replaced."""

    def __init__(self, path: Path) -> None:
        import msal

        self.path = path
        self.cache = msal.SerializableTokenCache()
        self._loaded: tuple[int, int] | None = None
        self.reload()

    def reload(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        if self._loaded != (st.st_mtime_ns, st.st_size):
            self.cache.deserialize(self.path.read_text())
            self._loaded = (st.st_mtime_ns, st.st_size)

    @contextlib.contextmanager
    def locked(self, *, reload: bool = True) -> Iterator[None]:
        """Read the file again, use the cache, write it if it changed: one process at a time
        (``reload=False``: what is in memory replaces the file, as after a new sign-in)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if reload:
                self.reload()
            yield
            self.save()
        finally:
            os.close(fd)

    def save(self) -> None:
        if not self.cache.has_state_changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.cache.serialize())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
        self.cache.has_state_changed = False
        st = self.path.stat()
        self._loaded = (st.st_mtime_ns, st.st_size)


def _refusal(result: dict[str, Any], what: str) -> Exception:
    """An msal error result as mailfiler's error (never the token, only codes and descriptions)."""
    error = str(result.get("error", "unknown"))
    desc = str(result.get("error_description", "")).split("\r\n")[0].split("\n")[0]
    text = f"{what}: {error}" + (f": {desc}" if desc else "")
    if "consent" in desc.lower() or "AADSTS65001" in desc:
        text += " (an administrator must grant the app's permissions again)"
    return LoginRefused(text)


def _network_error(exc: Exception, what: str) -> Exception:
    text = f"{what}: {type(exc).__name__}: {exc}"
    if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSLCertVerificationError" in repr(exc):
        return TlsCertificateRefused(text)
    return ServerUnreachable(text)


class Tokens:
    """Access tokens for one mailbox, app-only or from the device-code cache."""

    def __init__(self, sign_in: SignIn, what: str) -> None:
        self.sign_in = sign_in
        self.what = what
        self._app: Any = None
        self._cache: TokenCacheFile | None = None
        self._lock = asyncio.Lock()
        self._thread_lock = threading.Lock()
        self._token: str | None = None
        self._expires = 0.0
        #: token requests made (the benchmarks and tests count them)
        self.acquired = 0

    def _make_app(self) -> Any:
        import msal

        s = self.sign_in
        common = {
            "authority": s.authority_url,
            "http_client": _http_session(s),
            # the default instance discovery asks login.microsoftonline.com about the authority:
            # not needed for a configured tenant, and impossible for a private (test) authority
            "instance_discovery": False,
        }
        if s.app_only:
            if s.client_cert is not None:
                credential: Any = _certificate_credential(s.client_cert, s.client_key)
            else:
                assert s.secret is not None
                credential = s.secret()
            return msal.ConfidentialClientApplication(s.client_id, client_credential=credential, **common)
        if s.cache_file is None:
            raise LoginRefused(f"{self.what}: no token cache: run `mailfiler login` for this mailbox")
        self._cache = TokenCacheFile(s.cache_file)
        return msal.PublicClientApplication(s.client_id, token_cache=self._cache.cache, **common)

    def _acquire(self, force: bool) -> dict[str, Any]:
        with self._thread_lock:
            if self._app is None or (force and self.sign_in.app_only):
                # app-only: msal answers from its in-memory cache while a token is valid, so a
                # refused token goes with the app (and a rotated secret is read again)
                self._app = self._make_app()
            self.acquired += 1
            if self.sign_in.app_only:
                return self._app.acquire_token_for_client(scopes=APP_SCOPES)
            assert self._cache is not None
            with self._cache.locked():
                accounts = self._app.get_accounts()
                if not accounts:
                    return {"error": "no_account", "error_description": "no signed-in user: run `mailfiler login`"}
                result = self._app.acquire_token_silent_with_error(
                    self.sign_in.user_scopes, account=accounts[0], force_refresh=force
                )
            if result is None:
                return {"error": "no_token", "error_description": "sign in again with `mailfiler login`"}
            return result

    async def __call__(self, refused: str | None = None) -> str:
        """A valid access token; ``refused``: the token Graph just refused (a new one is
        fetched once, however many requests met the refusal at the same time)."""
        async with self._lock:
            fresh = self._token is not None and time.time() < self._expires - 120
            if fresh and self._token != refused:
                assert self._token is not None
                return self._token
            refresh = refused is not None
            try:
                result = await asyncio.wait_for(asyncio.to_thread(self._acquire, refresh), self.sign_in.timeout * 2 + 5)
            except TimeoutError as exc:
                raise ServerUnreachable(f"{self.what}: the sign-in server did not answer in time") from exc
            except (LoginRefused, ServerUnreachable):
                raise
            except (OSError, ValueError) as exc:
                # requests' ConnectionError is an OSError; msal raises ValueError on a bad authority answer
                raise _network_error(exc, self.what) from exc
            except Exception as exc:
                if type(exc).__module__.startswith(("requests", "urllib3")):
                    raise _network_error(exc, self.what) from exc
                raise LoginRefused(f"{self.what}: sign-in failed: {type(exc).__name__}") from exc
            if "access_token" not in result:
                self._token = None
                raise _refusal(result, self.what)
            self._token = str(result["access_token"])
            self._expires = time.time() + float(result.get("expires_in", 3600))
            return self._token


# -- device-code sign-in (mailfiler login) ---------------------------------------------


def device_login(sign_in: SignIn, show: Callable[[str], None], *, exit_after: float = 900.0) -> str:
    """Sign one user in by device code (blocking: the CLI's).  ``show`` prints
    msal's instructions.  Returns the signed-in user's name; the refresh token
    is in ``sign_in.cache_file`` (0600)."""
    import msal

    assert sign_in.cache_file is not None
    cache = TokenCacheFile(sign_in.cache_file)
    try:
        app = msal.PublicClientApplication(
            sign_in.client_id,
            authority=sign_in.authority_url,
            token_cache=cache.cache,
            http_client=_http_session(sign_in),
            instance_discovery=False,
        )
        flow = app.initiate_device_flow(scopes=sign_in.user_scopes)
    except Exception as exc:
        raise _network_error(exc, "device-code sign-in") from exc
    if "user_code" not in flow:
        raise _refusal(flow, "device-code sign-in")
    show(str(flow.get("message", "")))
    deadline = time.time() + exit_after
    result = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: time.time() > deadline)
    if "access_token" not in result:
        raise _refusal(result, "device-code sign-in")
    cache.cache.has_state_changed = True
    with cache.locked(reload=False):
        pass  # the new sign-in replaces the file, under the lock the daemon takes too
    claims = result.get("id_token_claims") or {}
    return str(claims.get("preferred_username") or claims.get("name") or claims.get("oid") or "the user")


def cache_file_for(state_dir: Path, mailbox: str) -> Path:
    """The token cache of a mailbox signed in by device code."""
    safe = hashlib.sha256(mailbox.encode()).hexdigest()[:16]
    return state_dir / "graph-tokens" / f"{safe}.json"


def describe(sign_in: SignIn) -> str:
    """How the mailbox signs in, for logs (no secret)."""
    how = "certificate" if sign_in.client_cert else "client secret" if sign_in.secret else "device code"
    return json.dumps({"tenant": sign_in.tenant, "client_id": sign_in.client_id, "how": how})
