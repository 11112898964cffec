"""The fake Exchange server: routing of SOAP operations at /EWS/Exchange.asmx, authentication,
impersonation, and the test-facing API (act as Outlook; inject EWS-shaped faults)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from tests.servers.ews import folders, items, rules, streaming
from tests.servers.ews.auth import Authenticator, ConnectionAuth
from tests.servers.ews.context import Context
from tests.servers.ews.model import Folder, Item, Store, User
from tests.servers.ews.soap import (
    EXCHANGE_2016,
    BadRequest,
    Build,
    SoapFault,
    envelope,
    error,
    fault,
    parse_envelope,
    q,
    response,
)
from tests.servers.httpfake import FakeServer, Fault, Handler, Request, Response
from tests.servers.tls import Tls

ENDPOINT = "/ews/exchange.asmx"
Operation = Callable[[Context, ET.Element], ET.Element]
OPERATIONS: dict[str, Operation] = {
    "GetFolder": folders.get_folder,
    "FindFolder": folders.find_folder,
    "SyncFolderHierarchy": folders.sync_folder_hierarchy,
    "CreateFolder": folders.create_folder,
    "DeleteFolder": folders.delete_folder,
    "UpdateFolder": folders.update_folder,
    "MoveFolder": folders.move_folder,
    "SyncFolderItems": items.sync_folder_items,
    "FindItem": items.find_item,
    "GetItem": items.get_item,
    "CreateItem": items.create_item,
    "UpdateItem": items.update_item,
    "DeleteItem": items.delete_item,
    "MoveItem": items.move_item,
    "GetInboxRules": rules.get_inbox_rules,
    "UpdateInboxRules": rules.update_inbox_rules,
}
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


class EwsHandler(Handler):
    fake: EwsServer  # type: ignore[assignment]

    def operation(self, request: Request) -> str:
        if request.path.lower() != ENDPOINT or request.method != "POST":
            return f"{request.method} {request.path}"
        try:
            _, body = parse_envelope(request.body)
        except BadRequest:
            return "?"
        return body.tag.rpartition("}")[2]

    def route(self, request: Request) -> Response:
        server = self.fake
        if request.path.lower() != ENDPOINT:
            return Response(404, {"Content-Type": "text/plain"}, b"not found")
        if not hasattr(self, "_auth"):
            self._auth = ConnectionAuth()
        user = server.auth.authenticate(request.headers, self._auth)
        if isinstance(user, Response):
            return user
        if request.method != "POST":
            return Response(405, {"Content-Type": "text/plain"}, b"POST only")
        try:
            header, body = parse_envelope(request.body)
            ctx = server.context(user, header, request.headers)
            name = body.tag.rpartition("}")[2]
            backend = server.backend_for(ctx, request.headers)
            if name == "Subscribe":
                answer: ET.Element | Iterator[bytes] = streaming.subscribe(ctx, body, server.hub, backend)
            elif name == "Unsubscribe":
                answer = streaming.unsubscribe(ctx, body, server.hub)
            elif name == "GetStreamingEvents":
                answer = streaming.get_streaming_events(ctx, body, server.hub, server.build, backend)
            elif name in OPERATIONS:
                answer = OPERATIONS[name](ctx, body)
            else:
                raise SoapFault("ErrorInvalidRequest", f"The request is invalid: {name} is not served by this fake.")
        except BadRequest as e:
            return Response(500, SOAP_HEADERS, fault("ErrorSchemaValidation", str(e), server.build))
        except SoapFault as e:
            return Response(500, SOAP_HEADERS, fault(e.code, e.text, server.build, e.back_off_ms))
        if isinstance(answer, ET.Element):
            headers = dict(SOAP_HEADERS)
            if name == "Subscribe" and request.headers.get("x-preferserveraffinity", "").lower() == "true":
                headers["Set-Cookie"] = f"X-BackEndOverrideCookie=backend{backend}; path=/; HttpOnly"
            return Response(200, headers, envelope(answer, server.build))
        return Response(200, dict(SOAP_HEADERS), chunks=answer)


class EwsServer(FakeServer):
    """A fake Exchange Server at ``url`` (``ews_url`` is the EWS endpoint).

    ``users`` is a list of dicts: smtp, username, password, optional display_name, impersonate
    (smtp addresses or "*"), delegates (smtp addresses), folders (paths created at start)."""

    def __init__(
        self,
        users: list[dict[str, Any]] = (),  # type: ignore[assignment]
        *,
        tls: Tls | None = None,
        port: int = 0,
        build: Build = EXCHANGE_2016,
        auth: set[str] | None = None,
        domain: str = "EXAMPLE",
        backends: int = 1,
    ):
        super().__init__(EwsHandler, tls=tls, port=port)
        self.build = build
        self.store = Store(domain)
        self.hub = streaming.Hub()
        self.store.publish = self.hub.publish
        self.auth = Authenticator(self.store, auth or {"basic", "ntlm"})
        # Mailbox servers behind the endpoint: with more than one, a subscription lives on the
        # backend of the mailbox its Subscribe was anchored to (X-AnchorMailbox), and GetStreamingEvents
        # finds it only when it reaches that backend (X-BackEndOverrideCookie, or the same anchor)
        self.backends = backends
        for spec in users:
            self.add_user(**spec)

    @property
    def ews_url(self) -> str:
        return self.url + "/EWS/Exchange.asmx"

    def stop(self) -> None:
        self.hub.stop()
        super().stop()
        self.auth.close()

    def restart(self, down_for: float = 0.0) -> None:
        """Exchange restarts (an IIS recycle): open streams and requests are cut, nothing answers for
        ``down_for`` seconds; mailboxes, sync states and subscriptions survive (as in the database)."""
        self.hub.drop_streams()
        super().restart(down_for)
        self.hub.stopped = False

    # -- who a request acts for ---------------------------------------------------
    def context(self, user: User, header: ET.Element | None, headers: dict[str, str]) -> Context:
        target = user.smtp.lower()
        impersonating = False
        if header is not None:
            identity = header.find(q("t:ExchangeImpersonation"))
            if identity is not None:
                sid = identity.find(q("t:ConnectingSID"))
                smtp = next(
                    (e.text.strip() for e in (sid if sid is not None else []) if e.text and e.text.strip()),
                    "",
                )
                if smtp.lower() not in self.store.users:
                    raise SoapFault(
                        "ErrorNonExistentMailbox", f"The SMTP address has no mailbox associated with it: {smtp}"
                    )
                if not user.may_impersonate(smtp):
                    raise SoapFault(
                        "ErrorImpersonateUserDenied",
                        "The account does not have permission to impersonate the requested user.",
                    )
                target, impersonating = smtp.lower(), True
        anchor = headers.get("x-anchormailbox", "").strip().lower()
        if anchor and anchor not in self.store.users:
            # Exchange routes by X-AnchorMailbox: an unknown anchor cannot be routed
            raise SoapFault("ErrorNonExistentMailbox", f"The SMTP address has no mailbox associated with it: {anchor}")
        return Context(self.store, user, target, impersonating, anchor)

    def backend_of(self, smtp: str) -> int:
        return zlib.crc32(smtp.lower().encode()) % self.backends

    def backend_for(self, ctx: Context, headers: dict[str, str]) -> int:
        cookie = headers.get("x-backendoverridecookie", "")
        if not cookie:
            for part in headers.get("cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == "X-BackEndOverrideCookie":
                    cookie = value
        if cookie.startswith("backend") and cookie[7:].isdigit():
            return int(cookie[7:]) % self.backends
        return self.backend_of(ctx.anchor or ctx.target)

    # -- setup ----------------------------------------------------------------------
    def add_user(
        self,
        smtp: str,
        password: str,
        username: str | None = None,
        display_name: str = "",
        impersonate: list[str] = (),  # type: ignore[assignment]
        delegates: list[str] = (),  # type: ignore[assignment]
        folders: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        user = User(
            smtp=smtp,
            username=username or smtp.split("@")[0],
            password=password,
            display_name=display_name or smtp.split("@")[0],
            impersonate={s.lower() for s in impersonate},
            delegates={s.lower() for s in delegates},
        )
        self.store.add_user(user, list(folders))

    def grant_token(self, token: str, smtp: str) -> None:
        """An OAuth 2.0 access token for ``smtp`` (needs ``auth`` with "bearer"); ``revoke_token`` ends it."""
        self.auth.tokens[token] = smtp.lower()

    def revoke_token(self, token: str) -> None:
        self.auth.tokens.pop(token, None)

    # -- acting as Outlook (each makes the sync changes and events Exchange would) ----------
    def folder(self, user: str, path: str) -> Folder:
        with self.store.lock:
            return self.store.folder_by_path(user, path)

    def folder_id(self, user: str, path: str) -> str:
        return self.folder(user, path).id

    def deliver(self, user: str, mime: bytes, folder: str = "Inbox", *, is_read: bool = False) -> str:
        """Mail arrives (transport delivery or an inbox rule): a new item; returns its id."""
        with self.store.lock:
            target = self.store.folder_by_path(user, folder)
            moved = rules.delivery_folder(self.store, user, mime) if target.distinguished == "inbox" else None
            if moved is not None and moved in self.store.mailbox(user).folders:
                target = self.store.mailbox(user).folders[moved]  # an inbox rule's MoveToFolder
            return self.store.add_item(user, target, mime=mime, is_read=is_read, new_mail=True).id

    def set_outlook_rule_blob(self, user: str, exists: bool = True) -> None:
        """Outlook saves (or loses) its client-side rules in the mailbox's rule blob."""
        with self.store.lock:
            rules.set_blob(self.store, user, exists)

    def outlook_rule_blob(self, user: str) -> bool:
        with self.store.lock:
            return rules.has_blob(self.store, user)

    def item(self, item_id: str) -> Item:
        with self.store.lock:
            return self.store.item(item_id)[1]

    def items(self, user: str, folder: str) -> list[Item]:
        with self.store.lock:
            return list(self.store.folder_by_path(user, folder).items.values())

    def move_item(self, item_id: str, folder: str) -> str:
        """Drag an item to another folder: returns its new id."""
        with self.store.lock:
            mailbox, item = self.store.item(item_id)
            target = self.store.folder_by_path(mailbox.user.smtp, folder)
            return self.store.move_item(mailbox.user.smtp, item, target).id

    def delete_item(self, item_id: str) -> None:
        with self.store.lock:
            mailbox, item = self.store.item(item_id)
            self.store.remove_item(mailbox.user.smtp, item)

    def set_categories(self, item_id: str, categories: list[str]) -> None:
        with self.store.lock:
            mailbox, item = self.store.item(item_id)
            item.categories = list(categories)
            self.store.update_item(mailbox.user.smtp, item)

    def set_read(self, item_id: str, read: bool = True) -> None:
        with self.store.lock:
            mailbox, item = self.store.item(item_id)
            item.is_read = read
            self.store.update_item(mailbox.user.smtp, item, read_only=True)

    def touch_item(self, item_id: str) -> str:
        """Outlook saves the item: a new ChangeKey (a client holding the old one now has a stale ChangeKey)."""
        with self.store.lock:
            mailbox, item = self.store.item(item_id)
            self.store.update_item(mailbox.user.smtp, item)
            return item.change_key

    def create_folder(self, user: str, path: str, folder_class: str = "IPF.Note") -> str:
        with self.store.lock:
            *parents, name = [p for p in path.split("/") if p]
            parent = self.store.ensure_path(user, "/".join(parents))
            return self.store.create_folder(user, parent, name, folder_class).id

    def rename_folder(self, user: str, path: str, new_name: str) -> None:
        with self.store.lock:
            self.store.rename_folder(user, self.store.folder_by_path(user, path), new_name)

    def move_folder(self, user: str, path: str, new_parent: str) -> None:
        with self.store.lock:
            folder = self.store.folder_by_path(user, path)
            self.store.move_folder(user, folder, self.store.folder_by_path(user, new_parent))

    def delete_folder(self, user: str, path: str) -> None:
        with self.store.lock:
            self.store.delete_folder(user, self.store.folder_by_path(user, path))

    def invalidate_sync_states(self, user: str) -> None:
        """Every sync state handed out for this mailbox becomes ErrorInvalidSyncStateData."""
        self.store.invalidate_sync_states(user)

    # -- streams ------------------------------------------------------------------------
    @property
    def stream_lifetime(self) -> float:
        return self.hub.stream_lifetime

    @stream_lifetime.setter
    def stream_lifetime(self, seconds: float) -> None:
        self.hub.stream_lifetime = seconds

    def close_streams(self) -> None:
        """Open GetStreamingEvents responses end now with ConnectionStatus=Closed."""
        self.hub.close_streams()

    def drop_streams(self) -> None:
        """Open GetStreamingEvents connections are cut mid-stream."""
        self.hub.drop_streams()

    def lose_events(self, user: str) -> None:
        """The user's subscriptions lost events: the next GetStreamingEvents answers ErrorMissedNotificationEvents."""
        with self.hub.cond:
            for subscription in self.hub.subscriptions.values():
                if subscription.mailbox == user.lower():
                    subscription.missed = True

    def subscriptions(self, user: str | None = None) -> list[streaming.Subscription]:
        with self.hub.cond:
            return [s for s in self.hub.subscriptions.values() if user is None or s.mailbox == user.lower()]

    # -- faults (EWS-shaped canned answers through httpfake.Faults) -----------------------------
    def _when(self, user: str | None) -> Callable[[Request], bool] | None:
        if user is None:
            return None
        return lambda r: r.headers.get("x-anchormailbox", "").lower() == user.lower()

    def inject_busy(
        self, operation: str = "*", back_off_ms: int = 1000, times: int | None = 1, user: str | None = None
    ) -> Fault:
        """ErrorServerBusy as a SOAP fault (HTTP 500) carrying BackOffMilliseconds."""
        body = fault(
            "ErrorServerBusy",
            "The server cannot service this request right now. Try again later.",
            self.build,
            back_off_ms,
        )
        return self.faults.add(Fault(operation, times, Response(500, dict(SOAP_HEADERS), body), when=self._when(user)))

    def throttle_for(
        self, seconds: float, back_off_ms: int = 1000, operation: str = "*", user: str | None = None
    ) -> Fault:
        """Every matching request answers ErrorServerBusy for ``seconds`` from now (throttling for minutes)."""
        until = time.monotonic() + seconds
        anchored = self._when(user)

        def during(request: Request) -> bool:
            return time.monotonic() < until and (anchored is None or anchored(request))

        body = fault(
            "ErrorServerBusy",
            "The server cannot service this request right now. Try again later.",
            self.build,
            back_off_ms,
        )
        return self.faults.add(Fault(operation, None, Response(500, dict(SOAP_HEADERS), body), when=during))

    def inject_status(
        self, operation: str = "*", status: int = 503, times: int | None = 1, user: str | None = None
    ) -> Fault:
        """A bare HTTP status (503 Service Unavailable, 401 Unauthorized, ...)."""
        headers = {"Content-Type": "text/html"}
        if status == 401:
            headers = dict(self.auth.challenge().headers)
        body = f"{status} error".encode()
        return self.faults.add(Fault(operation, times, Response(status, headers, body), when=self._when(user)))

    def inject_unauthorized(self, operation: str = "*", times: int | None = 1, user: str | None = None) -> Fault:
        return self.inject_status(operation, 401, times, user)

    def inject_unavailable(self, operation: str = "*", times: int | None = 1, user: str | None = None) -> Fault:
        return self.inject_status(operation, 503, times, user)

    def inject_error(
        self, operation: str, code: str, text: str = "Injected error.", times: int | None = 1, user: str | None = None
    ) -> Fault:
        """One Error response message with ``code`` (ErrorItemNotFound, ErrorInvalidSyncStateData,
        ErrorIrresolvableConflict, ...) for the whole request."""
        message = error(operation, code, text)
        for container in _ERROR_CONTAINERS.get(operation, ()):
            child = ET.SubElement(message, q(container))
            if container.startswith("m:IncludesLast"):
                child.text = "true"
        if operation == "GetStreamingEvents":
            ET.SubElement(message, q("m:ConnectionStatus")).text = "Closed"
        body = envelope(response(operation, [message]), self.build)
        return self.faults.add(Fault(operation, times, Response(200, dict(SOAP_HEADERS), body), when=self._when(user)))

    def inject_drop(
        self, operation: str = "*", times: int | None = 1, after_bytes: int | None = None, user: str | None = None
    ) -> Fault:
        """Close the connection: before answering, or after ``after_bytes`` of the body (mid-stream)."""
        if after_bytes is None:
            return self.faults.add(Fault(operation, times, drop=True, when=self._when(user)))
        return self.faults.add(Fault(operation, times, drop_after=after_bytes, when=self._when(user)))

    def inject_delay(
        self, operation: str = "*", seconds: float = 1.0, times: int | None = 1, user: str | None = None
    ) -> Fault:
        return self.faults.add(Fault(operation, times, delay=seconds, when=self._when(user)))


_ERROR_CONTAINERS: dict[str, tuple[str, ...]] = {
    "GetItem": ("m:Items",),
    "CreateItem": ("m:Items",),
    "UpdateItem": ("m:Items",),
    "MoveItem": ("m:Items",),
    "GetFolder": ("m:Folders",),
    "CreateFolder": ("m:Folders",),
    "SyncFolderItems": ("m:SyncState", "m:IncludesLastItemInRange"),
    "SyncFolderHierarchy": ("m:SyncState", "m:IncludesLastFolderInRange"),
}
