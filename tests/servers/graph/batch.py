"""JSON batching: ``POST /v1.0/$batch`` with up to 20 requests, optional
``dependsOn`` (a failed dependency makes its dependants 424), per-request
status, headers and body (JSON bodies as objects, others base64-encoded).

Sub-requests pass the same auth and faults as top-level ones (a canned fault
response becomes that sub-request's response, as a throttled request inside
a batch gets its own 429); a drop fault inside a batch becomes a 503."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers.graph.model import GraphError
from tests.servers.graph.odata import error_body, json_response, read_json
from tests.servers.httpfake import Faults, Request, Response

MAX_REQUESTS = 20


def run_batch(request: Request, faults: Faults, operation: Callable[[Request], str],
              dispatch: Callable[[Request], Response], log: Callable[[Request], None]) -> Response:  # fmt: skip
    body = read_json(request)
    items = body.get("requests")
    if not isinstance(items, list) or not items:
        raise GraphError(400, "BadRequest", "Invalid batch payload format.")
    if len(items) > MAX_REQUESTS:
        raise GraphError(400, "BadRequest", f"Batch request must contain {MAX_REQUESTS} or fewer requests.")
    ids = [str(item.get("id", "")).lower() for item in items if isinstance(item, dict)]
    if len(ids) != len(items) or "" in ids or len(set(ids)) != len(ids):
        raise GraphError(400, "BadRequest", "Each batch request needs a unique id.")
    for item in items:
        if not item.get("method") or not item.get("url"):
            raise GraphError(400, "BadRequest", f"Batch request {item.get('id')} needs a method and a url.")
        for dep in item.get("dependsOn") or []:
            if str(dep).lower() not in ids:
                raise GraphError(400, "BadRequest", f"dependsOn names an unknown request id {dep!r}.")
    statuses: dict[str, int] = {}
    responses = []
    for item in items:
        ident = str(item["id"])
        failed = [d for d in item.get("dependsOn") or [] if statuses.get(str(d).lower(), 424) >= 400]
        if failed:
            sub_response = json_response(error_body("FailedDependency", "Dependency failed or was not run."), 424)
        else:
            sub = _sub_request(request, item)
            sub.operation = operation(sub)
            log(sub)
            fault = faults.take(sub)
            if fault is not None:
                sub_response = fault.response or json_response(
                    error_body("ServiceUnavailable", "Service unavailable."), 503
                )
            else:
                sub_response = dispatch(sub)
        statuses[ident.lower()] = sub_response.status
        responses.append(_pack(ident, sub_response))
    return json_response({"responses": responses})


def _sub_request(outer: Request, item: dict[str, Any]) -> Request:
    url = str(item["url"])
    split = urlsplit(url if url.startswith("/") else "/" + url)
    headers = {
        "authorization": outer.headers.get("authorization", "")
    }  # the batch's own token; other headers are per request
    headers.update({str(k).lower(): str(v) for k, v in (item.get("headers") or {}).items()})
    raw = item.get("body")
    if raw is None:
        data = b""
    elif isinstance(raw, (dict, list)):
        data = json.dumps(raw).encode()
    else:
        data = base64.b64decode(str(raw))
    return Request(method=str(item["method"]).upper(), path="/v1.0" + split.path,
                   query=parse_qs(split.query, keep_blank_values=True), headers=headers, body=data)  # fmt: skip


def _pack(ident: str, response: Response) -> dict[str, Any]:
    data = b"".join(response.chunks) if response.chunks is not None else response.body
    content_type = response.headers.get("Content-Type", "")
    out: dict[str, Any] = {"id": ident, "status": response.status, "headers": dict(response.headers)}
    if data:
        out["body"] = (
            json.loads(data) if content_type.startswith("application/json") else base64.b64encode(data).decode()
        )
    return out
