"""The shared base of the Exchange and Graph fakes: routing, TLS, faults, streaming."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from tests.servers.httpfake import FakeServer, Fault, Handler, Request, Response
from tests.servers.tls import make_tls


class Echo(Handler):
    def operation(self, request: Request) -> str:
        return request.path.strip("/") or "root"

    def route(self, request: Request) -> Response:
        if request.path == "/stream":
            return Response(headers={"Content-Type": "text/plain"}, chunks=[b"one;", b"two;", b"three;"])
        return Response(headers={"Content-Type": "text/plain"}, body=request.method.encode() + b" " + request.body)


def test_routes_and_records() -> None:
    with FakeServer(Echo) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.post("/a", content=b"hi").text == "POST hi"
        assert client.get("/stream").text == "one;two;three;"
        assert server.operations() == ["a", "stream"]


def test_tls_with_the_test_ca_and_refused_with_another(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    with FakeServer(Echo, tls=tls) as server:
        assert server.url.startswith("https://127.0.0.1:")
        assert (
            httpx.get(server.url + "/x", verify=ssl.create_default_context(cafile=tls.ca_file), timeout=5).text
            == "GET "
        )
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/x", verify=ssl.create_default_context(cafile=tls.wrong_ca_file), timeout=5)


def test_faults_fire_as_often_as_asked_then_stop() -> None:
    with FakeServer(Echo) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        server.faults.add(Fault("busy*", times=2, response=Response(503, {"Retry-After": "1"}, b"busy")))
        assert [client.get("/busy1").status_code for _ in range(3)] == [503, 503, 200]
        assert client.get("/busy1").headers.get("retry-after") is None
        server.faults.add(Fault("gone", drop=True))
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/gone")
        assert client.get("/gone").status_code == 200
        assert server.faults.fired == {"busy*": 2, "gone": 1}


def test_a_stream_dropped_midway_is_an_error_for_the_client() -> None:
    with FakeServer(Echo) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        server.faults.add(Fault("stream", drop_after=6))
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/stream")
        assert client.get("/stream").text == "one;two;three;"
