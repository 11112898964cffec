"""A throw-away Radicale (CalDAV + CardDAV) on loopback for the sync tests.

``radicale`` (session scope) writes a config into a temp dir and runs
``python -m radicale --config <dir>/config`` as a subprocess on a free
127.0.0.1 port, with htpasswd auth (plain passwords), ``owner_only`` rights,
filesystem storage in the temp dir, and no login delay; it waits until the
server answers HTTP.  One server serves the whole session: test modules
import the fixtures from here, and every import shares the one process
(:func:`shared_server`), stopped when the session ends.

``dav_user`` (function scope) adds a fresh user with a unique name, so each
test has its own empty calendars and address books (``owner_only``: users
never see each other's collections), and removes that user's storage after.

:func:`start_radicale` starts a separate server (TLS, kill and restart
tests).  Without Radicale (the ``radicale`` package of the ``test`` extra)
the tests are skipped, except under ``CI=true``, where they fail (as the
PostgreSQL and Dovecot fixtures do).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers.postgres import _unavailable, free_port

START_ATTEMPTS = 3
READY_TIMEOUT = 20.0
RADICALE_FIXTURES = {"radicale", "dav_user"}

_user_numbers = itertools.count(1)


@dataclass
class DavUser:
    server: RadicaleServer
    name: str
    password: str
    password_file: Path

    def url(self, collection: str) -> str:
        """The URL of one of this user's collections (made by the target on first use)."""
        return f"{self.server.base_url}/{self.name}/{collection}/"

    def target_kwargs(self) -> dict:
        """Keyword arguments for a DavTarget: the credentials, and the CA when on TLS."""
        kw: dict = {"username": self.name, "password": self.password, "timeout": 10.0}
        if self.server.ca_file is not None:
            kw["ca_file"] = self.server.ca_file
        return kw

    def collection_dir(self, collection: str) -> Path:
        """Where Radicale keeps a collection's items (one file per item)."""
        return self.server.storage / "collection-root" / self.name / collection


@dataclass
class RadicaleServer:
    base: Path
    port: int = 0
    #: server certificate and key, and the CA file a client needs: TLS when set
    cert: Path | None = None
    key: Path | None = None
    ca_file: Path | None = None
    process: subprocess.Popen | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.base / "config"

    @property
    def htpasswd(self) -> Path:
        return self.base / "users"

    @property
    def storage(self) -> Path:
        return self.base / "collections"

    @property
    def log(self) -> Path:
        return self.base / "radicale.log"

    @property
    def base_url(self) -> str:
        scheme = "https" if self.cert else "http"
        host = "localhost" if self.cert else "127.0.0.1"  # the certificate names localhost and 127.0.0.1
        return f"{scheme}://{host}:{self.port}"

    def write_config(self) -> None:
        tls = ""
        if self.cert and self.key:
            tls = f"ssl = True\ncertificate = {self.cert}\nkey = {self.key}\n"
        self.config.write_text(
            f"[server]\nhosts = 127.0.0.1:{self.port}\nmax_connections = 20\ntimeout = 30\n{tls}"
            f"[auth]\ntype = htpasswd\nhtpasswd_filename = {self.htpasswd}\nhtpasswd_encryption = plain\n"
            "delay = 0\n"
            "[rights]\ntype = owner_only\n"
            f"[storage]\nfilesystem_folder = {self.storage}\n"
            "[web]\ntype = none\n"
            "[logging]\nlevel = warning\nmask_passwords = True\n",
            encoding="utf-8",
        )
        if not self.htpasswd.exists():
            self.htpasswd.write_text("", encoding="utf-8")

    def start(self) -> None:
        self.write_config()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RADICALE")}
        env["RADICALE_CONFIG"] = str(self.config)  # and nothing from /etc/radicale or ~/.config
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "radicale", "--config", str(self.config)],
                cwd=self.base,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"radicale exited with {self.process.returncode}\n{self.log_tail()}")
            if self.probe():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"radicale did not answer within {READY_TIMEOUT:g} s\n{self.log_tail()}")

    def probe(self) -> bool:
        """True when the server answers HTTP (any status: 401 for an anonymous OPTIONS)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                if self.cert:
                    return True  # listening is enough; the TLS tests do the handshakes
                s.sendall(b"OPTIONS / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return s.recv(12).startswith(b"HTTP/")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a server that dies mid-sync."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "radicale log:\n" + "\n".join(text.splitlines()[-lines:])

    def add_user(self, name: str | None = None, password: str | None = None) -> DavUser:
        name = name or f"u{next(_user_numbers)}-{uuid.uuid4().hex[:6]}"
        password = password or f"pw-{uuid.uuid4().hex[:12]}"
        self.users[name] = password
        # written whole and renamed: the server re-reads the file when it changes
        tmp = self.htpasswd.with_suffix(".tmp")
        tmp.write_text("".join(f"{u}:{p}\n" for u, p in self.users.items()), encoding="utf-8")
        os.replace(tmp, self.htpasswd)
        pw_file = self.base / "secrets" / name
        pw_file.parent.mkdir(exist_ok=True)
        pw_file.write_text(password + "\n", encoding="utf-8")
        pw_file.chmod(0o600)
        return DavUser(self, name, password, pw_file)

    def remove_user(self, user: DavUser) -> None:
        shutil.rmtree(self.storage / "collection-root" / user.name, ignore_errors=True)


def _check_installed() -> None:
    try:
        import radicale  # noqa: F401
    except ImportError:
        _unavailable("Radicale is not installed (it is in the test extra: pip install -e '.[test]')")


@contextlib.contextmanager
def start_radicale(*, tls: bool = False) -> Iterator[RadicaleServer]:
    """A server of its own (skips or fails when Radicale is missing); removed afterwards."""
    _check_installed()
    base = Path(tempfile.mkdtemp(prefix="mf-radicale-"))
    server = RadicaleServer(base)
    try:
        if tls:
            from tests.servers.dovecot import make_tls

            made = make_tls(base)
            server.cert, server.key, server.ca_file = made.cert, made.key, made.ca_file
        for attempt in range(START_ATTEMPTS):  # another process may take the free port first
            server.port = free_port()
            try:
                server.start()
                break
            except RuntimeError as exc:
                if attempt == START_ATTEMPTS - 1:
                    _unavailable(f"Radicale could not be started: {exc}")
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


_shared: RadicaleServer | None = None


def shared_server(config: pytest.Config) -> RadicaleServer:
    """The session's one server, started on first use and stopped at the end of the session."""
    global _shared
    if _shared is None or _shared.process is None or _shared.process.poll() is not None:
        cm = start_radicale()
        _shared = cm.__enter__()

        def stop() -> None:
            global _shared
            _shared = None
            cm.__exit__(None, None, None)

        config.add_cleanup(stop)
    return _shared


@pytest.fixture(scope="session")
def radicale(request: pytest.FixtureRequest) -> RadicaleServer:
    return shared_server(request.config)


@pytest.fixture
def dav_user(radicale: RadicaleServer) -> Iterator[DavUser]:
    user = radicale.add_user()
    try:
        yield user
    finally:
        radicale.remove_user(user)


# --- between the client and the server ---------------------------------------------------------


@dataclass
class Seen:
    """One request as the server saw it: method, path, and the XML body's root (REPORT, PROPFIND)."""

    method: str
    path: str
    report: str = ""


class FaultTransport(httpx.AsyncBaseTransport):
    """An httpx transport in front of the real one: records every request and
    injects faults, a proxy between the DAV target and Radicale.

    ``fail(seen, n)`` is asked before the n-th request of that method; it may
    return an ``httpx.Response`` to answer instead of the server (a 500, a
    403), an exception to raise (a dropped connection), or the string
    ``"lose-reply"``: the request reaches the server, the reply is lost."""

    def __init__(self, fail: Callable[[Seen, int], object] | None = None) -> None:
        self.inner: httpx.AsyncBaseTransport | None = None
        self.fail = fail
        self.seen: list[Seen] = []
        self.counts: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.inner is not None, "pass FaultTransport.wrap as the target's wrap_transport"
        body = request.content if request.method in ("REPORT", "PROPFIND") else b""
        root = ""
        if body:
            head = body.split(b">", 2)[1] if body.startswith(b"<?xml") else body
            root = head.split(b" ", 1)[0].lstrip(b"<").split(b":")[-1].decode()
        seen = Seen(request.method, request.url.path, root)
        self.seen.append(seen)
        self.counts[request.method] = self.counts.get(request.method, 0) + 1
        action = self.fail(seen, self.counts[request.method]) if self.fail else None
        if isinstance(action, httpx.Response):
            return action
        if isinstance(action, BaseException):
            raise action
        response = await self.inner.handle_async_request(request)
        if action == "lose-reply":
            await response.aclose()
            raise httpx.ReadError("connection reset by peer (injected)", request=request)
        return response

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()

    def wrap(self, inner: httpx.AsyncBaseTransport) -> FaultTransport:
        self.inner = inner
        return self

    def methods(self) -> list[str]:
        """The requests seen, as METHOD or REPORT:kind / PROPFIND:kind."""
        return [f"{s.method}:{s.report}" if s.report else s.method for s in self.seen]

    def clear(self) -> None:
        self.seen.clear()
        self.counts.clear()


def http_error(status: int, text: str = "") -> httpx.Response:
    return httpx.Response(status, text=text or f"injected HTTP {status}")


class WeakEtagTransport(httpx.AsyncBaseTransport):
    """A server that hands out weak etags (``W/"x"``) and compares ``If-Match``
    strongly, as RFC 9110 says: every etag Radicale gives is turned weak on the
    way back, and requests pass unchanged, so Radicale (which compares the
    strings) refuses ``If-Match: W/"x"`` with a 412, as such a server would."""

    def __init__(self) -> None:
        self.inner: httpx.AsyncBaseTransport | None = None

    def wrap(self, inner: httpx.AsyncBaseTransport) -> WeakEtagTransport:
        self.inner = inner
        return self

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.inner is not None
        response = await self.inner.handle_async_request(request)
        content = await response.aread()
        drop = ("content-length", "content-encoding")  # the body is read (decoded) here
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in drop]
        headers = [(k, "W/" + v if k.lower() == "etag" and not v.startswith("W/") else v) for k, v in headers]
        if response.status_code == 207:
            content = re.sub(rb'(getetag>)(")', rb"\1W/\2", content)
        return httpx.Response(response.status_code, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()


class DigestGate(httpx.AsyncBaseTransport):
    """A server that takes HTTP Digest only (RFC 7616, MD5, qop=auth), in front
    of Radicale (which takes Basic): a request with a valid Digest answer goes
    on with the user's Basic login; any other gets the 401 challenge.  Each
    request's scheme is recorded (``schemes``: digest, basic, none)."""

    REALM = "mailfiler-test"

    def __init__(self, users: dict[str, str]) -> None:
        self.inner: httpx.AsyncBaseTransport | None = None
        self.users = users
        self.nonce = uuid.uuid4().hex
        self.schemes: list[str] = []

    def wrap(self, inner: httpx.AsyncBaseTransport) -> DigestGate:
        self.inner = inner
        return self

    def _valid(self, request: httpx.Request, header: str) -> str | None:
        import hashlib

        params = dict(re.findall(r'(\w+)="?([^",]*)"?', header[len("Digest ") :]))
        user = params.get("username", "")
        if user not in self.users or params.get("nonce") != self.nonce or params.get("realm") != self.REALM:
            return None

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()  # what Digest MD5 is, not a choice

        ha1 = md5(f"{user}:{self.REALM}:{self.users[user]}")
        ha2 = md5(f"{request.method}:{params.get('uri', '')}")
        expected = md5(f"{ha1}:{self.nonce}:{params.get('nc')}:{params.get('cnonce')}:{params.get('qop')}:{ha2}")
        return (
            user if params.get("response") == expected and params.get("uri") == request.url.raw_path.decode() else None
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert self.inner is not None
        header = request.headers.get("authorization", "")
        scheme = header.split(" ", 1)[0].lower() or "none"
        self.schemes.append(scheme)
        user = self._valid(request, header) if scheme == "digest" else None
        if user is None:
            challenge = f'Digest realm="{self.REALM}", nonce="{self.nonce}", qop="auth", algorithm=MD5'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge}, text="login", request=request)
        token = base64.b64encode(f"{user}:{self.users[user]}".encode()).decode()
        request.headers["Authorization"] = f"Basic {token}"
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()
