"""The sync engine: a three-way comparison of the CRM, the user's collection
and the status table (``SyncItem``, the last state both sides agreed on),
after vdirsyncer's algorithm (itself after OfflineIMAP's).

Per collection:

1. List the user's side (etags), load the CRM side, load the status.
2. The empty-side guard: when the status says N items were synced and one
   side now holds none, stop with :class:`SyncSideEmpty` (a changed path or
   a wiped server looks exactly like N deletions); ``force_delete`` goes on.
3. Read only the items whose etag moved; an item that cannot be parsed is
   shunted (``SyncShunt``) with its reason, left alone on both sides, and
   read again when it changes.
4. Decide and act per item, each in its own store transaction: the user's
   side is written first (etag-guarded), then the CRM and the status row
   commit together.  A crash between the two leaves the user's side ahead
   of the status; the next sync sees an edit that equals the merge and
   settles it, so nothing is done twice or lost.

What happens to each item (see README "Sync-back" for the user's view):

============================  ===================================================
CRM item      user's copy     action
============================  ===================================================
selected      none, no status upload (CRM -> user)
selected      linked          merge field by field (:mod:`mailfiler.sync.merge`)
not selected  linked          merge the user's edits into the CRM, then delete
                              the copy (the filter no longer selects it)
deleted       linked          delete the copy; when the user edited it since,
                              the conflict policy decides (mailbox-wins
                              re-creates the CRM item)
selected      deleted by user ``on_mailbox_delete``: unlink | restore | delete-in-crm
none          new, tracked    create in the CRM (a contact with a known e-mail
                              address links to that contact instead)
same UID      new             link (a copy whose status was lost)
none          new, untracked  remember it as ``ignored`` (the user's own item)
============================  ===================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw

from mailfiler import __version__
from mailfiler.config.schema import SyncFilter
from mailfiler.errors import (
    SyncError,
    SyncItemExists,
    SyncItemNotFound,
    SyncItemUnreadable,
    SyncPreconditionFailed,
    SyncSideEmpty,
    SyncTargetUnavailable,
)
from mailfiler.store.db import transaction
from mailfiler.store.models import Mailbox, Record, SyncCollection, SyncItem, SyncShunt, utcnow
from mailfiler.store.records import get_by_ref
from mailfiler.sync import ical, vcard
from mailfiler.sync.crm import STORES, CrmItem, CrmRows
from mailfiler.sync.filters import matches
from mailfiler.sync.items import Fields, ParsedItem, content_hash
from mailfiler.sync.merge import Merged, creatable, merge
from mailfiler.sync.state import SyncState, changes_are_ours, listing_is_known
from mailfiler.sync.target import Changes, Fetched, Target, etag_key, href_for
from mailfiler.util.fsio import atomic_write

log = logging.getLogger("mailfiler.sync")

CODECS: dict[str, Any] = {"contacts": vcard, "calendar": ical}
#: hrefs read per get_multi call (one REPORT on a DAV server)
FETCH_BATCH = 100
#: event-loop turns given to a sync-token request before the CRM is read (which blocks
#: the loop): enough for httpx to send it, so the server works while the store is read
_SEND_YIELDS = 8
#: status states of an item with a copy on both sides: ``linked`` came from the CRM
#: through the sync filters; ``tracked`` was brought in by the user (a category, a
#: tracked collection) and stays in sync whatever the filters say, as in Dynamics
LINKED = ("linked", "tracked")


@dataclass
class Policy:
    """How one kind (contacts or appointments) syncs for one mailbox."""

    filters: list[SyncFilter]
    directions: dict[str, str] = field(default_factory=dict)
    conflicts: str = "crm-wins"
    on_mailbox_delete: str = "unlink"
    category: str | None = "Tracked"


@dataclass
class Collection:
    """One collection to sync: its target, and whether it receives CRM items
    (``main``) or only brings the user's items in (``tracked``)."""

    target: Target
    role: str = "main"
    regarding: str | None = None

    @property
    def kind(self) -> str:
        return self.target.kind


@dataclass
class Result:
    kind: str
    location: str
    role: str
    #: ok | error (some items failed) | stopped (the empty-side guard) | unavailable
    state: str = "ok"
    uploaded: int = 0
    updated_mailbox: int = 0
    deleted_mailbox: int = 0
    created_crm: int = 0
    updated_crm: int = 0
    deleted_crm: int = 0
    linked: int = 0
    unlinked: int = 0
    conflicts: int = 0
    shunted: int = 0
    skipped: int = 0
    items: int = 0
    #: neither side had changed since the last complete sync: no item was looked at
    quiet: bool = False
    #: CRM items of the kind, and how many of them the sync filters select (None: not looked at)
    crm_total: int | None = None
    selected: int | None = None
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def changes(self) -> int:
        return sum(
            (self.uploaded, self.updated_mailbox, self.deleted_mailbox, self.created_crm, self.updated_crm,
             self.deleted_crm, self.linked, self.unlinked)
        )  # fmt: skip


class SyncEngine:
    """Syncs the collections of one mailbox.

    ``db`` is the open store, ``mailbox`` its row, ``policies`` one
    :class:`Policy` per kind.  ``state_dir`` keeps copies of shunted items."""

    def __init__(
        self,
        db: pw.Database,
        mailbox: Mailbox,
        policies: dict[str, Policy],
        *,
        state_dir: Path | None = None,
        force_delete: bool = False,
    ) -> None:
        self.db = db
        self.mailbox = mailbox
        self.owner = mailbox.owner.lower()
        self.policies = policies
        self.state_dir = state_dir
        self.force_delete = force_delete

    async def sync(self, collections: list[Collection]) -> list[Result]:
        results = []
        for coll in collections:
            results.append(await self.sync_collection(coll))
        return results

    def collection_row(self, coll: Collection) -> SyncCollection:
        with transaction(self.db):
            row, _ = SyncCollection.get_or_create(
                mailbox=self.mailbox,
                kind=coll.kind,
                location=coll.target.location,
                defaults={"backend": coll.target.backend, "role": coll.role},
            )
            if row.role != coll.role or row.backend != coll.target.backend or not row.active:
                row.role, row.backend, row.active = coll.role, coll.target.backend, True
                row.save()
        return row

    async def sync_collection(self, coll: Collection) -> Result:
        row = self.collection_row(coll)
        result = Result(coll.kind, coll.target.location, coll.role)
        try:
            await _CollectionSync(self, coll, row, result).run()
        except SyncSideEmpty as exc:
            result.state = "stopped"
            result.errors.append(str(exc))
            log.error(
                "sync %s %s stopped: %s",
                self.mailbox.name,
                coll.kind,
                exc,
                extra={"event": "sync-side-empty", "mailbox": self.mailbox.name, "collection": coll.target.location},
            )
        except SyncTargetUnavailable as exc:
            result.state = "unavailable"
            result.errors.append(str(exc))
            log.error(
                "sync %s %s: %s",
                self.mailbox.name,
                coll.kind,
                exc,
                extra={"event": "sync-unavailable", "mailbox": self.mailbox.name, "collection": coll.target.location},
            )
        if result.errors and result.state == "ok":
            result.state = "error"
        with transaction(self.db):
            result.items = SyncItem.select().where((SyncItem.collection == row) & SyncItem.state.in_(LINKED)).count()
            SyncCollection.update(
                state=result.state,
                last_sync_at=utcnow(),
                last_error="; ".join(result.errors)[:4000] or None,
                items=result.items,
                updated_at=utcnow(),
            ).where(SyncCollection.id == row.id).execute()
        if result.changes or result.conflicts or result.shunted:
            log.info(
                "sync %s %s: %d up, %d changed there, %d deleted there; %d new, %d changed, %d deleted in the CRM;"
                " %d conflicts, %d shunted",
                self.mailbox.name,
                coll.kind,
                result.uploaded,
                result.updated_mailbox,
                result.deleted_mailbox,
                result.created_crm,
                result.updated_crm,
                result.deleted_crm,
                result.conflicts,
                result.shunted,
                extra={"event": "synced", "mailbox": self.mailbox.name, "collection": coll.target.location},
            )
        return result


class _CollectionSync:
    """One run over one collection (the state of a single sync)."""

    def __init__(self, engine: SyncEngine, coll: Collection, row: SyncCollection, result: Result) -> None:
        self.engine = engine
        self.coll = coll
        self.row = row
        self.result = result
        self.kind = coll.kind
        self.target = coll.target
        self.codec = CODECS[self.kind]
        self.crm = STORES[self.kind]()
        self.policy = engine.policies[self.kind]
        self.listing: dict[str, str] = {}
        self.parsed: dict[str, tuple[Fetched, ParsedItem]] = {}
        self.broken: set[str] = set()

    # -- helpers -------------------------------------------------------------------

    def _crm_id(self, item: SyncItem) -> int | None:
        return item.record_id if self.kind == "contacts" else item.activity_id

    def _link_fields(self, crm_id: int) -> dict[str, Any]:
        return {"record": crm_id} if self.kind == "contacts" else {"activity": crm_id}

    def _log(self, level: int, message: str, *args: Any, **extra: Any) -> None:
        extra.setdefault("event", "sync")
        extra.update(mailbox=self.engine.mailbox.name, collection=self.target.location)
        log.log(level, "sync %s %s: " + message, self.engine.mailbox.name, self.kind, *args, extra=extra)

    def _report_conflicts(self, merged: Merged, what: str) -> None:
        for c in merged.conflicts:
            self.result.conflicts += 1
            self._log(
                logging.WARNING,
                "conflict in %s, field %s: CRM %s, mailbox %s; %s wins (conflicts: %s)",
                what,
                c.field,
                json.dumps(c.crm, ensure_ascii=False),
                json.dumps(c.mailbox, ensure_ascii=False),
                c.winner,
                self.policy.conflicts,
                event="sync-conflict",
                field=c.field,
                crm_value=c.crm,
                mailbox_value=c.mailbox,
                winner=c.winner,
            )

    async def _guarded(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run one item's step: a failure costs that item, not the sync."""
        # let the daemon's other work (tracking mail, heartbeats, the watchdog) run between
        # items: a first sync of thousands of items must not hold the event loop for a minute
        await asyncio.sleep(0)
        try:
            await step()
        except SyncTargetUnavailable:
            raise
        except SyncPreconditionFailed as exc:
            # changed under us: the next sync reads the new state
            self.result.skipped += 1
            self._log(logging.INFO, "%s changed while syncing, next time: %s", what, exc, event="sync-skipped")
        except SyncError as exc:
            self.result.errors.append(f"{what}: {exc}")
            self._log(logging.ERROR, "%s failed: %s", what, exc, event="sync-item-error")
        except pw.PeeweeException as exc:
            self.result.errors.append(f"{what}: store error: {exc}")
            self._log(logging.ERROR, "%s failed in the store: %s", what, exc, event="sync-item-error")
        except Exception as exc:  # one item's bug must not stop the others (logged with its traceback)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.result.errors.append(f"{what}: {detail}")
            log.error("sync item %s failed", what, exc_info=True, extra={"event": "sync-item-error"})

    def _parse(self, fetched: Fetched) -> ParsedItem | None:
        stem = fetched.href.rsplit(".", 1)[0]
        try:
            parsed = self.codec.parse(fetched.data, default_uid=stem)
        except SyncItemUnreadable as exc:
            self._shunt(fetched, exc)
            return None
        self._unshunt(fetched.href)
        return parsed

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.target.open(create=True)
        saved = SyncState.load(self.row.token)
        # the user's side first: a server takes a while to answer, and the CRM is read meanwhile
        pending = asyncio.ensure_future(self.target.changes_since(saved.token)) if saved.token else None
        try:
            for _ in range(_SEND_YIELDS):
                await asyncio.sleep(0)  # let the request go out before the store blocks the loop
            self.elsewhere = self._linked_elsewhere()
            rows = self.crm.fetch()
            self.marker = self._marker(rows)
            changes = await pending if pending is not None else None
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        if (
            changes is not None
            and saved.crm == self.marker
            and (not (changes.changed or changes.deleted) or changes_are_ours(changes, self._known()))
        ):
            # neither side changed since the last complete sync: the per-item pass would do nothing
            self._save(SyncState(changes.token, self.marker))
            self.result.quiet = True
            return
        listing = None
        if changes is None:
            # the token before the listing (lieer's rule): a change made while we list
            # is reported again next time rather than lost
            fresh = await self.target.changes_since(None)
            self._new_token = fresh.token if fresh is not None else None
            listing = await self.target.list()
            if saved.crm == self.marker and listing_is_known(listing, self._known()):
                self._save(SyncState(self._new_token, self.marker))
                self.result.quiet = True
                return
        statuses = list(SyncItem.select().where(SyncItem.collection == self.row).order_by(SyncItem.id))
        if listing is None:
            assert changes is not None
            listing = self._listing(statuses, changes)
        self.listing = listing
        crm_items = self.crm.build(rows)
        self.crm_items = crm_items
        self.by_uid: dict[str, int] = {it.uid: cid for cid, it in crm_items.items()}
        if self.coll.role == "main":
            self.selected = {
                cid
                for cid, it in crm_items.items()
                if cid not in self.elsewhere and matches(it, self.policy.filters, owner=self.engine.owner)
            }
        else:
            self.selected = set()
        if self.coll.role == "main":
            self.result.crm_total, self.result.selected = len(crm_items), len(self.selected)
        self._guard(statuses)
        await self._fetch_changed(statuses)

        by_href = {s.href: s for s in statuses if s.href is not None}
        self.linked_here: set[int] = {
            cid for s in statuses if s.state in (*LINKED, "unlinked") and (cid := self._crm_id(s)) is not None
        }
        for status in statuses:
            if status.state in LINKED and status.href is not None:
                await self._guarded(status.href, lambda s=status: self._linked(s))
        for href in sorted(self.listing):
            status = by_href.get(href)
            if status is None or (status.state == "ignored" and href in self.parsed):
                await self._guarded(href, lambda h=href, s=status: self._new_on_mailbox(h, s))
        for status in statuses:
            if status.state == "ignored" and status.href not in self.listing:
                status.delete_instance()
            elif status.state == "unlinked":
                cid = self._crm_id(status)
                gone = cid is None or cid not in crm_items
                if gone or (self.coll.role == "main" and cid not in self.selected):
                    status.delete_instance()  # it may come back if it is selected again
        for cid in sorted(self.selected - self.linked_here):
            await self._guarded(f"CRM {self.kind} {cid}", lambda c=cid: self._upload(c))
        # a shunted item that is gone needs no fixing any more
        gone = [
            sh.id
            for sh in SyncShunt.select(SyncShunt.id, SyncShunt.href).where(
                (SyncShunt.collection == self.row) & SyncShunt.resolved_at.is_null()
            )
            if sh.href not in self.listing
        ]
        if gone:
            SyncShunt.update(resolved_at=utcnow()).where(SyncShunt.id.in_(gone)).execute()
        # saved only when every item was handled: after a failed or skipped item the same
        # changes are asked for again, else that item's change would never be reported again;
        # and the CRM digest is dropped, so the next sync does the whole pass
        if not (self.result.errors or self.result.skipped):
            # the digest describes the CRM as this pass read it; when the pass itself wrote to the
            # CRM (or anyone did meanwhile) the status matches neither that digest nor, safely, a
            # new one, so none is kept and the next sync does the whole pass once more
            unchanged = self.crm.fetch().digest() == rows.digest() and not self.forced
            self._save(SyncState(await self._adopt(self._new_token), self.marker if unchanged else None))
        elif self._new_token is None:
            self._save(SyncState())
        else:
            self._save(SyncState(saved.token, None))

    _new_token: str | None = None
    marker: str | None = None
    #: the empty-side guard would have stopped this sync, and --force-delete let it through
    forced = False

    def _save(self, state: SyncState) -> None:
        SyncCollection.update(token=state.dump()).where(SyncCollection.id == self.row.id).execute()

    def _marker(self, rows: CrmRows) -> str:
        """The CRM side's digest, with all else the per-item pass depends on (see :mod:`.state`)."""
        h = hashlib.blake2b(digest_size=16)
        for part in (
            __version__,
            rows.digest(),
            repr(self.policy),
            self.coll.role,
            self.coll.regarding,
            self.engine.owner,
            sorted(self.elsewhere),
        ):
            h.update(repr(part).encode() + b"\0")
        return h.hexdigest()

    def _known(self) -> dict[str, str]:
        """href -> etag as the status knows the user's side (shunted items at their shunted etag)."""
        known: dict[str, str] = dict(
            SyncItem.select(SyncItem.href, SyncItem.etag)
            .where((SyncItem.collection == self.row) & SyncItem.href.is_null(False))
            .tuples()
        )
        for href, etag in (
            SyncShunt.select(SyncShunt.href, SyncShunt.etag)
            .where((SyncShunt.collection == self.row) & SyncShunt.resolved_at.is_null())
            .tuples()
        ):
            known.setdefault(href, etag or "")
        return {href: etag or "" for href, etag in known.items()}

    async def _adopt(self, token: str | None) -> str | None:
        """After a sync that wrote to the user's side, the token that follows those writes.

        The token was taken before the writes (it must: a change made meanwhile would be lost),
        so the next sync-collection REPORT would list every item this sync wrote, and on a
        server a first sync writes thousands.  Asked now, while nothing else changed, those
        changes are all ours at the etags we recorded, and the newer token can be kept; when
        any is not (the user changed something meanwhile), the older one is, and the next sync
        reads it all."""
        r = self.result
        if token is None or not (r.uploaded or r.updated_mailbox or r.deleted_mailbox):
            return token
        try:
            later = await self.target.changes_since(token)
        except SyncTargetUnavailable as exc:
            self._log(logging.DEBUG, "kept the older sync token: %s", exc)
            return token
        if later is not None and changes_are_ours(later, self._known()):
            return later.token
        return token

    def _listing(self, statuses: list[SyncItem], changes: Changes) -> dict[str, str]:
        """href -> etag: the status, with the changes the sync token reports."""
        listing = {s.href: s.etag or "" for s in statuses if s.href is not None}
        for shunt in SyncShunt.select().where((SyncShunt.collection == self.row) & SyncShunt.resolved_at.is_null()):
            listing.setdefault(shunt.href, shunt.etag or "")
        listing.update(changes.changed)
        for href in changes.deleted:
            listing.pop(href, None)
        self._new_token = changes.token
        return listing

    def _linked_elsewhere(self) -> set[int]:
        """CRM items this mailbox already has in another collection of the same kind."""
        others = SyncCollection.select(SyncCollection.id).where(
            (SyncCollection.mailbox == self.engine.mailbox)
            & (SyncCollection.kind == self.kind)
            & (SyncCollection.id != self.row.id)
            & SyncCollection.active
        )
        column = SyncItem.record if self.kind == "contacts" else SyncItem.activity
        q = SyncItem.select(column).where(
            SyncItem.collection.in_(others) & SyncItem.state.in_([*LINKED, "unlinked"]) & column.is_null(False)
        )
        return {getattr(s, column.name + "_id") for s in q}

    def _guard(self, statuses: list[SyncItem]) -> None:
        synced = [s for s in statuses if s.state in LINKED and s.href is not None]
        if not synced:
            return
        n = len(synced)
        hint = f"if that is really so, run `mailfiler sync --mailbox {self.engine.mailbox.name} --force-delete`"
        crm_side = (
            self.selected
            if self.coll.role == "main"
            else {c for s in synced if (c := self._crm_id(s)) is not None and c in self.crm_items}
        )
        if self.engine.force_delete:
            # let through once: the next sync checks again (it keeps no digest, so it looks)
            self.forced = not self.listing or not crm_side
            return
        if not self.listing:
            raise SyncSideEmpty(
                f"the {self.kind} at {self.target.location} is empty, but {n} item(s) were synced there;"
                f" nothing was deleted in the CRM ({hint})",
                side="mailbox",
                items=n,
            )
        if not crm_side:
            raise SyncSideEmpty(
                f"the CRM selects no {self.kind} for {self.engine.mailbox.name} (check sync filters), but {n}"
                f" item(s) were synced to {self.target.location}; nothing was deleted there ({hint})",
                side="crm",
                items=n,
            )

    async def _fetch_changed(self, statuses: list[SyncItem]) -> None:
        known = {s.href: s.etag for s in statuses if s.href is not None}
        shunted = {
            s.href: s.etag
            for s in SyncShunt.select().where((SyncShunt.collection == self.row) & SyncShunt.resolved_at.is_null())
        }
        wanted = [
            href
            for href, etag in self.listing.items()
            if etag_key(known.get(href)) != etag_key(etag)
            and not (href in shunted and etag_key(shunted[href]) == etag_key(etag))
        ]
        for href, etag in self.listing.items():
            if href in shunted and etag_key(shunted[href]) == etag_key(etag):
                self.broken.add(href)
        for start in range(0, len(wanted), FETCH_BATCH):
            for fetched in await self.target.get_multi(wanted[start : start + FETCH_BATCH]):
                parsed = self._parse(fetched)
                if parsed is None:
                    self.broken.add(fetched.href)
                else:
                    self.parsed[fetched.href] = (fetched, parsed)
                self.listing[fetched.href] = fetched.etag

    # -- the cases ------------------------------------------------------------------------

    async def _linked(self, status: SyncItem) -> None:
        href = status.href
        cid = self._crm_id(status)
        item = self.crm_items.get(cid) if cid is not None else None
        in_scope = item is not None and (status.state == "tracked" or cid in self.selected)
        if href in self.broken:
            return  # shunted: left alone on both sides until it can be read
        if href not in self.listing:
            await self._deleted_by_user(status, item, in_scope)
            return
        pair = self.parsed.get(href)
        mbox_changed = pair is not None and content_hash(pair[1].fields) != status.mbox_hash
        if item is None:
            await self._deleted_in_crm(status, pair if mbox_changed else None)
            return
        if not in_scope:
            if mbox_changed:
                assert pair is not None
                self._merge_into_crm(status, item, pair)
            await self._delete_copy(status, "no longer selected by the sync filters")
            return
        crm_changed = content_hash(item.fields) != status.crm_hash
        if not mbox_changed and not crm_changed:
            if self.listing[href] != status.etag:  # the same version (a weak tag turned strong) or touched
                status.etag = self.listing[href]  # touched, same content
                status.save()
            return
        if pair is None:
            fetched = await self.target.get(href)
            parsed = self._parse(fetched)
            if parsed is None:
                return
            pair = (fetched, parsed)
        await self._merge(status, item, pair, json.loads(status.base or "{}"))

    async def _merge(
        self,
        status: SyncItem | None,
        item: CrmItem,
        pair: tuple[Fetched, ParsedItem],
        base: Fields | None,
        *,
        state: str | None = None,
    ) -> None:
        fetched, parsed = pair
        merged = merge(
            base,
            item.fields,
            parsed.fields,
            self.policy.directions,
            policy=self.policy.conflicts,
            crm_modified=item.modified,
            mbox_modified=parsed.modified or fetched.modified,
        )
        self._report_conflicts(merged, f"{fetched.href} ({item.fields.get('name') or item.fields.get('subject')})")
        etag, mbox_fields = fetched.etag, parsed.fields
        to_mailbox = {k for k, v in merged.mailbox.items() if v != parsed.fields.get(k)}
        if to_mailbox:
            data = self.codec.render(merged.mailbox, to_mailbox, uid=parsed.uid, existing=fetched.data)
            etag = await self.target.update(fetched.href, data, fetched.etag)
            mbox_fields = self.codec.parse(data).fields
            self.result.updated_mailbox += 1
        to_crm = {k: v for k, v in merged.crm.items() if v != item.fields.get(k)}
        with transaction(self.engine.db):
            if to_crm:
                self.crm.write(item.id, to_crm)
                self.result.updated_crm += 1
            crm_fields = {**item.fields, **to_crm}
            values = dict(
                state=state or (status.state if status is not None else "linked"),
                href=fetched.href,
                etag=etag,
                uid=parsed.uid,
                crm_id=item.id,
                crm_hash=content_hash(crm_fields),
                mbox_hash=content_hash(mbox_fields),
                base=json.dumps(merged.base, ensure_ascii=False),
                synced_at=utcnow(),
                **self._link_fields(item.id),
            )
            if status is None:
                SyncItem.create(collection=self.row, **values)
                self.result.linked += 1
            else:
                SyncItem.update(**values).where(SyncItem.id == status.id).execute()
        self.linked_here.add(item.id)

    def _merge_into_crm(self, status: SyncItem, item: CrmItem, pair: tuple[Fetched, ParsedItem]) -> None:
        """The user's last edits to an item about to leave their side."""
        merged = merge(
            json.loads(status.base or "{}"),
            item.fields,
            pair[1].fields,
            self.policy.directions,
            policy=self.policy.conflicts,
            crm_modified=item.modified,
            mbox_modified=pair[1].modified or pair[0].modified,
        )
        self._report_conflicts(merged, pair[0].href)
        to_crm = {k: v for k, v in merged.crm.items() if v != item.fields.get(k)}
        if to_crm:
            with transaction(self.engine.db):
                self.crm.write(item.id, to_crm)
            self.result.updated_crm += 1

    async def _delete_copy(self, status: SyncItem, why: str) -> None:
        try:
            await self.target.delete(status.href, self.listing[status.href])
        except SyncItemNotFound:
            pass
        with transaction(self.engine.db):
            status.delete_instance()
        self.result.deleted_mailbox += 1
        self._log(logging.INFO, "removed %s: %s", status.href, why, event="sync-removed")

    async def _deleted_in_crm(self, status: SyncItem, changed: tuple[Fetched, ParsedItem] | None) -> None:
        if changed is not None:
            fetched, parsed = changed
            policy = self.policy.conflicts
            # a deletion has no time of its own: newest-wins counts it as newer than any edit
            if policy == "mailbox-wins":
                self._log(
                    logging.WARNING,
                    "conflict in %s: deleted in the CRM, edited by the user; the edit wins (conflicts: %s)",
                    fetched.href,
                    policy,
                    event="sync-conflict",
                    field="*",
                    winner="mailbox",
                )
                self.result.conflicts += 1
                state = status.state
                with transaction(self.engine.db):
                    cid = self._create_in_crm(parsed)
                    status.delete_instance()
                self.crm_items[cid] = self._reload(cid)
                await self._merge(None, self.crm_items[cid], changed, None, state=state)
                return
            self.result.conflicts += 1
            self._log(
                logging.WARNING,
                "conflict in %s: deleted in the CRM, edited by the user (%s); the deletion wins (conflicts: %s)",
                fetched.href,
                json.dumps(parsed.fields, ensure_ascii=False),
                policy,
                event="sync-conflict",
                field="*",
                winner="crm",
                mailbox_value=parsed.fields,
            )
        await self._delete_copy(status, "deleted in the CRM")

    async def _deleted_by_user(self, status: SyncItem, item: CrmItem | None, in_scope: bool) -> None:
        if item is None or not in_scope:
            with transaction(self.engine.db):
                status.delete_instance()
            return
        rule = self.policy.on_mailbox_delete
        if rule == "restore":
            with transaction(self.engine.db):
                status.delete_instance()
            self.linked_here.discard(item.id)
            await self._upload(item.id)
            self._log(logging.INFO, "restored %s the user deleted", status.href, event="sync-restored")
        elif rule == "delete-in-crm":
            with transaction(self.engine.db):
                self.crm.delete(item.id)
                status.delete_instance()
            self.result.deleted_crm += 1
            self._log(logging.INFO, "deleted CRM %s %d: the user deleted it", self.kind, item.id, event="sync-deleted")
        else:
            with transaction(self.engine.db):
                SyncItem.update(state="unlinked", href=None, etag=None, synced_at=utcnow()).where(
                    SyncItem.id == status.id
                ).execute()
            self.result.unlinked += 1
            self._log(logging.INFO, "unlinked %s: the user deleted their copy", status.href, event="sync-unlinked")

    async def _new_on_mailbox(self, href: str, status: SyncItem | None) -> None:
        if href in self.broken or href not in self.parsed:
            return
        fetched, parsed = self.parsed[href]
        cid = self.by_uid.get(parsed.uid)
        if cid is not None and cid in self.elsewhere:
            self._ignore(status, fetched, parsed)  # a copy of an item synced in another collection
            return
        if cid is not None:
            if cid in self.linked_here:
                self._ignore(status, fetched, parsed)  # a second copy of a synced item
                return
            if cid in self.selected or self._tracked(parsed):
                if status is not None:
                    status.delete_instance()
                state = "linked" if cid in self.selected else "tracked"
                await self._merge(None, self.crm_items[cid], (fetched, parsed), None, state=state)
                return
        if not self._tracked(parsed):
            self._ignore(status, fetched, parsed)
            return
        for match in self.crm.find_by_emails(parsed.fields.get("emails") or []):
            if match not in self.linked_here and match not in self.elsewhere and match in self.crm_items:
                if status is not None:
                    status.delete_instance()
                self._log(logging.INFO, "linked %s to CRM contact %d by e-mail address", href, match)
                await self._merge(None, self.crm_items[match], (fetched, parsed), None, state="tracked")
                return
        with transaction(self.engine.db):
            cid = self._create_in_crm(parsed)
            if status is not None:
                status.delete_instance()
        self.result.created_crm += 1
        self.crm_items[cid] = self._reload(cid)
        self.by_uid[parsed.uid] = cid
        self._log(logging.INFO, "tracked %s into the CRM (%s %d)", href, self.kind, cid, event="sync-tracked")
        await self._merge(None, self.crm_items[cid], (fetched, parsed), None, state="tracked")

    def _tracked(self, parsed: ParsedItem) -> bool:
        if self.coll.role == "tracked":
            return True
        category = (self.policy.category or "").strip().lower()
        return bool(category) and category in {c.lower() for c in parsed.categories}

    def _ignore(self, status: SyncItem | None, fetched: Fetched, parsed: ParsedItem) -> None:
        with transaction(self.engine.db):
            if status is None:
                SyncItem.create(
                    collection=self.row, state="ignored", href=fetched.href, etag=fetched.etag, uid=parsed.uid
                )
            else:
                SyncItem.update(etag=fetched.etag, uid=parsed.uid).where(SyncItem.id == status.id).execute()

    def _create_in_crm(self, parsed: ParsedItem) -> int:
        fields = {k: v for k, v in parsed.fields.items() if k in creatable(parsed.fields, self.policy.directions)}
        regarding: Record | None = get_by_ref(self.coll.regarding) if self.coll.regarding else None
        return self.crm.create(
            fields, uid=parsed.uid, owner=self.engine.owner, mailbox=self.engine.mailbox, regarding=regarding
        )

    def _reload(self, cid: int) -> CrmItem:
        return self.crm.load_all([cid])[cid]

    async def _upload(self, cid: int) -> None:
        item = self.crm_items[cid]
        write = creatable(item.fields, self.policy.directions)
        data = self.codec.render(item.fields, write, uid=item.uid)
        try:
            href, etag = await self.target.upload(data, uid=item.uid)
        except SyncItemExists:
            # an item of that name that is not linked: link it if it is this one
            fetched = await self.target.get(_href_guess(self.target, item.uid))
            parsed = self._parse(fetched)
            if parsed is None or parsed.uid != item.uid:
                raise
            await self._merge(None, item, (fetched, parsed), None)
            return
        mbox_fields = self.codec.parse(data).fields
        base = {k: item.fields[k] for k in write}
        with transaction(self.engine.db):
            SyncItem.delete().where(
                (SyncItem.collection == self.row) & (SyncItem.href == href)
            ).execute()  # a stale ignored row
            SyncItem.create(
                collection=self.row,
                state="linked",
                href=href,
                etag=etag,
                uid=item.uid,
                crm_id=cid,
                crm_hash=content_hash(item.fields),
                mbox_hash=content_hash(mbox_fields),
                base=json.dumps(base, ensure_ascii=False),
                **self._link_fields(cid),
            )
        self.linked_here.add(cid)
        self.result.uploaded += 1

    # -- the shunt ---------------------------------------------------------------------------

    def _shunt(self, fetched: Fetched, exc: SyncItemUnreadable) -> None:
        reason = getattr(exc, "reason", exc.code)
        rel = None
        if self.engine.state_dir is not None:
            digest = hashlib.sha256(fetched.data).hexdigest()
            target = (
                self.engine.state_dir / "shunt" / self.engine.mailbox.name / "sync" / f"{digest}{self.target.extension}"
            )
            if not target.exists():
                atomic_write(target, fetched.data)
            rel = str(target.relative_to(self.engine.state_dir))
        now = utcnow()
        with transaction(self.engine.db):
            row = SyncShunt.get_or_none((SyncShunt.collection == self.row) & (SyncShunt.href == fetched.href))
            if row is None:
                SyncShunt.create(
                    collection=self.row,
                    href=fetched.href,
                    etag=fetched.etag,
                    reason=reason,
                    detail=str(exc)[:4000],
                    raw_path=rel,
                    created_at=now,
                    last_attempt_at=now,
                )
            else:
                row.etag, row.reason, row.detail, row.raw_path = fetched.etag, reason, str(exc)[:4000], rel
                row.attempts += 1
                row.last_attempt_at, row.resolved_at = now, None
                row.save()
        self.result.shunted += 1
        self._log(logging.WARNING, "shunted %s: %s", fetched.href, exc, event="sync-shunted", reason=reason)

    def _unshunt(self, href: str) -> None:
        SyncShunt.update(resolved_at=utcnow()).where(
            (SyncShunt.collection == self.row) & (SyncShunt.href == href) & SyncShunt.resolved_at.is_null()
        ).execute()


def _href_guess(target: Target, uid: str) -> str:
    return href_for(uid, target.kind)


__all__ = ["Collection", "Policy", "Result", "SyncEngine"]
