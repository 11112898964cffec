"""The Graph-shaped faults the backend will be tested against (tests.servers.graph.faults)."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.fakes.graph.conftest import UPN, app_token, shape, user_path
from tests.fakes.graph.test_graph_mail import ACME, delta_url, drain, fill
from tests.servers.graph import GraphFake
from tests.servers.graph import faults as gf
from tests.servers.graph.model import mime_message

ERROR = {
    "error": {
        "code": "str",
        "message": "str",
        "innerError": {"date": "str", "request-id": "str", "client-request-id": "str"},
    }
}


def test_throttle_is_429_with_retry_after_then_clears(graph: GraphFake, api: httpx.Client) -> None:
    gf.throttle(graph, "GET messages/delta", retry_after=7, times=2)
    url = delta_url(graph)
    first = api.get(url)
    assert first.status_code == 429 and first.headers["retry-after"] == "7" and shape(first.json()) == ERROR
    assert api.get(url).status_code == 429
    assert api.get(url).status_code == 200
    assert graph.faults.fired["GET messages/delta"] == 2


def test_throttle_until_a_deadline_spares_the_token_endpoint(graph: GraphFake, api: httpx.Client) -> None:
    gf.throttle_until(graph, time.time() + 0.6, retry_after=1)
    assert api.get(user_path(graph)).status_code == 429
    assert app_token(graph)  # sign-in still works while Graph throttles
    assert api.get(f"{user_path(graph)}/mailFolders").status_code == 429
    time.sleep(0.7)
    assert api.get(user_path(graph)).status_code == 200


def test_unavailable_and_canned_expired_token(graph: GraphFake, api: httpx.Client) -> None:
    gf.unavailable(graph, "GET mailFolders", retry_after=2)
    resp = api.get(f"{user_path(graph)}/mailFolders")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "2"
    gf.unavailable(graph, "GET mailFolders")
    assert "retry-after" not in api.get(f"{user_path(graph)}/mailFolders").headers
    gf.token_expired(graph, "GET mailFolder")
    resp = api.get(f"{user_path(graph)}/mailFolders/inbox")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert api.get(f"{user_path(graph)}/mailFolders/inbox").status_code == 200


@pytest.mark.parametrize("code", ["syncStateNotFound", "resyncRequired"])
def test_delta_expired_hits_token_requests_only(graph: GraphFake, api: httpx.Client, code: str) -> None:
    fill(graph, 2)
    gf.delta_expired(graph, code=code)
    _, link, _ = drain(api, delta_url(graph))  # the first round carries no token: untouched
    resp = api.get(link)
    assert resp.status_code == 410 and resp.json()["error"]["code"] == code
    assert api.get(link).status_code == 200


def test_connection_dropped_mid_page_then_the_same_link_works(graph: GraphFake, api: httpx.Client) -> None:
    fill(graph, 5)
    first = api.get(delta_url(graph), headers={"Prefer": "odata.maxpagesize=2"}).json()
    gf.drop_mid_page(graph, after_bytes=100)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(first["@odata.nextLink"])
    items, _, _ = drain(api, first["@odata.nextLink"])
    assert len(first["value"]) + len(items) == 5


def test_value_dropped_mid_stream_and_a_drop_before_any_answer(graph: GraphFake, api: httpx.Client) -> None:
    msg = graph.deliver(UPN, ACME, mime_message("Big", body="y" * 200_000 + "\n"))
    gf.drop_mid_page(graph, "GET message/$value", after_bytes=70_000)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(f"{user_path(graph)}/messages/{msg.id}/$value")
    assert api.get(f"{user_path(graph)}/messages/{msg.id}/$value").content == msg.mime
    gf.drop(graph, "GET message")
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(f"{user_path(graph)}/messages/{msg.id}")


def test_slow_answers(graph: GraphFake, api: httpx.Client) -> None:
    gf.slow(graph, "GET user", seconds=0.3)
    started = time.monotonic()
    assert api.get(user_path(graph)).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_mailbox_concurrency_limit_counts_a_streaming_value(graph: GraphFake, api: httpx.Client) -> None:
    graph.options.mailbox_concurrency = 1
    msg = graph.deliver(UPN, ACME, mime_message("Huge", body="z" * 4_000_000 + "\n"))
    with api.stream("GET", f"{user_path(graph)}/messages/{msg.id}/$value") as stream:
        assert stream.status_code == 200  # the body is not read yet: the server holds the slot
        busy = api.get(user_path(graph))
        assert busy.status_code == 429 and "MailboxConcurrency" in busy.json()["error"]["message"]
        assert len(stream.read()) == len(msg.mime)
    deadline = time.monotonic() + 5
    while api.get(user_path(graph)).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_mailbox_request_rate_limit(graph: GraphFake, api: httpx.Client) -> None:
    graph.options.mailbox_rate = (5, 60.0)
    assert [api.get(user_path(graph)).status_code for _ in range(6)] == [200] * 5 + [429]
    resp = api.get(user_path(graph))
    assert resp.status_code == 429 and int(resp.headers["retry-after"]) > 1
