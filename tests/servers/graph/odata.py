"""OData conventions Graph follows: JSON bodies, the error shape, ``Prefer``
headers, ``$select``/``$top``/``$skip`` and the opaque state tokens behind
``$skiptoken`` and ``$deltatoken``."""

from __future__ import annotations

import collections
import json
import re
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from tests.servers.graph.model import GraphError, Mailbox
from tests.servers.httpfake import Request, Response

if TYPE_CHECKING:
    from tests.servers.graph.identity import TokenInfo
    from tests.servers.graph.server import GraphFake

JSON = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


def error_body(code: str, message: str, request: Request | None = None) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                "request-id": str(uuid.uuid4()),
                "client-request-id": (request.headers.get("client-request-id") if request else None)
                or str(uuid.uuid4()),
            },
        }
    }


def error_response(err: GraphError, request: Request | None = None) -> Response:
    return json_response(error_body(err.code, err.message, request), err.status, err.headers)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"Content-Type": JSON, **(headers or {})}, json.dumps(obj).encode())


def read_json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError as exc:
        raise GraphError(400, "BadRequest", f"Unable to read JSON request payload: {exc}") from None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request payload must be a JSON object.")
    return body


def prefer(request: Request) -> dict[str, str]:
    """``Prefer: odata.maxpagesize=2, IdType="ImmutableId"`` -> {"odata.maxpagesize": "2", "idtype": "ImmutableId"}."""
    out: dict[str, str] = {}
    for part in re.split(r",\s*", request.headers.get("prefer", "")):
        name, _, value = part.partition("=")
        if name.strip():
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def one(request: Request, name: str) -> str | None:
    values = request.query.get(name) or request.query.get(name.lower())
    if values is None:
        for key, vals in request.query.items():
            if key.lower() == name.lower():
                values = vals
    return values[0] if values else None


def page_size(request: Request, default: int, maximum: int, stored: int | None = None) -> int:
    wanted = prefer(request).get("odata.maxpagesize") or one(request, "$top")
    if wanted is None:
        return stored or default
    try:
        return max(1, min(int(wanted), maximum))
    except ValueError:
        raise GraphError(400, "BadRequest", f"Invalid page size {wanted!r}.") from None


def select(item: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """Apply ``$select``: annotations (``@odata.*``) and ``id`` are always kept."""
    if not fields:
        return item
    wanted = {f.lower() for f in fields}
    return {k: v for k, v in item.items() if k.startswith("@") or k == "id" or k.lower() in wanted}


def select_list(request: Request) -> list[str] | None:
    raw = one(request, "$select")
    return [f.strip() for f in raw.split(",") if f.strip()] if raw else None


class StateTokens:
    """Server-side state behind opaque skip and delta tokens (bounded: the oldest are forgotten,
    which a client sees as an expired token, as with Outlook's token cache)."""

    def __init__(self, limit: int = 20_000):
        self._lock = threading.Lock()
        self._states: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.limit = limit

    def put(self, state: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._states[token] = state
            while len(self._states) > self.limit:
                self._states.popitem(last=False)
        return token

    def get(self, token: str) -> dict[str, Any] | None:
        with self._lock:
            return self._states.get(token)

    def expire(self, predicate: Any = None) -> int:
        """Forget tokens (all, or those whose state matches); returns how many."""
        with self._lock:
            doomed = [t for t, s in self._states.items() if predicate is None or predicate(s)]
            for token in doomed:
                del self._states[token]
            return len(doomed)


@dataclass
class Ctx:
    """One Graph request being answered."""

    fake: GraphFake
    request: Request
    token: TokenInfo | None
    mailbox: Mailbox | None
    prefix: str  # "me" or "users/{ref}", as the client wrote it
    immutable: bool  # Prefer: IdType="ImmutableId"

    @property
    def base(self) -> str:
        return self.fake.url + "/v1.0"

    def link(self, path: str, **query: str) -> str:
        """An absolute link under the caller's own prefix (``/me/...`` stays ``/me/...``)."""
        url = f"{self.base}/{self.prefix}/{path}" if path else f"{self.base}/{self.prefix}"
        return url + ("?" + urlencode(query, safe="$'(),", quote_via=quote) if query else "")

    def need_mailbox(self) -> Mailbox:
        if self.mailbox is None:
            raise GraphError(400, "BadRequest", "A user is needed for this request.")
        return self.mailbox

    def item_id(self, item: Any) -> str:
        return item.immutable_id if self.immutable else item.id

    def preference_applied(self) -> dict[str, str]:
        return {"Preference-Applied": 'IdType="ImmutableId"'} if self.immutable else {}


def collection_page(ctx: Ctx, items: list[Any], path: str, context: str, default: int = 10,
                    maximum: int = 1000, render: Any = None) -> Response:  # fmt: skip
    """A plain (non-delta) collection with ``$top``/``$skip`` paging and ``@odata.nextLink``;
    ``render`` (when given) turns only the page's items into JSON."""
    top = page_size(ctx.request, default, maximum)
    skip = int(one(ctx.request, "$skip") or 0)
    page = items[skip : skip + top]
    if render is not None:
        page = [render(item) for item in page]
    body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#{context}", "value": page}
    if skip + top < len(items):
        query = {"$top": str(top), "$skip": str(skip + top)}
        if sel := one(ctx.request, "$select"):
            query["$select"] = sel
        body["@odata.nextLink"] = ctx.link(path, **query)
    return json_response(body, headers=ctx.preference_applied())
