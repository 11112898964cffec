"""The mailbox's calendar as a sync target (events as iCalendar, see :mod:`.events`).

On the wire: ``list`` pages ``GET /events`` (single events and series
masters) and asks, 20 series a ``$batch``, for each series' instances in
the window; ``changes_since`` follows a ``calendarView/delta`` link over
the window (Graph's delta for events works on a calendar view only), so a
change to an event wholly outside the window is seen at the next full
listing; ``get_multi`` reads events, and the series' instances, by
``$batch``; writes are ``POST``/``PATCH``/``DELETE`` on ``/events`` with
``If-Match``, then the changed occurrences are PATCHed and the cancelled
ones deleted (inside the window: Graph names occurrences only there).

A series' etag is its master's ``@odata.etag`` plus a digest of its
instances' ids and etags in the window, so an occurrence Outlook changed or
cancelled changes the series' etag.  A write checks that digest before it
sends the master's etag as ``If-Match``.

A removed instance in a delta round is a deleted event, or an occurrence
Outlook cancelled (Graph does not say of which series): the token keeps the
ids of the series seen in the window, and each is asked again then.

The window moves with the day: a delta link made for another day's window
is not used (the engine lists everything once, then follows the new link).
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from mailfiler.errors import SyncError
from mailfiler.sources.graph.events import Shown, Written, sigs, stamp, utc_of
from mailfiler.sources.graph.targets import EXPAND, UID_PROP, GraphConnection, GraphTarget, Stash, digest
from mailfiler.sources.target import Changes, Fetched, SyncPreconditionFailed

DAYS_BACK = 30
DAYS_AHEAD = 365


class GraphCalendar(GraphTarget):
    """The primary calendar of a Graph mailbox, over a window of days around today."""

    collection = "/events"

    def __init__(
        self, connection: GraphConnection, location: str, *, days_back: int = DAYS_BACK, days_ahead: int = DAYS_AHEAD
    ) -> None:
        super().__init__("calendar", connection, location)
        self.days_back, self.days_ahead = days_back, days_ahead

    def window(self) -> tuple[dt.datetime, dt.datetime]:
        today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - dt.timedelta(days=self.days_back), today + dt.timedelta(days=self.days_ahead)

    def _span(self) -> str:
        lo, hi = self.window()
        return f"startDateTime={stamp(lo)}&endDateTime={stamp(hi)}"

    def _instances(self, select: bool) -> str:
        fields = "&$select=id,type,originalStart" if select else ""
        return f"/instances?{self._span()}&$top=1000{fields}"

    # -- etags ---------------------------------------------------------------------------

    @staticmethod
    def composite(master_etag: str, instances: builtins.list[dict[str, Any]]) -> str:
        return master_etag + "+" + digest(sorted([i.get("id"), i.get("@odata.etag")] for i in instances))[:12]

    async def _series(self, ids: builtins.list[str], etags: dict[str, str] | None = None) -> dict[str, str]:
        """Series master id -> its etag (master + instances); series that are gone are left out."""
        paths = {}
        for sid in ids:
            base = f"/events/{quote(sid, safe='')}"
            paths["i" + sid] = base + self._instances(select=True)
            if etags is None:
                paths["m" + sid] = base + "?$select=id"
        got = await self.batch_get(paths)
        out = {}
        for sid in ids:
            master = {"@odata.etag": etags[sid]} if etags is not None else got.get("m" + sid)
            inst = got.get("i" + sid)
            if master is not None and inst is not None:
                out[sid] = self.composite(str(master.get("@odata.etag") or ""), inst.get("value") or [])
        return out

    # -- reading -------------------------------------------------------------------------

    async def list(self) -> dict[str, str]:
        query = f"?$select=id,type&$expand=singleValueExtendedProperties($filter=id eq '{UID_PROP}')"
        items = await self._pages(self.collection + query)
        self.remember_uids(items)
        out = {self.href(i["id"]): str(i.get("@odata.etag") or "") for i in items if i.get("type") != "seriesMaster"}
        masters = {i["id"]: str(i.get("@odata.etag") or "") for i in items if i.get("type") == "seriesMaster"}
        for sid, etag in (await self._series(list(masters), masters)).items():
            out[self.href(sid)] = etag
        return out

    async def changes_since(self, token: str | None) -> Changes | None:
        day = stamp(self.window()[0])[:10]
        saved: dict[str, Any] = {}
        if token is not None:
            try:
                saved = json.loads(token)
            except ValueError:
                return None
            if saved.get("day") != day or not saved.get("link"):
                return None  # the window moved: list everything, then follow a link over today's
        found = await self.delta(saved.get("link"), f"/calendarView/delta?{self._span()}")
        if found is None:
            return None
        items, link = found
        known = set(saved.get("series") or [])
        series = {str(i["seriesMasterId"]) for i in items if i.get("seriesMasterId") and "@removed" not in i}
        changes = Changes("")
        for item in items:
            if "@removed" in item:
                changes.deleted.add(self.href(item["id"]))  # an event; or an occurrence (no href: ignored)
            elif not item.get("seriesMasterId"):
                changes.changed[self.href(item["id"])] = str(item.get("@odata.etag") or "")
        if token is not None and changes.deleted:
            # a cancelled occurrence comes as its own id, without its series: ask every series known
            series |= known
        etags = await self._series(sorted(series)) if token is not None else {}
        for sid in series:
            if token is None:
                continue
            if sid in etags:
                changes.changed[self.href(sid)] = etags[sid]
                changes.deleted.discard(self.href(sid))
            else:
                changes.deleted.add(self.href(sid))
        alive = (known | series) - {self.item_id(h) for h in changes.deleted}
        changes.token = json.dumps({"day": day, "link": link, "series": sorted(alive)}, separators=(",", ":"))
        if token is None:
            changes.changed.clear()
            changes.deleted.clear()
        return changes

    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]:
        items = await self.fetch_items(hrefs, f"?$expand={EXPAND}")
        series = [h for h, item in items.items() if item.get("type") == "seriesMaster"]
        instances = await self.fetch_items(series, self._instances(select=False))
        window = self.window()
        out = []
        for href in hrefs:
            item = items.get(href)
            if item is None or (href in series and href not in instances):
                continue
            inst = (instances.get(href) or {}).get("value") or []
            etag = str(item.get("@odata.etag") or "")
            if href in series:
                etag = self.composite(etag, inst)
            try:
                data = self._data(item, inst, window)
            except SyncError as exc:
                # not an item the sync can read: these bytes do not parse, so the engine sets it aside
                # (shunted, with the reason) and reads it again when it changes
                data = f"unreadable Graph event: {exc}".encode()
            modified = utc_of(item.get("lastModifiedDateTime"))
            out.append(Fetched(href, etag, data, modified.replace(tzinfo=None) if modified else None))
        return out

    @staticmethod
    def _data(item: dict[str, Any], instances: builtins.list[dict[str, Any]], window: Any) -> bytes:
        shown = Shown(item, instances, window)
        stash = Stash.of(item)
        if stash.text is not None and sigs(item, shown.occurrences()) == stash.sigs:
            return stash.text.encode("utf-8")
        return shown.render(stash.uid or str(item.get("iCalUId") or item["id"]), stash.text, stash.sigs)

    # -- writing -------------------------------------------------------------------------

    def _body(self, written: Written, data: bytes, uid: str) -> dict[str, Any]:
        body = {k: v for k, v in written.body.items() if not (k == "recurrence" and v is None)}
        text = data.decode("utf-8", errors="replace")
        body["singleValueExtendedProperties"] = Stash.props(
            written.uid or uid, text, sigs(body, written.occurrences(self.window()))
        )
        return body

    async def _occurrences(self, sid: str, written: Written) -> None:
        """The changed and cancelled occurrences of a series, as the item has them (in the window)."""
        if not (written.overrides or written.exdates) or not written.body.get("recurrence"):
            return
        got = await self.batch_get({"i": f"/events/{quote(sid, safe='')}" + self._instances(select=True)})
        for inst in (got.get("i") or {}).get("value") or []:
            rid, path = stamp(utc_of(inst.get("originalStart"))), f"/events/{quote(inst['id'], safe='')}"
            if rid in written.exdates:
                await self.write("DELETE", path, {}, etag=None, href=self.href(sid))
            elif rid in written.overrides:
                patch = {k: v for k, v in written.overrides[rid].items() if k != "isAllDay"}
                await self.write("PATCH", path, patch, etag=None, href=self.href(sid))

    async def _etag_after(self, sid: str, answer: Any, written: Written) -> str:
        etag = str((answer or {}).get("@odata.etag") or "")
        if not written.body.get("recurrence"):
            return etag
        return (await self._series([sid])).get(sid, etag)

    async def _current(self, href: str, etag: str) -> str:
        """The etag to send as If-Match: a series' master etag, once its occurrences are as read."""
        if "+" not in etag:
            return etag
        sid = self.item_id(href)
        now = (await self._series([sid])).get(sid)
        if now is None:
            from mailfiler.sources.target import SyncItemNotFound

            raise SyncItemNotFound(f"{self.location}: no item {href}", href=href)
        if now != etag:
            raise SyncPreconditionFailed(f"{self.location}: {href} changed since it was read", href=href)
        return etag.split("+", 1)[0]

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        written = Written(data)
        body = self._body(written, data, uid)
        await self.check_new(uid)
        made = await self.write("POST", self.collection, body, etag=None, href=uid)
        sid = str(made["id"])
        await self._occurrences(sid, written)
        self.uid_written(uid, self.href(sid))
        return self.href(sid), await self._etag_after(sid, made, written)

    async def update(self, href: str, data: bytes, etag: str) -> str:
        written = Written(data)
        match = await self._current(href, etag)
        answer = await self.write("PATCH", self.item_path(href), self._body(written, data, ""), etag=match, href=href)
        await self._occurrences(self.item_id(href), written)
        return await self._etag_after(self.item_id(href), answer, written)

    async def delete(self, href: str, etag: str) -> None:
        await super().delete(href, await self._current(href, etag))
