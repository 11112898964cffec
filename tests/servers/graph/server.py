"""The fake's HTTP face: routing of Graph (``/v1.0``) and identity requests,
the bearer-token check, and :class:`GraphFake`, which tests start and drive.

``GraphFake`` also is the test-facing API acting as Outlook or the user
(deliver, move, delete, rename or delete folders, set categories, edit
contacts and events): each change lands in the change log that delta
queries read and is sent to matching subscriptions."""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from tests.servers.graph import calendar, contacts, mail, rules
from tests.servers.graph.batch import run_batch
from tests.servers.graph.calendar import Calendar, Event
from tests.servers.graph.identity import Identity
from tests.servers.graph.model import Contact, Folder, GraphError, Mailbox, Message, Tenant
from tests.servers.graph.odata import Ctx, StateTokens, error_response, json_response, prefer
from tests.servers.graph.subscriptions import Subscriptions
from tests.servers.httpfake import FakeServer, Handler, Request, Response
from tests.servers.tls import Tls

M = r"(?:/mailFolders/(?P<f>[^/]+))?/messages/(?P<m>[^/]+)"
C = r"(?:/contactFolders/(?P<f>[^/]+))?/contacts"
#: (method, pattern after /me or /users/{id}, handler, operation name)
USER_ROUTES: list[tuple[str, str, Callable[..., Response], str]] = [
    *rules.ROUTES,
    ("GET", r"", lambda c: _user_json(c), "GET user"),
    ("GET", r"/mailFolders", lambda c: mail.list_folders(c, None), "GET mailFolders"),
    ("GET", r"/mailFolders/delta", lambda c: mail.folders_delta(c), "GET mailFolders/delta"),
    ("POST", r"/mailFolders", lambda c: mail.create_folder(c, None), "POST mailFolders"),
    ("GET", r"/mailFolders/(?P<f>[^/]+)/childFolders", lambda c, f: mail.list_folders(c, f), "GET childFolders"),
    ("POST", r"/mailFolders/(?P<f>[^/]+)/childFolders", lambda c, f: mail.create_folder(c, f), "POST childFolders"),
    ("GET", r"/mailFolders/(?P<f>[^/]+)/messages/delta", lambda c, f: mail.messages_delta(c, f), "GET messages/delta"),
    ("GET", r"/mailFolders/(?P<f>[^/]+)/messages", lambda c, f: mail.list_messages(c, f), "GET messages"),
    ("GET", r"/messages", lambda c: mail.list_messages(c, None), "GET messages"),
    ("GET", M + r"/\$value", lambda c, f, m: mail.message_value(c, m, f), "GET message/$value"),
    ("POST", M + r"/move", lambda c, f, m: mail.move_message(c, m, f), "POST message/move"),
    ("GET", M, lambda c, f, m: mail.get_message(c, m, f), "GET message"),
    ("PATCH", M, lambda c, f, m: mail.patch_message(c, m, f), "PATCH message"),
    ("GET", r"/mailFolders/(?P<f>[^/]+)", lambda c, f: mail.get_folder(c, f), "GET mailFolder"),
    ("PATCH", r"/mailFolders/(?P<f>[^/]+)", lambda c, f: mail.patch_folder(c, f), "PATCH mailFolder"),
    ("DELETE", r"/mailFolders/(?P<f>[^/]+)", lambda c, f: mail.delete_folder(c, f), "DELETE mailFolder"),
    ("GET", C + r"/delta", lambda c, f: contacts.contacts_delta(c, f), "GET contacts/delta"),
    ("GET", C, lambda c, f: contacts.list_contacts(c, f), "GET contacts"),
    ("POST", C, lambda c, f: contacts.create_contact(c, f), "POST contacts"),
    ("GET", r"/contacts/(?P<i>[^/]+)", lambda c, i: contacts.get_contact(c, i), "GET contact"),
    ("PATCH", r"/contacts/(?P<i>[^/]+)", lambda c, i: contacts.patch_contact(c, i), "PATCH contact"),
    ("DELETE", r"/contacts/(?P<i>[^/]+)", lambda c, i: contacts.delete_contact(c, i), "DELETE contact"),
    ("GET", r"/calendarView/delta", lambda c: calendar.calendar_view_delta(c), "GET calendarView/delta"),
    ("GET", r"/calendarView", lambda c: calendar.calendar_view(c), "GET calendarView"),
    ("GET", r"/events", lambda c: calendar.list_events(c), "GET events"),
    ("POST", r"/events", lambda c: calendar.create_event(c), "POST events"),
    ("GET", r"/events/(?P<i>[^/]+)/instances", lambda c, i: calendar.event_instances(c, i), "GET event/instances"),
    ("GET", r"/events/(?P<i>[^/]+)", lambda c, i: calendar.get_event(c, i), "GET event"),
    ("PATCH", r"/events/(?P<i>[^/]+)", lambda c, i: calendar.patch_event(c, i), "PATCH event"),
    ("DELETE", r"/events/(?P<i>[^/]+)", lambda c, i: calendar.delete_event(c, i), "DELETE event"),
]
_USER = re.compile(r"^/v1\.0/(?P<who>me|users/(?P<user>[^/]+))(?P<rest>/.*)?$", re.IGNORECASE)
_COMPILED = [(m, re.compile(f"^{p}$", re.IGNORECASE), fn, op) for m, p, fn, op in USER_ROUTES]
_SUBSCRIPTION = re.compile(r"^/v1\.0/subscriptions(?:/(?P<id>[^/]+))?$", re.IGNORECASE)
_IDENTITY = re.compile(
    r"^/(?P<tenant>[^/]+)/(?:(?P<oidc>v2\.0/\.well-known/openid-configuration)|oauth2/v2\.0/(?P<ep>token|devicecode)"
    r"|(?P<keys>discovery/v2\.0/keys))$"
)


def normalize(path: str) -> str:
    """OData key syntax and function parentheses as plain segments: mailFolders('Inbox') -> mailFolders/Inbox."""
    path = unquote(path)
    path = re.sub(r"\('([^']*)'\)", r"/\1", path)
    return re.sub(r"/delta\(\)", "/delta", path)


def _user_json(ctx: Ctx) -> Response:
    mailbox = ctx.need_mailbox()
    return json_response({
        "@odata.context": f"{ctx.base}/$metadata#users/$entity",
        "id": mailbox.id, "displayName": mailbox.display_name, "userPrincipalName": mailbox.upn, "mail": mailbox.upn,
    })  # fmt: skip


@dataclass
class Options:
    """Switchable behaviour (tests flip these while the fake runs)."""

    #: each delta page after the first repeats this many items of the page before it
    duplicates: int = 0
    #: the error code of a 410 for a delta or skip token the fake no longer has
    expired_code: str = "syncStateNotFound"
    #: Exchange Online's limits per app and mailbox (None: unlimited): concurrent requests (real: 4),
    #: and requests per window (real: 10,000 per 600 s); past them 429 with Retry-After
    mailbox_concurrency: int | None = None
    mailbox_rate: tuple[int, float] | None = None


class GraphHandler(Handler):
    graph: GraphFake

    def operation(self, request: Request) -> str:
        return self.graph.operation(request)

    def route(self, request: Request) -> Response:
        return self.graph.dispatch(request)


class GraphFake:
    """``with GraphFake(tls) as graph:`` a tenant on loopback; ``graph.url`` is the authority host and Graph root."""

    def __init__(self, tls: Tls | None, *, port: int = 0, tenant_domain: str = "contoso.onmicrosoft.com"):
        self.tenant = Tenant(domain=tenant_domain)
        self.tokens = StateTokens()
        self.options = Options()
        handler = type("BoundGraphHandler", (GraphHandler,), {"graph": self})
        self.server = FakeServer(handler, tls=tls, port=port)
        self.tls = tls
        self.identity = Identity(self, self.tenant)
        self.subscriptions = Subscriptions(self)
        self.faults = self.server.faults
        #: operations of the requests that came inside $batch (the server's request log has the $batch only)
        self.batched: collections.deque[str] = collections.deque(maxlen=10_000)
        self._limits_lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], int] = {}
        self._stamps: dict[tuple[str, str], collections.deque[float]] = {}

    # -- server -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def authority(self) -> str:
        return f"{self.url}/{self.tenant.id}"

    def operations(self) -> list[str]:
        return self.server.operations()

    def start(self) -> GraphFake:
        self.server.start()
        return self

    def stop(self) -> None:
        self.subscriptions.stop()
        self.server.stop()

    def __enter__(self) -> GraphFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- routing ------------------------------------------------------------------------
    def _match(self, request: Request) -> tuple[str, Callable[[], Response]]:
        path = normalize(request.path)
        method = request.method
        ident = _IDENTITY.match(path)
        if ident and not path.startswith("/v1.0/"):
            tenant = ident["tenant"]
            if ident["oidc"] and method == "GET":
                return "GET openid-configuration", lambda: self.identity.openid_configuration(tenant)
            if ident["keys"] and method == "GET":
                return "GET keys", self.identity.keys
            if ident["ep"] == "token" and method == "POST":
                return "POST token", lambda: self.identity.token_endpoint(tenant, request)
            if ident["ep"] == "devicecode" and method == "POST":
                return "POST devicecode", lambda: self.identity.device_authorization(tenant, request)
        if path == "/common/discovery/instance" and method == "GET":
            return "GET discovery/instance", lambda: self.identity.instance_discovery(request)
        if path.lower() == "/v1.0/$batch" and method == "POST":
            return "POST $batch", lambda: self._batch(request)
        if sub := _SUBSCRIPTION.match(path):
            sid = sub["id"]
            table = {("POST", False): ("POST subscriptions", lambda c: self.subscriptions.create(c)),
                     ("GET", False): ("GET subscriptions", lambda c: self.subscriptions.list(c)),
                     ("GET", True): ("GET subscription", lambda c: self.subscriptions.get(c, sid)),
                     ("PATCH", True): ("PATCH subscription", lambda c: self.subscriptions.renew(c, sid)),
                     ("DELETE", True): ("DELETE subscription", lambda c: self.subscriptions.delete(c, sid))}  # fmt: skip
            if (method, sid is not None) in table:
                op, fn = table[(method, sid is not None)]
                return op, lambda: fn(self._context(request, None, ""))
        if user := _USER.match(path):
            rest = user["rest"] or ""
            for route_method, pattern, fn, op in _COMPILED:
                if route_method == method and (m := pattern.match(rest)):
                    groups = m.groupdict()
                    return op, lambda fn=fn, groups=groups: self._limited(
                        self._context(request, user["user"], user["who"]), lambda c: fn(c, **groups)
                    )
        return f"{method} {path}", lambda: self._unknown(request, path)

    def operation(self, request: Request) -> str:
        return self._match(request)[0]

    def _limited(self, ctx: Ctx, call: Callable[[Ctx], Response]) -> Response:
        """Apply the per-app, per-mailbox limits of ``options`` around one request (a streamed
        answer holds its slot until the last chunk is written)."""
        limit, rate = self.options.mailbox_concurrency, self.options.mailbox_rate
        if ctx.mailbox is None or ctx.token is None or (limit is None and rate is None):
            return call(ctx)
        key = (ctx.token.client_id, ctx.mailbox.id)
        with self._limits_lock:
            if rate is not None:
                stamps = self._stamps.setdefault(key, collections.deque())
                now = time.monotonic()
                while stamps and stamps[0] <= now - rate[1]:
                    stamps.popleft()
                if len(stamps) >= rate[0]:
                    wait = str(max(1, int(stamps[0] + rate[1] - now + 1)))
                    raise GraphError(
                        429,
                        "ApplicationThrottled",
                        "Application is over its MailboxRequests limit.",
                        {"Retry-After": wait},
                    )
                stamps.append(now)
            if limit is not None and self._in_flight.get(key, 0) >= limit:
                raise GraphError(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    {"Retry-After": "1"},
                )
            self._in_flight[key] = self._in_flight.get(key, 0) + 1

        def release() -> None:
            with self._limits_lock:
                self._in_flight[key] -= 1

        try:
            response = call(ctx)
        except BaseException:
            release()
            raise
        if response.chunks is None:
            release()
            return response
        chunks = response.chunks

        def streamed() -> Iterator[bytes]:
            try:
                yield from chunks
            finally:
                release()

        response.chunks = streamed()
        return response

    def dispatch(self, request: Request) -> Response:
        try:
            return self._match(request)[1]()
        except GraphError as err:
            return error_response(err, request)

    def _unknown(self, request: Request, path: str) -> Response:
        if path.startswith("/v1.0/"):
            self.identity.check(request)  # Graph authenticates before it routes
        segment = path.rstrip("/").rsplit("/", 1)[-1]
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")

    def _context(self, request: Request, user_ref: str | None, who: str) -> Ctx:
        token = self.identity.check(request)
        mailbox: Mailbox | None = None
        if who.lower() == "me":
            if token.user_id is None:
                raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
            mailbox = self.tenant.mailboxes[token.user_id]
        elif user_ref is not None:
            with self.tenant.lock:
                mailbox = self.tenant.user(user_ref)
            self.identity.may_open(token, mailbox.id, mailbox.upn)
        if mailbox is not None and not mailbox.mailbox_enabled:
            raise GraphError(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        immutable = prefer(request).get("idtype", "").lower() == "immutableid"
        return Ctx(self, request, token, mailbox, who or "me", immutable)

    def _batch(self, request: Request) -> Response:
        self.identity.check(request)
        return run_batch(
            request, self.faults, self.operation, self._dispatch_sub, lambda r: self.batched.append(r.operation)
        )

    def _dispatch_sub(self, request: Request) -> Response:
        if normalize(request.path).lower() == "/v1.0/$batch":
            return error_response(GraphError(400, "BadRequest", "A batch cannot contain a batch."), request)
        return self.dispatch(request)

    # -- test-facing API: Outlook and the user ----------------------------------------------------
    def add_user(self, upn: str, display_name: str = "", folders: list[str] = ()) -> Mailbox:  # type: ignore[assignment]
        mailbox = self.tenant.add_user(upn, display_name)
        mailbox.events = Calendar(mailbox)  # type: ignore[assignment]
        for path in folders:
            self.make_folder(upn, path)
        return mailbox

    def mailbox(self, upn: str) -> Mailbox:
        with self.tenant.lock:
            return self.tenant.user(upn)

    def folder(self, upn: str, path: str) -> Folder:
        with self.tenant.lock:
            return self.tenant.user(upn).find_path(path)

    def make_folder(self, upn: str, path: str) -> Folder:
        with self.tenant.lock:
            return self.tenant.user(upn).make_path(path)

    def rename_folder(self, upn: str, path: str, new_name: str) -> Folder:
        with self.tenant.lock:
            folder = self.tenant.user(upn).find_path(path)
            folder.display_name = new_name
            return folder

    def delete_folder(self, upn: str, path: str) -> None:
        with self.tenant.lock:
            mailbox = self.tenant.user(upn)
            mailbox.delete_folder(mailbox.find_path(path))

    def deliver(self, upn: str, path: str, mime: bytes, *, received: datetime | None = None) -> Message:
        with self.tenant.lock:
            mailbox = self.tenant.user(upn)
            return mailbox.deliver(mailbox.find_path(path).id, mime, received=received)

    def move(self, upn: str, msg: Message, path: str) -> Message:
        with self.tenant.lock:
            mailbox = self.tenant.user(upn)
            return mailbox.move(msg, mailbox.find_path(path).id)

    def delete(self, upn: str, msg: Message) -> None:
        with self.tenant.lock:
            self.tenant.user(upn).delete(msg)

    def set_categories(self, upn: str, msg: Message, categories: list[str]) -> Message:
        with self.tenant.lock:
            return self.tenant.user(upn).update(msg, categories=categories)

    def mark_read(self, upn: str, msg: Message, read: bool = True) -> Message:
        with self.tenant.lock:
            return self.tenant.user(upn).update(msg, is_read=read)

    def add_contact(self, upn: str, **fields: Any) -> Contact:
        with self.tenant.lock:
            return self.tenant.user(upn).add_contact(fields)

    def edit_contact(self, upn: str, contact: Contact, **fields: Any) -> Contact:
        with self.tenant.lock:
            return self.tenant.user(upn).edit_contact(contact, fields)

    def delete_contact(self, upn: str, contact: Contact) -> None:
        with self.tenant.lock:
            self.tenant.user(upn).delete_contact(contact)

    def calendar(self, upn: str) -> Calendar:
        cal = self.mailbox(upn).events
        assert isinstance(cal, Calendar)
        return cal

    def add_event(self, upn: str, **fields: Any) -> Event:
        with self.tenant.lock:
            return self.calendar(upn).add(fields)

    def edit_event(self, upn: str, event: Event, **fields: Any) -> Event:
        with self.tenant.lock:
            return self.calendar(upn).edit(event, fields)

    def edit_occurrence(self, upn: str, event: Event, original_start: str, **fields: Any) -> None:
        """``original_start`` as UTC ``2026-12-07T09:00:00Z``."""
        with self.tenant.lock:
            self.calendar(upn).edit_occurrence(event, original_start, fields)

    def cancel_occurrence(self, upn: str, event: Event, original_start: str) -> None:
        with self.tenant.lock:
            self.calendar(upn).cancel_occurrence(event, original_start)

    def delete_event(self, upn: str, event: Event) -> None:
        with self.tenant.lock:
            self.calendar(upn).delete(event)

    def expire_delta_tokens(self, upn: str | None = None) -> int:
        """Forget delta and skip tokens (of one mailbox, or all): the next use is a 410."""
        prefix = f"{self.mailbox(upn).id}/" if upn else ""
        return self.tokens.expire(lambda state: str(state.get("scope", "")).startswith(prefix))


def start_graph(tls: Tls | None, **kwargs: Any) -> GraphFake:
    return GraphFake(tls, **kwargs).start()
