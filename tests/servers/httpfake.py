"""The common ground of the protocol-faithful HTTP fakes (Exchange EWS, Microsoft Graph).

Exchange and Microsoft 365 cannot be installed or reached from here, so their
backends are tested against fakes: real HTTP(S) servers on loopback whose
requests and responses follow Microsoft's published examples.  This module
gives each fake the same conventions:

- :class:`FakeServer` runs a :class:`Handler` subclass's ``route`` in a thread
  per connection (HTTP/1.1, keep-alive, chunked streaming), optionally over TLS
  with the test CA of :mod:`tests.servers.tls`.
- :class:`Faults` injects failures: a canned response (a status with headers
  and body: 401, 429 with Retry-After, 503, an EWS SOAP fault), a dropped
  connection (before the response or after N body bytes), or a delay.  Each
  fault names the operation it applies to (the fake decides what an
  operation is: a SOAP action for EWS, a path pattern for Graph) and how many
  times it fires.
- ``server.requests`` records what each request was (operation, method, path),
  bounded, so tests can assert what a client sent (and how often: hammering).
- :func:`run_standalone` serves a fake until Ctrl-C, for trying it with any
  client by hand (``python -m tests.servers.ews --port P``).
"""

from __future__ import annotations

import collections
import contextlib
import fnmatch
import http.server
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers.tls import Tls

#: requests kept in ``FakeServer.requests`` (a long soak must not grow memory)
REQUEST_LOG = 10_000


@dataclass
class Request:
    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    #: set by the fake's ``operation()``: what the request asks for ("SyncFolderItems", "GET messages/delta")
    operation: str = ""


@dataclass
class Response:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: streamed with chunked transfer encoding when set (EWS GetStreamingEvents); ``body`` is ignored
    chunks: Iterable[bytes] | None = None


@dataclass
class Fault:
    """One injected failure.  ``operation`` is an fnmatch pattern over
    ``Request.operation``; ``times`` is how often it fires (None: until cleared)."""

    operation: str
    times: int | None = 1
    response: Response | None = None  # a canned answer instead of the real one
    drop: bool = False  # close the connection without any answer
    drop_after: int | None = None  # answer, but close after this many body bytes
    delay: float = 0.0  # seconds before answering (or failing)
    #: also fire only when this holds for the request (e.g. one user's mailbox)
    when: Callable[[Request], bool] | None = None


class Faults:
    """Thread-safe list of pending faults; the first that matches fires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []
        self.fired: collections.Counter[str] = collections.Counter()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._pending.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()

    def take(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self._pending:
                if not fnmatch.fnmatchcase(request.operation, fault.operation):
                    continue
                if fault.when is not None and not fault.when(request):
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._pending.remove(fault)
                self.fired[fault.operation] += 1
                return fault
        return None


class _Dropped(Exception):
    """The fault asked to close the connection."""


class Handler(http.server.BaseHTTPRequestHandler):
    """Subclass and implement ``operation`` and ``route``; ``self.fake`` is the FakeServer."""

    protocol_version = "HTTP/1.1"
    fake: FakeServer

    # -- for subclasses ---------------------------------------------------
    def operation(self, request: Request) -> str:
        return f"{request.method} {request.path}"

    def route(self, request: Request) -> Response:
        raise NotImplementedError

    # -- plumbing -----------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK of the headers (~40 ms a response on Linux loopback).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read server.requests, not stderr

    def _serve(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            # A repeated header (two Prefer lines) is one comma-separated value (RFC 9110 5.3), not the last one.
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        request = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=headers,
            body=body,
        )
        request.operation = self.operation(request)
        self.fake.record(request)
        fault = self.fake.faults.take(request)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.drop:
            raise _Dropped
        response = fault.response if fault is not None and fault.response is not None else self.route(request)
        self._send(response, drop_after=fault.drop_after if fault is not None else None)

    def _send(self, response: Response, *, drop_after: int | None) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if response.chunks is None:
            body = response.body if drop_after is None else response.body[:drop_after]
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(body)
            if drop_after is not None:
                raise _Dropped
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent = 0
        for chunk in response.chunks:
            if drop_after is not None and sent + len(chunk) > drop_after:
                self.wfile.write(b"%x\r\n%s" % (drop_after - sent, chunk[: drop_after - sent]))
                raise _Dropped
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            sent += len(chunk)
        self.wfile.write(b"0\r\n\r\n")

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _Dropped:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                self.connection.shutdown(2)
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True  # the client went away: nothing to answer

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def server_activate(self) -> None:
        super().server_activate()
        self.open_connections: set[Any] = set()  # so that a restart can cut them
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class FakeServer:
    """A fake on 127.0.0.1: ``with FakeServer(MyHandler, tls=...) as server: server.url``."""

    def __init__(self, handler: type[Handler], *, tls: Tls | None = None, port: int = 0, timeout: float = 60.0):
        self.faults = Faults()
        self.requests: collections.deque[Request] = collections.deque(maxlen=REQUEST_LOG)
        self.tls = tls
        fake = self
        self._handler = type(handler.__name__, (handler,), {"fake": fake, "timeout": timeout})
        self._server = self._bind(port)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _bind(self, port: int) -> _ThreadingServer:
        server = _ThreadingServer(("127.0.0.1", port), self._handler)
        if self.tls is not None:
            context = self.tls.server_context()
            # Handshake in the connection's thread, not in accept(): a stuck client must not block the others.
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        return server

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def operations(self) -> list[str]:
        with self._lock:
            return [r.operation for r in self.requests]

    def start(self) -> FakeServer:
        # a short poll so that stop() (shutdown) returns within ~50 ms, not the default 0.5 s
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def restart(self, down_for: float = 0.0) -> None:
        """A server restart as clients see it: every open connection is cut (mid-response too), nothing
        listens for ``down_for`` seconds, then the same port serves again; the fake's state is kept."""
        self.stop()
        self._server.cut_connections()
        time.sleep(down_for)
        self._server = self._bind(self.port)
        self.start()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(handler: type[Handler], **kwargs: Any) -> Iterator[FakeServer]:
    with FakeServer(handler, **kwargs) as server:
        yield server


def run_standalone(server: FakeServer, what: str) -> None:
    """Serve until interrupted, saying where (for ``python -m tests.servers.X``)."""
    server.start()
    print(f"{what} listening on {server.url} (Ctrl-C stops it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
