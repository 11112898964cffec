"""CalDAV and CardDAV targets: one calendar or address book on a server
(Radicale, Nextcloud, Fastmail, ...), as vdirsyncer's ``DAVStorage``.

What each :class:`~mailfiler.sources.target.Target` call costs on the wire:

==================  ======================================================
``list``            one ``PROPFIND`` Depth 1 (``getetag``, ``resourcetype``)
``get_multi``       one ``REPORT`` ``calendar-multiget`` (RFC 4791 §7.9) or
                    ``addressbook-multiget`` (RFC 6352 §8.7) per 100 items
``upload``          ``PUT`` with ``If-None-Match: *``: never replaces an item
``update``          ``PUT`` with ``If-Match: <etag>`` (RFC 9110 §13.1.1)
``delete``          ``DELETE`` with ``If-Match: <etag>``
``changes_since``   one ``REPORT`` ``sync-collection`` (RFC 6578 §3.2); with
                    no token, a ``PROPFIND`` Depth 0 of ``DAV:sync-token``
==================  ======================================================

so a resync with no changes is one ``REPORT`` answered with an empty
multistatus.  A server without sync tokens (no ``DAV:sync-token``
property), or one that rejects a token (403/409 ``valid-sync-token``: too
old, or the collection was rebuilt), makes ``changes_since`` return None
and the engine lists everything, the slow path that is always correct.

``open`` costs nothing on the wire: the collection is checked by the first
request, and made then (``MKCALENDAR``, or an extended ``MKCOL`` of an
addressbook, RFC 5689) when it is missing and ``open(create=True)``.

Errors: a connection that fails, a timeout, a refused login, a redirect,
and a server error on a listing raise :class:`SyncTargetUnavailable` (the
engine stops that collection; the items already done stay committed and
the next sync goes on from there).  A server error on one item's write is a
:class:`SyncError` for that item only; a 412 is
:class:`SyncPreconditionFailed` (the item changed meanwhile) or
:class:`SyncItemNotFound`.  The password is never logged and never part of
``location``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from xml.sax.saxutils import escape

import httpx

from mailfiler.errors import MailfilerError, SyncError
from mailfiler.sources.target import (
    Changes,
    Fetched,
    SyncItemExists,
    SyncItemNotFound,
    SyncPreconditionFailed,
    Target,
    href_for,
)
from mailfiler.sync.davhttp import DEFAULT_TIMEOUT, DavHttp
from mailfiler.sync.davxml import CR, KIND, C, D, crlf, error_reason, http_date, props, xml_body, xml_headers
from mailfiler.sync.discovery import Discovery, discovered
from mailfiler.sync.multistatus import Member, parse_multistatus

log = logging.getLogger("mailfiler.sync.dav")

#: hrefs per multiget REPORT
MULTIGET_BATCH = 100
#: a server may truncate a sync-collection answer (507 on the collection, RFC 6578 §3.6);
#: we then ask again from the token it gave, at most this many times
MAX_SYNC_ROUNDS = 50


class DavTarget(DavHttp, Discovery, Target):
    """One CalDAV calendar (``kind="calendar"``) or CardDAV address book
    (``kind="contacts"``) at *url*, the collection's own URL.

    *password* is the password or a function that reads it (called by
    ``open``, so an unreadable secret stops this collection only).
    *wrap_transport* wraps httpx's transport (tests record requests and inject faults there)."""

    def __init__(
        self,
        kind: str,
        url: str,
        *,
        username: str | None = None,
        password: str | Callable[[], str] | None = None,
        bearer: Callable[[], str] | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        ca_file: str | Path | None = None,
        verify: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        wrap_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if parts.username or parts.password:
            raise ValueError("the URL must not hold credentials (use username and password_file)")
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        clean = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        super().__init__(kind, clean)
        #: where requests go: the configured URL, or the collection found from it (see discover)
        self.url = clean
        self._cache_key = (kind, clean, username)
        found = discovered.get(self._cache_key)
        if found is not None:
            path = urlsplit(found).path
            self.url = found
        self.backend = KIND[kind]["backend"]
        self.noun = KIND[kind]["noun"]
        #: the collection's unquoted path, to tell members' hrefs apart
        self.path = unquote(path)
        self.username = username
        self._password = password
        self._bearer = bearer
        self.client_cert, self.client_key = client_cert, client_key
        self.ca_file = ca_file
        self.verify = verify
        self.timeout = timeout
        self.wrap_transport = wrap_transport
        self.client: httpx.AsyncClient | None = None
        self._create = True
        self._made = False

    def _item_url(self, href: str) -> str:
        if not href or "/" in href:
            raise SyncItemNotFound(f"{self.url}: {href!r} is not an item name", href=href)
        return self.url + quote(href, safe="@+=-._~")

    def _item_path(self, href: str) -> str:
        return urlsplit(self._item_url(href)).path

    def _name(self, path: str) -> str | None:
        """The member name of a response's path; None for the collection itself or anything else."""
        if not path.startswith(self.path):
            return None
        name = path[len(self.path) :]
        if not name or "/" in name.rstrip("/"):
            return None
        return name

    async def _collection(self, method: str, depth: str, body: bytes) -> httpx.Response:
        """A request on the collection; makes it when missing (once) if the target may."""
        headers = xml_headers(depth)
        resp = await self._send(method, self.url, headers=headers, content=body)
        if resp.status_code == 404:
            if not self._create:
                raise self._unavailable("there is no such collection on the server (HTTP 404)")
            await self._make_collection()
            resp = await self._send(method, self.url, headers=headers, content=body)
        return resp

    async def _make_collection(self) -> None:
        if self.kind == "calendar":
            body = xml_body(
                "C:mkcalendar",
                '<D:set><D:prop><C:supported-calendar-component-set><C:comp name="VEVENT"/>'
                "</C:supported-calendar-component-set></D:prop></D:set>",
            )
            resp = await self._send("MKCALENDAR", self.url, content=body, headers=xml_headers())
        else:
            body = xml_body(
                "D:mkcol",
                "<D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set>",
            )
            resp = await self._send("MKCOL", self.url, content=body, headers=xml_headers())
        if resp.status_code not in (200, 201, 405):  # 405: made meanwhile
            raise self._unavailable(f"could not make the {self.noun} (HTTP {resp.status_code}){error_reason(resp)}")
        self._made = True
        log.info("made the %s %s", self.noun, self.url, extra={"event": "sync-collection-made", "collection": self.url})

    def _multistatus(self, resp: httpx.Response, what: str) -> tuple[list[Member], str | None]:
        if resp.status_code >= 500:
            raise self._unavailable(f"server error on {what} (HTTP {resp.status_code}){error_reason(resp)}")
        if resp.status_code != 207:
            raise self._unavailable(f"{what} failed (HTTP {resp.status_code}){error_reason(resp)}")
        try:
            return parse_multistatus(resp.content)
        except ValueError as exc:
            raise self._unavailable(f"unreadable reply to {what}: {exc}") from None

    async def _check_type(self, member: Member) -> bool:
        """Whether the URL is a collection of the right kind; False when it was not,
        and :meth:`_discover` found one (the caller asks again)."""
        rt = member.props.get(f"{{{D}}}resourcetype")
        if rt is None or rt.find(KIND[self.kind]["resourcetype"]) is not None:
            return True
        if rt.find(f"{{{C}}}calendar") is not None or rt.find(f"{{{CR}}}addressbook") is not None:
            # a collection of the other kind: a mix-up in the config, not a base URL to search from
            other = "a calendar" if rt.find(f"{{{C}}}calendar") is not None else "an address book"
            raise self._unavailable(f"the URL is {other}, not a {self.backend} {self.noun}")
        if self.url != self.location:
            raise self._unavailable(f"the URL is a plain WebDAV folder, not a {self.backend} {self.noun}")
        # a server's, a user's or a home URL: find the collection as a calendar app does
        self._use(await self._discover(self._create))
        return False

    def _use(self, url: str) -> None:
        self.url = url
        self.path = unquote(urlsplit(url).path)
        discovered[self._cache_key] = url

    # -- reading ---------------------------------------------------------------------------

    async def list(self) -> dict[str, str]:
        resp = await self._collection("PROPFIND", "1", xml_body("D:propfind", props("D:getetag", "D:resourcetype")))
        members, _ = self._multistatus(resp, "PROPFIND")
        items: dict[str, str] = {}
        for m in members:
            name = self._name(m.path)
            if name is None:
                if m.path.rstrip("/") == self.path.rstrip("/") and not await self._check_type(m):
                    return await self.list()  # the collection found from a base URL
                continue
            if m.is_collection() or name.endswith("/"):
                continue
            etag = m.text(f"{{{D}}}getetag")
            if etag is not None:
                items[name] = etag
        return items

    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]:  # in this class, list is the method
        found: list[Fetched] = []
        spec = KIND[self.kind]
        for start in range(0, len(hrefs), MULTIGET_BATCH):
            batch = list(hrefs[start : start + MULTIGET_BATCH])
            wanted = {}
            for href in batch:
                try:
                    wanted[self._item_path(href)] = href
                except SyncItemNotFound:
                    continue
            if not wanted:
                continue
            body = xml_body(
                spec["multiget"],
                props("D:getetag", "D:getlastmodified", spec["data_tag"])
                + "".join(f"<D:href>{escape(p)}</D:href>" for p in wanted),
            )
            resp = await self._collection("REPORT", "1", body)
            members, _ = self._multistatus(resp, spec["multiget"].split(":")[1])
            got: dict[str, Fetched] = {}
            for m in members:
                name = self._name(m.path)
                etag, data = m.text(f"{{{D}}}getetag"), m.text(spec["data"])
                if name is None or name not in wanted.values() or etag is None or data is None:
                    continue  # gone since the listing (404), or not one we asked for
                got[name] = Fetched(name, etag, crlf(data), http_date(m.text(f"{{{D}}}getlastmodified")))
            found.extend(got[h] for h in batch if h in got)
        return found

    async def changes_since(self, token: str | None) -> Changes | None:
        if token is None:
            return await self._current_token()
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        for _ in range(MAX_SYNC_ROUNDS):
            body = xml_body(
                "D:sync-collection",
                f"<D:sync-token>{escape(token)}</D:sync-token><D:sync-level>1</D:sync-level>"
                + props("D:getetag", "D:resourcetype"),
            )
            resp = await self._send("REPORT", self.url, content=body, headers=xml_headers("0"))
            if resp.status_code in (403, 409, 400, 404, 405, 501):
                # 403/409 valid-sync-token: too old or unknown; 400/405/501: no sync-collection;
                # 404: the collection is gone. All: list everything (the engine's guard
                # stops when a synced collection comes back empty).
                log.info(
                    "%s: sync token not usable (HTTP %d%s); listing everything",
                    self.url,
                    resp.status_code,
                    error_reason(resp),
                    extra={"event": "sync-token-refused", "collection": self.url},
                )
                return None
            members, new_token = self._multistatus(resp, "sync-collection")
            if not new_token:
                raise self._unavailable("the sync-collection reply holds no sync-token")
            truncated = False
            for m in members:
                name = self._name(m.path)
                if name is None:
                    truncated = truncated or (m.status == 507 and m.path.rstrip("/") == self.path.rstrip("/"))
                    continue
                if m.is_collection() or name.endswith("/"):
                    continue
                if m.status == 404:
                    changed.pop(name, None)
                    deleted.add(name)
                else:
                    deleted.discard(name)
                    changed[name] = m.text(f"{{{D}}}getetag") or ""
            token = new_token
            if not truncated:
                return Changes(token, changed, deleted)
        raise self._unavailable(f"the server truncated its sync-collection reply {MAX_SYNC_ROUNDS} times")

    async def _current_token(self) -> Changes | None:
        resp = await self._collection("PROPFIND", "0", xml_body("D:propfind", props("D:sync-token", "D:resourcetype")))
        members, _ = self._multistatus(resp, "PROPFIND")
        for m in members:
            if m.path.rstrip("/") == self.path.rstrip("/"):
                if not await self._check_type(m):
                    return await self._current_token()  # the collection found from a base URL
                token = m.text(f"{{{D}}}sync-token")
                return Changes(token.strip()) if token and token.strip() else None
        return None

    async def _exists(self, href: str) -> bool:
        resp = await self._send(
            "PROPFIND",
            self._item_url(href),
            content=xml_body("D:propfind", props("D:getetag")),
            headers=xml_headers("0"),
        )
        if resp.status_code == 404:
            return False
        if resp.status_code >= 500:
            raise self._unavailable(f"server error on PROPFIND of {href} (HTTP {resp.status_code})")
        return True

    async def _etag_of(self, href: str) -> str:
        """The etag of an item the server stored without saying it (it may have rewritten the item)."""
        resp = await self._send(
            "PROPFIND",
            self._item_url(href),
            content=xml_body("D:propfind", props("D:getetag")),
            headers=xml_headers("0"),
        )
        members, _ = self._multistatus(resp, "PROPFIND")
        for m in members:
            etag = m.text(f"{{{D}}}getetag")
            if etag:
                return etag
        raise SyncError(f"{self.url}: the server gives no etag for {href}", href=href)

    # -- writing ---------------------------------------------------------------------------

    def _write_error(self, resp: httpx.Response, what: str, href: str) -> MailfilerError:
        code, reason = resp.status_code, error_reason(resp)
        if code == 403 and not reason:
            # a bare 403 is about the account's rights, not this item (a DAV precondition would say)
            return self._unavailable(f"{what} {href} is not allowed (HTTP 403)")
        return SyncError(f"{self.url}: the server refused {what} {href} (HTTP {code}){reason}", href=href, status=code)

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        href = href_for(uid, self.kind)
        headers = {"If-None-Match": "*", "Content-Type": KIND[self.kind]["content_type"]}
        resp = await self._send("PUT", self._item_url(href), content=data, headers=headers)
        if resp.status_code in (404, 409) and "uid-conflict" not in resp.text and self._create and not self._made:
            # no collection yet (a write before any listing): make it, once
            await self._make_collection()
            resp = await self._send("PUT", self._item_url(href), content=data, headers=headers)
        if resp.status_code in (200, 201, 204):
            return href, resp.headers.get("etag") or await self._etag_of(href)
        if resp.status_code == 412:
            raise SyncItemExists(f"{self.url}: {href} exists already", href=href)
        if resp.status_code == 409 and "uid-conflict" in resp.text:
            raise SyncItemExists(f"{self.url}: another item has the UID {uid}", href=href)
        raise self._write_error(resp, "the upload of", href)

    async def update(self, href: str, data: bytes, etag: str) -> str:
        headers = {"If-Match": etag, "Content-Type": KIND[self.kind]["content_type"]}
        resp = await self._send("PUT", self._item_url(href), content=data, headers=headers)
        if resp.status_code == 412 and await self._weak_but_unchanged(href, etag):
            del headers["If-Match"]
            resp = await self._send("PUT", self._item_url(href), content=data, headers=headers)
        if resp.status_code in (200, 201, 204):
            return resp.headers.get("etag") or await self._etag_of(href)
        if resp.status_code in (404, 409, 412) and "uid-conflict" not in resp.text:
            await self._precondition_failed(href, resp)
        raise self._write_error(resp, "the update of", href)

    async def delete(self, href: str, etag: str) -> None:
        resp = await self._send("DELETE", self._item_url(href), headers={"If-Match": etag})
        if resp.status_code == 412 and await self._weak_but_unchanged(href, etag):
            resp = await self._send("DELETE", self._item_url(href))
        if resp.status_code in (200, 202, 204):
            return
        if resp.status_code in (404, 412):
            await self._precondition_failed(href, resp)
        raise self._write_error(resp, "the deletion of", href)

    async def _weak_but_unchanged(self, href: str, etag: str) -> bool:
        """After a 412 on ``If-Match: W/"x"``: True when the item still has that etag.

        ``If-Match`` compares strongly (RFC 9110 §13.1.1), so a server that hands out weak
        etags refuses every conditional write of an item it tagged so, changed or not.
        When the item's etag is still the one we read, nothing changed it and the write is
        sent again without the condition (the window is the one round trip between the two);
        when it moved, the 412 stands and the next sync reads the new version."""
        if not etag.startswith("W/"):
            return False
        try:
            current = await self._etag_of(href)
        except SyncError:
            return False
        if current != etag:
            return False
        log.info(
            "%s: the server refuses If-Match with its own weak etag for %s; written without it (unchanged)",
            self.url,
            href,
            extra={"event": "sync-weak-etag", "collection": self.url},
        )
        return True

    async def _precondition_failed(self, href: str, resp: httpx.Response) -> None:
        """A 412 (or a 404, or the 409 of a missing collection): raises unless it was another conflict."""
        if resp.status_code == 404 or not await self._exists(href):
            raise SyncItemNotFound(f"{self.url}: no item {href}", href=href)
        if resp.status_code == 412:
            raise SyncPreconditionFailed(f"{self.url}: {href} changed since it was read", href=href)


class CalDavTarget(DavTarget):
    """A CalDAV calendar (RFC 4791)."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__("calendar", url, **kw)


class CardDavTarget(DavTarget):
    """A CardDAV address book (RFC 6352)."""

    def __init__(self, url: str, **kw: Any) -> None:
        super().__init__("contacts", url, **kw)


__all__ = ["CalDavTarget", "CardDavTarget", "DavTarget", "parse_multistatus"]
