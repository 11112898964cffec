"""Sync-back into a Microsoft 365 mailbox: its contacts and its calendar as
sync :class:`~mailfiler.sources.target.Target` s, through the mailbox's
:class:`~mailfiler.sources.graph.client.GraphClient` (bounded concurrency,
Retry-After, a timeout on every request).

What the sync engine sees:

* ``href`` is the item's immutable id (``Prefer: IdType="ImmutableId"``, so
  moving a contact between folders keeps it) plus ``.vcf`` or ``.ics``;
* ``etag`` is Graph's ``@odata.etag`` (a recurring series adds a digest of its
  occurrences, see :mod:`.calendar`); writes send it as ``If-Match``, and
  Graph's 412 is :class:`SyncPreconditionFailed`, its 404 :class:`SyncItemNotFound`;
* ``changes_since`` follows a delta link (``contacts/delta``,
  ``calendarView/delta``); a link Graph no longer has (410) is None, so the
  engine lists everything.

Graph stores a contact or an event as its own JSON, not as vCard or
iCalendar.  So that an item reads back as the bytes that were written (a
client's X- properties, the UID, a photo: whatever Graph has no field for),
each item we write carries two extended properties of our own: the UID, and
the text we wrote with a digest of what Graph held then, per group of
fields.  Reading an item, the groups whose digest still matches come from
that text; a group Outlook changed is rewritten from Graph's fields.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from mailfiler.errors import LoginRefused, MailboxUnavailable, SyncError
from mailfiler.sources.graph.auth import Tokens
from mailfiler.sources.graph.client import BATCH_MAX, DeltaExpired, GraphClient, GraphError
from mailfiler.sources.graph.source import GraphSettings
from mailfiler.sources.target import (
    Changes,
    Fetched,
    SyncItemExists,
    SyncItemNotFound,
    SyncPreconditionFailed,
    SyncTargetUnavailable,
    Target,
)

log = logging.getLogger("mailfiler.graph.sync")

#: our namespace for extended properties (a fixed GUID: the same in every mailbox)
NAMESPACE = "{0b3d1e5c-7f55-4f0e-9f2a-6d2c6e1f4a11}"
UID_PROP = f"String {NAMESPACE} Name mailfilerUid"
ITEM_PROP = f"String {NAMESPACE} Name mailfilerItem"
EXPAND = f"singleValueExtendedProperties($filter=id eq '{UID_PROP}' or id eq '{ITEM_PROP}')"
#: items per page asked of a listing or a delta round
PAGE_SIZE = 500


def digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Stash:
    """What we wrote into an item: the text, and per group of fields the digest of Graph's values then."""

    uid: str | None
    text: str | None
    sigs: dict[str, str]

    @classmethod
    def of(cls, item: dict[str, Any]) -> Stash:
        props = {p.get("id", "").lower(): p.get("value") for p in item.get("singleValueExtendedProperties") or []}
        uid = props.get(UID_PROP.lower())
        raw = props.get(ITEM_PROP.lower())
        text, sigs = None, {}
        if isinstance(raw, str):
            try:
                saved = json.loads(raw)
                text, sigs = str(saved["text"]), dict(saved["sigs"])
            except (ValueError, KeyError, TypeError):
                text, sigs = None, {}
        return cls(uid if isinstance(uid, str) else None, text, sigs)

    @staticmethod
    def props(uid: str, text: str, sigs: dict[str, str]) -> list[dict[str, str]]:
        saved = json.dumps({"text": text, "sigs": sigs}, ensure_ascii=False, separators=(",", ":"))
        return [{"id": UID_PROP, "value": uid}, {"id": ITEM_PROP, "value": saved}]


class GraphConnection:
    """The one Graph client a mailbox's targets share (so together they keep to the
    mailbox's 4 concurrent requests); opened by the first target, closed with the last."""

    def __init__(self, settings: GraphSettings) -> None:
        self.settings = settings
        self.client: GraphClient | None = None
        self._users = 0

    def acquire(self) -> GraphClient:
        if self.client is None:
            s = self.settings
            who = s.user or "the signed-in user"
            path = f"/users/{quote(s.user, safe='@.')}" if s.user else "/me"
            tokens = Tokens(s.sign_in, f"graph sign-in for {who}")
            self.client = GraphClient(s.graph_root, path, tokens, ca_file=s.ca_file, timeout=s.timeout)
        self._users += 1
        return self.client

    async def release(self) -> None:
        self._users -= 1
        if self._users <= 0 and self.client is not None:
            client, self.client = self.client, None
            await client.aclose()


class GraphTarget(Target):
    """What contacts and the calendar share: listing, delta, batched reads, conditional writes."""

    backend = "graph"
    #: the collection under the mailbox: "/contacts", "/events"
    collection = ""

    def __init__(self, kind: str, connection: GraphConnection, location: str) -> None:
        super().__init__(kind, location)
        self.connection = connection
        self._client: GraphClient | None = None
        #: uid -> href, when a listing this session read them all (saves a query per upload)
        self._uids: dict[str, str] | None = None

    # -- connection ------------------------------------------------------------------

    @property
    def client(self) -> GraphClient:
        if self._client is None:
            self._client = self.connection.acquire()
        return self._client

    async def open(self, *, create: bool = True) -> None:
        self.client  # noqa: B018 - the client is made lazily; a failure shows at the first request

    async def close(self) -> None:
        if self._client is not None:
            self._client = None
            await self.connection.release()

    def unavailable(self, why: str) -> SyncTargetUnavailable:
        return SyncTargetUnavailable(f"{self.location}: {why}", location=self.location)

    async def call(self, method: str, path: str, **kw: Any) -> tuple[Any, Any]:
        """One request; what no item can handle stops the collection (SyncTargetUnavailable)."""
        try:
            return await self.client.request(method, path, **kw)
        except (LoginRefused, MailboxUnavailable) as exc:  # ServerBusy, unreachable, refused sign-in
            raise self.unavailable(str(exc)) from exc

    # -- names -------------------------------------------------------------------------

    def href(self, item_id: str) -> str:
        return item_id + self.extension

    def item_id(self, href: str) -> str:
        if not href.endswith(self.extension) or "/" in href or len(href) <= len(self.extension):
            raise SyncItemNotFound(f"{self.location}: {href!r} is not an item name", href=href)
        return href[: -len(self.extension)]

    def item_path(self, href: str) -> str:
        return f"{self.collection}/{quote(self.item_id(href), safe='')}"

    # -- reading -----------------------------------------------------------------------

    async def _pages(self, start: str) -> builtins.list[dict[str, Any]]:
        """Every item of a paged collection or a delta round; the last page's deltaLink as ``self.last_link``."""
        items: builtins.list[dict[str, Any]] = []
        self.last_link: str | None = None
        try:
            async for page in self.client.pages(start, headers={"Prefer": f"odata.maxpagesize={PAGE_SIZE}"}):
                items.extend(i for i in page["value"] if isinstance(i, dict) and isinstance(i.get("id"), str))
                self.last_link = page.get("@odata.deltaLink") or self.last_link
        except DeltaExpired:
            raise
        except GraphError as exc:
            raise self.unavailable(f"listing failed: {exc}") from exc
        except (LoginRefused, MailboxUnavailable) as exc:
            raise self.unavailable(str(exc)) from exc
        return items

    async def batch_get(self, paths: dict[str, str]) -> dict[str, dict[str, Any] | None]:
        """Mailbox-relative GETs by $batch (20 a round trip): key -> the answer, None for a 404.
        A sub-request Graph throttled is asked again after its Retry-After."""
        out: dict[str, dict[str, Any] | None] = {}
        keys = list(paths)
        for start in range(0, len(keys), BATCH_MAX):
            pending = keys[start : start + BATCH_MAX]
            for _attempt in range(6):
                requests = [
                    {"id": str(i), "method": "GET", "url": self.client.mailbox_path + paths[key]}
                    for i, key in enumerate(pending)
                ]
                try:
                    answers = await self.client.batch(requests)
                except (LoginRefused, MailboxUnavailable) as exc:
                    raise self.unavailable(str(exc)) from exc
                retry = []
                for i, key in enumerate(pending):
                    answer = answers.get(str(i))
                    if answer is None or answer.status in (429, 503) or answer.status >= 500:
                        if answer is not None:
                            self.client.note_throttled(answer.headers)
                        retry.append(key)
                    elif answer.status == 200 and isinstance(answer.body, dict):
                        out[key] = answer.body
                    elif answer.status == 404:
                        out[key] = None
                    else:
                        raise self.unavailable(f"GET {paths[key].split('?')[0]} failed: HTTP {answer.status}")
                pending = retry
                if not pending:
                    break
                await self.client.wait_turn()
            if pending:
                raise self.unavailable(f"Graph kept refusing {len(pending)} reads")
        return out

    async def fetch_items(self, hrefs: Sequence[str], query: str) -> dict[str, dict[str, Any]]:
        """href -> the item's JSON (with our properties), by $batch; items that are gone are left out."""
        paths = {}
        for href in hrefs:
            try:
                paths[href] = self.item_path(href) + query
            except SyncItemNotFound:
                continue
        return {href: body for href, body in (await self.batch_get(paths)).items() if body is not None}

    # -- writing -----------------------------------------------------------------------

    async def find_uid(self, uid: str) -> str | None:
        """The href of the item we wrote with *uid*, if any (Graph keeps no UIDs of its own)."""
        if self._uids is not None:
            return self._uids.get(uid)
        value = uid.replace("'", "''")
        flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{UID_PROP}' and ep/value eq '{value}')"
        expand = quote(f"singleValueExtendedProperties($filter=id eq '{UID_PROP}')")
        body, _ = await self.call("GET", f"{self.collection}?$filter={quote(flt)}&$select=id&$expand={expand}")
        # Graph compares the value case-insensitively: the UID itself is compared here
        found = [i for i in (body or {}).get("value") or [] if Stash.of(i).uid == uid]
        return self.href(found[0]["id"]) if found else None

    def remember_uids(self, items: builtins.list[dict[str, Any]]) -> None:
        self._uids = {}
        for item in items:
            stash = Stash.of(item)
            if stash.uid:
                self._uids.setdefault(stash.uid, self.href(item["id"]))

    async def write(self, method: str, path: str, body: dict[str, Any], *, etag: str | None, href: str) -> Any:
        """A POST or PATCH (or DELETE, body ignored) under If-Match; maps 404/412."""
        headers = {"If-Match": etag} if etag else None
        try:
            answer, _ = await self.client.request(
                method, path, json=body if method != "DELETE" else None, headers=headers
            )
        except GraphError as exc:
            if exc.status == 404:
                raise SyncItemNotFound(f"{self.location}: no item {href}", href=href) from None
            if exc.status == 412:
                raise SyncPreconditionFailed(f"{self.location}: {href} changed since it was read", href=href) from None
            raise SyncError(f"{self.location}: Graph refused {method} of {href}: {exc}", href=href) from exc
        except (LoginRefused, MailboxUnavailable) as exc:
            raise self.unavailable(str(exc)) from exc
        return answer

    def uid_written(self, uid: str, href: str | None) -> None:
        if self._uids is not None:
            if href is None:
                self._uids = {u: h for u, h in self._uids.items() if u != uid}
            else:
                self._uids[uid] = href

    async def check_new(self, uid: str) -> None:
        existing = await self.find_uid(uid)
        if existing is not None:
            raise SyncItemExists(f"{self.location}: another item has the UID {uid}", href=existing)

    @abstractmethod
    async def list(self) -> dict[str, str]: ...

    @abstractmethod
    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]: ...

    async def delete(self, href: str, etag: str) -> None:
        await self.write("DELETE", self.item_path(href), {}, etag=etag, href=href)
        if self._uids is not None:
            self._uids = {u: h for u, h in self._uids.items() if h != href}

    async def delta(self, token: str | None, start: str) -> tuple[builtins.list[dict[str, Any]], str] | None:
        """A delta round from *token* (a delta link) or from *start*: (items, the new link); None when expired."""
        try:
            items = await self._pages(token or start)
        except DeltaExpired as exc:
            log.info(
                "%s: the delta link expired (%s); listing everything",
                self.location,
                exc.code,
                extra={"event": "sync-token-refused", "collection": self.location},
            )
            return None
        if self.last_link is None:
            raise self.unavailable("a delta round ended without a deltaLink")
        return items, self.last_link

    @staticmethod
    def changes_of(token: str, items: builtins.list[dict[str, Any]], href: Any) -> Changes:
        changes = Changes(token)
        for item in items:
            name = href(item["id"])
            if "@removed" in item:
                changes.changed.pop(name, None)
                changes.deleted.add(name)
            else:
                changes.deleted.discard(name)
                changes.changed[name] = str(item.get("@odata.etag") or "")
        return changes
