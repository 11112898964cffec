"""Change notifications through webhooks: ``/subscriptions`` (create with the
``validationToken`` handshake, renew by PATCH, delete, get, list) and a sender
thread that POSTs notifications (with ``clientState``) for every change the
tenant reports.  Delivery results are kept in ``Subscriptions.deliveries``."""

from __future__ import annotations

import collections
import json
import queue
import re
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from tests.servers.graph.calendar import parse_time
from tests.servers.graph.model import GraphError, Mailbox
from tests.servers.graph.odata import Ctx, json_response, read_json
from tests.servers.httpfake import Response

if TYPE_CHECKING:
    from tests.servers.graph.server import GraphFake

#: Outlook resources (messages, events, contacts) take subscriptions up to 10,080 minutes
MAX_MINUTES = 10_080
RESOURCE = re.compile(
    r"^/?(?:me|users/(?P<user>[^/]+))/(?:(?:mailFolders/(?P<folder>[^/]+)/)?(?P<kind>messages)|(?P<other>contacts|events))$",
    re.IGNORECASE,
)
ODATA_TYPES = {
    "message": "#Microsoft.Graph.Message",
    "contact": "#Microsoft.Graph.Contact",
    "event": "#Microsoft.Graph.Event",
}
PLURAL = {"message": "Messages", "contact": "Contacts", "event": "Events"}


@dataclass
class Subscription:
    id: str
    resource: str
    change_types: set[str]
    notification_url: str
    client_state: str | None
    expiration: datetime
    application_id: str
    creator_id: str
    user_id: str
    kind: str  # message, contact, event
    folder_id: str | None
    immutable: bool

    def to_json(self, base: str) -> dict[str, Any]:
        return {
            "@odata.context": f"{base}/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.application_id,
            "changeType": ",".join(sorted(self.change_types)),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "expirationDateTime": self.expiration.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
            "creatorId": self.creator_id,
            "latestSupportedTlsVersion": "v1_2",
            "notificationContentType": "application/json",
        }


@dataclass
class Delivery:
    subscription_id: str
    change_type: str
    status: int | None  # None: no answer (error in ``error``)
    error: str
    at: float


class Subscriptions:
    def __init__(self, fake: GraphFake):
        self.fake = fake
        self.lock = threading.Lock()
        self.items: dict[str, Subscription] = {}
        self.deliveries: collections.deque[Delivery] = collections.deque(maxlen=10_000)
        self.allow_http = False  # Graph insists on https notification URLs
        self.verify: ssl.SSLContext | bool | None = None  # None: the test CA when the fake has TLS
        self.delay = 0.0  # seconds between a change and its notification
        self._queue: queue.Queue[tuple[Subscription, dict[str, Any]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        fake.tenant.listeners.append(self._on_change)

    # -- endpoints ------------------------------------------------------------------
    def create(self, ctx: Ctx) -> Response:
        body = read_json(ctx.request)
        url = body.get("notificationUrl")
        if not isinstance(url, str) or not url.lower().startswith("https://" if not self.allow_http else "http"):
            raise GraphError(400, "InvalidRequest", "The Url scheme must be HTTPS.")
        resource = str(body.get("resource", ""))
        normal = re.sub(r"\('([^']*)'\)", r"/\1", resource)
        match = RESOURCE.match(normal)
        if not match:
            raise GraphError(400, "InvalidRequest", f"Resource '{resource}' is not supported by this fake.")
        change_types = {c.strip() for c in str(body.get("changeType", "")).split(",") if c.strip()}
        if not change_types or not change_types <= {"created", "updated", "deleted"}:
            raise GraphError(400, "InvalidRequest", "changeType must be a combination of created, updated and deleted.")
        expiration = self._expiration(body)
        with self.fake.tenant.lock:
            if match["user"]:
                mailbox = self.fake.tenant.user(match["user"])
            elif ctx.token is not None and ctx.token.user_id:
                mailbox = self.fake.tenant.mailboxes[ctx.token.user_id]
            else:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            assert ctx.token is not None
            self.fake.identity.may_open(ctx.token, mailbox.id, mailbox.upn)
            folder_id = mailbox.folder(match["folder"]).id if match["folder"] else None
        kind = "message" if match["kind"] else match["other"].lower()[:-1]
        self._validate(url)
        sub = Subscription(str(uuid.uuid4()), resource, change_types, url, body.get("clientState"), expiration,
                           ctx.token.client_id, ctx.token.user_id or str(uuid.uuid5(uuid.NAMESPACE_URL, ctx.token.client_id)),
                           mailbox.id, kind, folder_id, ctx.immutable)  # fmt: skip
        with self.lock:
            self.items[sub.id] = sub
        return json_response(sub.to_json(ctx.base), 201)

    def renew(self, ctx: Ctx, sub_id: str) -> Response:
        sub = self._get(ctx, sub_id)
        sub.expiration = self._expiration(read_json(ctx.request))
        return json_response(sub.to_json(ctx.base))

    def delete(self, ctx: Ctx, sub_id: str) -> Response:
        sub = self._get(ctx, sub_id)
        with self.lock:
            self.items.pop(sub.id, None)
        return Response(204)

    def get(self, ctx: Ctx, sub_id: str) -> Response:
        return json_response(self._get(ctx, sub_id).to_json(ctx.base))

    def list(self, ctx: Ctx) -> Response:
        assert ctx.token is not None
        with self.lock:
            mine = [s.to_json(ctx.base) for s in self.items.values() if s.application_id == ctx.token.client_id]
        for item in mine:
            item.pop("@odata.context")
        return json_response({"@odata.context": f"{ctx.base}/$metadata#subscriptions", "value": mine})

    def _get(self, ctx: Ctx, sub_id: str) -> Subscription:
        with self.lock:
            sub = self.items.get(sub_id)
        if sub is None or ctx.token is None or sub.application_id != ctx.token.client_id:
            raise GraphError(404, "ResourceNotFound", f"The object '{sub_id}' was not found.")
        if sub.expiration < datetime.now(UTC):
            with self.lock:
                self.items.pop(sub.id, None)
            raise GraphError(404, "ResourceNotFound", f"The subscription '{sub_id}' has expired.")
        return sub

    def _expiration(self, body: dict[str, Any]) -> datetime:
        raw = body.get("expirationDateTime")
        if not isinstance(raw, str):
            raise GraphError(400, "InvalidRequest", "expirationDateTime is required.")
        when = parse_time(raw)
        now = datetime.now(UTC)
        if when <= now:
            raise GraphError(400, "InvalidRequest", "Subscription expiration must be in the future.")
        if when > now + timedelta(minutes=MAX_MINUTES):
            raise GraphError(
                400, "InvalidRequest", f"Subscription expiration can only be {MAX_MINUTES} minutes in the future."
            )
        return when

    def _client(self) -> httpx.Client:
        verify: Any = self.verify
        if verify is None:
            verify = ssl.create_default_context(cafile=str(self.fake.tls.ca_file)) if self.fake.tls else True
        return httpx.Client(verify=verify, timeout=10.0)

    def _validate(self, url: str) -> None:
        """Graph's handshake: POST url?validationToken=..., expect 200 echoing it as text/plain within 10 s."""
        token = f"Validation: Testing client application reachability for subscription Request-Id: {uuid.uuid4()}"
        sep = "&" if "?" in url else "?"
        try:
            with self._client() as client:
                resp = client.post(
                    f"{url}{sep}validationToken={quote(token)}", headers={"Content-Type": "text/plain; charset=utf-8"}
                )
            ok = resp.status_code == 200 and resp.text == token
        except httpx.HTTPError:
            ok = False
        if not ok:
            raise GraphError(
                400,
                "InvalidRequest",
                "Subscription validation request failed. Notification endpoint must respond with 200 OK to validation request.",
            )

    # -- notifications ------------------------------------------------------------------
    def _on_change(self, mailbox: Mailbox, kind: str, change: str, item: Any, extra: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        with self.lock:
            subs = [s for s in self.items.values() if s.user_id == mailbox.id and s.kind == kind
                    and change in s.change_types and s.expiration > now]  # fmt: skip
        for sub in subs:
            folder = extra.get("old_folder") or getattr(item, "folder_id", None)
            if sub.folder_id is not None and folder != sub.folder_id:
                continue
            ident = (
                item.immutable_id if sub.immutable and hasattr(item, "immutable_id") else extra.get("old_id") or item.id
            )
            path = f"Users/{mailbox.id}/{PLURAL[kind]}/{ident}"
            data: dict[str, Any] = {"@odata.type": ODATA_TYPES[kind], "@odata.id": path, "id": ident}
            if change != "deleted":
                data["@odata.etag"] = item.etag
            note = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": sub.expiration.strftime("%Y-%m-%dT%H:%M:%S.%f0Z"),
                "changeType": change,
                "resource": path,
                "resourceData": data,
                "clientState": sub.client_state,
                "tenantId": self.fake.tenant.id,
            }
            self._start()
            self._queue.put((sub, note))

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_loop, name="graph-notify", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=15)
            self._thread = None

    def _send_loop(self) -> None:
        with self._client() as client:
            while (job := self._queue.get()) is not None:
                sub, note = job
                if self.delay:
                    time.sleep(self.delay)
                try:
                    resp = client.post(sub.notification_url, content=json.dumps({"value": [note]}),
                                       headers={"Content-Type": "application/json"})  # fmt: skip
                    result = Delivery(sub.id, note["changeType"], resp.status_code, "", time.time())
                except httpx.HTTPError as exc:
                    result = Delivery(sub.id, note["changeType"], None, repr(exc), time.time())
                self.deliveries.append(result)
