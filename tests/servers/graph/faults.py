"""Graph-shaped faults on top of :class:`tests.servers.httpfake.Faults`.

Each helper adds one fault to a running :class:`GraphFake` and returns it
(``fault.times`` counts down; ``graph.faults.fired[pattern]`` counts firings).
``operation`` is an fnmatch pattern over the fake's operation names
("GET messages/delta", "GET message/$value", "PATCH message", "POST $batch",
"POST token", ...; ``graph.operations()`` lists what was asked).  By default
they hit Graph requests only (paths under /v1.0), not the token endpoint.
Inside ``$batch`` a canned fault becomes that sub-request's response."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tests.servers.graph.odata import JSON, error_body
from tests.servers.httpfake import Fault, Request, Response

if TYPE_CHECKING:
    from tests.servers.graph.server import GraphFake


def graph_only(request: Request) -> bool:
    return request.path.startswith("/v1.0/")


def _canned(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"Content-Type": JSON, **(headers or {})}, json.dumps(error_body(code, message)).encode())


def _add(graph: GraphFake, operation: str, times: int | None, response: Response | None = None,
         when: Callable[[Request], bool] | None = graph_only, **kwargs: object) -> Fault:  # fmt: skip
    return graph.faults.add(Fault(operation, times=times, response=response, when=when, **kwargs))  # type: ignore[arg-type]


def throttle(graph: GraphFake, operation: str = "*", *, retry_after: int = 1, times: int | None = 1) -> Fault:
    """429 with Retry-After, as Exchange Online answers past its per-mailbox limits."""
    response = _canned(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                       {"Retry-After": str(retry_after)})  # fmt: skip
    return _add(graph, operation, times, response)


def throttle_until(graph: GraphFake, deadline: float, operation: str = "*", *, retry_after: int = 1) -> Fault:
    """Every matching request is 429 until ``time.time()`` passes ``deadline`` (throttling for a period)."""
    response = _canned(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                       {"Retry-After": str(retry_after)})  # fmt: skip
    return _add(graph, operation, None, response, when=lambda r: graph_only(r) and time.time() < deadline)


def unavailable(
    graph: GraphFake, operation: str = "*", *, retry_after: int | None = None, times: int | None = 1
) -> Fault:
    """503 Service Unavailable (with Retry-After when given)."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    response = _canned(
        503, "ServiceUnavailable", "The service is temporarily unavailable. Please retry later.", headers
    )
    return _add(graph, operation, times, response)


def token_expired(graph: GraphFake, operation: str = "*", *, times: int | None = 1) -> Fault:
    """401 InvalidAuthenticationToken as for an expired access token (the token itself stays valid;
    ``graph.identity.expire_tokens()`` expires the real ones)."""
    response = _canned(401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.", {
        "WWW-Authenticate": 'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"',
    })  # fmt: skip
    return _add(graph, operation, times, response)


def delta_expired(graph: GraphFake, operation: str = "GET messages/delta", *, code: str = "syncStateNotFound",
                  times: int | None = 1) -> Fault:  # fmt: skip
    """410 Gone for a delta request: ``syncStateNotFound`` (an expired token) or ``resyncRequired``
    (a reset).  To expire the real tokens instead: ``graph.expire_delta_tokens()``."""
    message = ("The sync state generation is not found." if code == "syncStateNotFound"
               else "Resync required. Replace any local items with the server's items (sync state is invalid).")  # fmt: skip
    return _add(
        graph,
        operation,
        times,
        _canned(410, code, message),
        when=lambda r: graph_only(r) and bool(r.query.get("$deltatoken") or r.query.get("$skiptoken")),
    )


def drop(graph: GraphFake, operation: str = "*", *, times: int | None = 1) -> Fault:
    """The connection closes before any answer."""
    return _add(graph, operation, times, drop=True)


def drop_mid_page(graph: GraphFake, operation: str = "GET messages/delta", *, after_bytes: int = 256,
                  times: int | None = 1) -> Fault:  # fmt: skip
    """The answer starts (status, headers, ``after_bytes`` of body) and the connection closes:
    a delta page or a $value cut short."""
    return _add(graph, operation, times, drop_after=after_bytes)


def slow(graph: GraphFake, operation: str = "*", *, seconds: float = 1.0, times: int | None = 1) -> Fault:
    return _add(graph, operation, times, delay=seconds)


def duplicates(graph: GraphFake, count: int = 1) -> None:
    """Each delta page after the first repeats the last ``count`` items of the page before (0: off)."""
    graph.options.duplicates = count
