"""Change notifications (webhooks), when the admin gives a public HTTPS URL.

Graph POSTs a notification to ``webhook.url`` when a message in a subscribed
folder is created, updated or deleted.  The URL is public; TLS ends in the
admin's reverse proxy, which forwards to the local listener here
(``webhook.listen``, plain HTTP on loopback by default).  A notification only
says "look now": the watcher then reads the folder's delta as it does when
polling, so a lost, late or forged notification can never lose or invent
mail, and polling goes on at its idle pace as a safety net.

* Subscribing: Graph first POSTs ``?validationToken=...`` and wants it back as
  ``text/plain`` within 10 seconds: the listener answers that before any
  subscription is made.
* ``clientState``: a random secret per watcher, sent with each subscription;
  a notification without the right one is dropped (its sender is not Graph).
* Renewal: a subscription lives :data:`LIFETIME_MINUTES` (Outlook resources
  allow up to 10,080) and is renewed when less than a third is left; one that
  Graph no longer knows (404) is made again.

The listener is a stdlib ``ThreadingHTTPServer`` in a thread (small bodies,
bounded; it only sets an event on the daemon's loop).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from mailfiler.sources.graph.client import GraphClient, GraphError

log = logging.getLogger("mailfiler.graph")

LIFETIME_MINUTES = 4230
#: notifications larger than this are refused (Graph sends a few KB)
MAX_BODY = 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # nothing about requests in the log (a validation token is not a secret, but no noise)

    def do_POST(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length) if length else b""
        if "validationToken" in query:  # the handshake: echo the token, text/plain, at once
            token = query["validationToken"][0].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(token)))
            self.end_headers()
            self.wfile.write(token)
            return
        try:
            notes = json.loads(body).get("value", [])
        except (ValueError, AttributeError):
            notes = []
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        for note in notes if isinstance(notes, list) else []:
            if isinstance(note, dict):
                self.server.deliver(note)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        #: clientState -> callback(subscription id)
        self.listeners: dict[str, Callable[[str], None]] = {}

    def deliver(self, note: dict[str, Any]) -> None:
        state = str(note.get("clientState") or "")
        with self.lock:
            found = [cb for key, cb in self.listeners.items() if hmac.compare_digest(key, state)]
        if not found:
            log.info("graph webhook: a notification without a known clientState was dropped")
            return
        for callback in found:
            callback(str(note.get("subscriptionId") or ""))


_servers: dict[tuple[str, int], _Server] = {}
_servers_lock = threading.Lock()


def listener(host: str, port: int) -> _Server:
    """The process's listener on (host, port), started on first use (mailboxes share it)."""
    with _servers_lock:
        server = _servers.get((host, port))
        if server is None:
            server = _Server((host, port))
            threading.Thread(target=server.serve_forever, name=f"graph-webhook:{port}", daemon=True).start()
            _servers[(host, port)] = server
        return server


class Subscriptions:
    """One watcher's subscriptions: one per folder, renewed, and the event they set."""

    def __init__(self, client: GraphClient, url: str, host: str, port: int) -> None:
        self.client, self.url = client, url
        self.server = listener(host, port)
        self.state = secrets.token_urlsafe(32)
        self.by_id: dict[str, str] = {}  # subscription id -> folder
        self.expires: dict[str, datetime] = {}
        self.woken: set[str] = set()
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_note(sub_id: str) -> None:
            folder = self.by_id.get(sub_id)
            if folder is not None:
                loop.call_soon_threadsafe(self._wake, folder)

        with self.server.lock:
            self.server.listeners[self.state] = on_note

    def _wake(self, folder: str) -> None:
        self.woken.add(folder)
        self.event.set()

    def take(self) -> set[str]:
        woken, self.woken = self.woken, set()
        self.event.clear()
        return woken

    async def ensure(self, folder: str, folder_id: str) -> None:
        """Subscribe to the folder, or renew its subscription when a third of its life is left."""
        now = datetime.now(UTC)
        sub_id = next((s for s, f in self.by_id.items() if f == folder), None)
        if sub_id is not None and self.expires[sub_id] - now > timedelta(minutes=LIFETIME_MINUTES / 3):
            return
        until = (now + timedelta(minutes=LIFETIME_MINUTES)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        if sub_id is not None:
            try:
                await self.client.request("PATCH", f"{self.client.root}/subscriptions/{sub_id}",
                                          json={"expirationDateTime": until})  # fmt: skip
                self.expires[sub_id] = now + timedelta(minutes=LIFETIME_MINUTES)
                return
            except GraphError as exc:
                if exc.status != 404:
                    raise
                self._forget(sub_id)  # Graph dropped it: make a new one
        resource = f"{self.client.mailbox_path.lstrip('/')}/mailFolders('{quote(folder_id, safe='')}')/messages"
        made, _ = await self.client.request(
            "POST",
            f"{self.client.root}/subscriptions",
            json={
                "changeType": "created,updated,deleted",
                "notificationUrl": self.url,
                "resource": resource,
                "expirationDateTime": until,
                "clientState": self.state,
            },
        )
        self.by_id[str(made["id"])] = folder
        self.expires[str(made["id"])] = now + timedelta(minutes=LIFETIME_MINUTES)

    def _forget(self, sub_id: str) -> None:
        self.by_id.pop(sub_id, None)
        self.expires.pop(sub_id, None)

    async def close(self) -> None:
        with self.server.lock:
            self.server.listeners.pop(self.state, None)
        for sub_id in list(self.by_id):
            try:
                await self.client.request("DELETE", f"{self.client.root}/subscriptions/{sub_id}")
            except Exception as exc:  # noqa: BLE001 - best effort: it expires by itself
                log.debug("graph webhook: deleting subscription %s: %s", sub_id, exc)
            self._forget(sub_id)
