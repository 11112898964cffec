"""The sync engine: a three-way comparison of the CRM, the user's collection
and the status table (``SyncItem``, the last state both sides agreed on),
after vdirsyncer's algorithm (itself after OfflineIMAP's).

Per collection, this module reads and :mod:`.plan` decides, then :mod:`.apply`
writes:

1. List the user's side (etags), load the CRM side, load the status; when
   neither side changed since the last complete sync, stop (:mod:`.state`).
2. The empty-side guard: when the status says N items were synced and one
   side now holds none, stop with :class:`SyncSideEmpty` (a changed path or
   a wiped server looks exactly like N deletions); ``force_delete`` goes on.
3. Read only the items whose etag moved, and the copies of CRM items that
   changed; an item that cannot be parsed is kept aside (``SyncShunt``)
   with its reason, left alone on both sides, and read again when it changes.
4. Plan every item's action (:func:`mailfiler.sync.plan.plan_collection`),
   then perform the plan, each item in its own store transaction
   (:class:`mailfiler.sync.apply.Applier`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path

import peewee as pw

from mailfiler import __version__
from mailfiler.errors import SyncItemUnreadable, SyncSideEmpty, SyncTargetUnavailable
from mailfiler.sources.target import Changes, Fetched, etag_key
from mailfiler.store.db import transaction
from mailfiler.store.models import Mailbox, utcnow
from mailfiler.store.syncmodels import SyncCollection, SyncItem, SyncShunt
from mailfiler.sync.actions import LINKED, Pair, Plan, Policy, Status
from mailfiler.sync.apply import CODECS, Applier, Collection, Result
from mailfiler.sync.crm import STORES, CrmRows, tuple_rows
from mailfiler.sync.plan import Inputs, check_sides, plan_collection, selection, to_read
from mailfiler.sync.state import SyncState, changes_are_ours, listing_is_known

log = logging.getLogger("mailfiler.sync")

#: hrefs read per get_multi call (one REPORT on a DAV server)
FETCH_BATCH = 100
#: event-loop turns given to a sync-token request before the CRM is read (which blocks
#: the loop): enough for httpx to send it, so the server works while the store is read
_SEND_YIELDS = 8


class SyncEngine:
    """Syncs the collections of one mailbox.

    ``db`` is the open store, ``mailbox`` its row, ``policies`` one
    :class:`Policy` per kind.  ``state_dir`` keeps copies of shunted items.
    ``dry_run`` plans every collection and performs nothing: the plans are
    in :attr:`plans` and the store and the collections are left as they were."""

    def __init__(
        self,
        db: pw.Database,
        mailbox: Mailbox,
        policies: dict[str, Policy],
        *,
        state_dir: Path | None = None,
        force_delete: bool = False,
        dry_run: bool = False,
    ) -> None:
        self.db = db
        self.mailbox = mailbox
        self.owner = mailbox.owner.lower()
        self.policies = policies
        self.state_dir = state_dir
        self.force_delete = force_delete
        self.dry_run = dry_run
        #: (location, plan) of every collection planned, in order
        self.plans: list[tuple[str, Plan]] = []

    async def sync(self, collections: list[Collection]) -> list[Result]:
        results = []
        for coll in collections:
            results.append(await self.sync_collection(coll))
        return results

    def collection_row(self, coll: Collection) -> SyncCollection:
        if self.dry_run:
            found = SyncCollection.get_or_none(
                (SyncCollection.mailbox == self.mailbox)
                & (SyncCollection.kind == coll.kind)
                & (SyncCollection.location == coll.target.location)
            )
            # a collection never synced: an unsaved row (id 0 matches no status)
            return found or SyncCollection(id=0, mailbox=self.mailbox, kind=coll.kind, location=coll.target.location)
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
        run = _CollectionSync(self, coll, row, result)
        try:
            await run.run()
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
        if self.dry_run:
            self.plans.append((coll.target.location, run.plan or Plan()))
            return result
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
        self.applier = Applier(
            engine.db, engine.mailbox, coll, row, self.policy, self.crm, result,
            listing=self.listing, state_dir=engine.state_dir,
        )  # fmt: skip

    def _log(self, level: int, message: str, *args: object, **extra: object) -> None:
        self.applier.log(level, message, *args, **extra)

    def _statuses(self) -> list[Status]:
        """The status rows, as plain tuples (building thousands of models costs more than the pass)."""
        link = SyncItem.record if self.kind == "contacts" else SyncItem.activity
        columns = (SyncItem.id, SyncItem.state, SyncItem.href, SyncItem.etag, SyncItem.uid, link,
                   SyncItem.crm_hash, SyncItem.mbox_hash, SyncItem.base)  # fmt: skip
        q = SyncItem.select(*columns).where(SyncItem.collection == self.row).order_by(SyncItem.id)
        return [Status(*row) for row in tuple_rows(q.tuples())]

    # -- the run ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.target.open(create=not self.engine.dry_run)
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
        statuses = self._statuses()
        shunted: dict[str, str] = {
            s.href: s.etag or ""
            for s in SyncShunt.select().where((SyncShunt.collection == self.row) & SyncShunt.resolved_at.is_null())
        }
        if listing is None:
            assert changes is not None
            listing = self._listing(statuses, shunted, changes)
        self.listing.update(listing)
        crm_items = self.crm.build(rows)
        selected = selection(
            crm_items, self.policy, role=self.coll.role, owner=self.engine.owner, elsewhere=self.elsewhere
        )
        if self.coll.role == "main":
            self.result.crm_total, self.result.selected = len(crm_items), len(selected)
        self.forced = check_sides(
            statuses, self.listing, crm_items, selected,
            kind=self.kind, role=self.coll.role, mailbox=self.engine.mailbox.name,
            location=self.target.location, force_delete=self.engine.force_delete,
        )  # fmt: skip
        inputs = Inputs(
            self.kind, self.coll.role, self.policy, self.engine.owner, crm_items, statuses, self.listing,
            elsewhere=self.elsewhere,
        )  # fmt: skip
        # to_read and the planner are pure and CPU-bound (a hash and a few comparisons an item,
        # ~0.1 s for 5,000): run off the event loop, so the daemon's other work goes on meanwhile
        wanted = await asyncio.to_thread(
            to_read, statuses, self.listing, shunted, crm_items, selected, inputs.crm_hashes
        )
        resolved = await self._read(inputs, wanted, shunted)
        self.plan = await asyncio.to_thread(plan_collection, inputs, selected)
        if self.engine.dry_run:
            return
        for href in resolved:
            self.applier.unshunt(href)
        await self.applier.apply(self.plan)
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
    plan: Plan | None = None
    #: the empty-side guard would have stopped this sync, and --force-delete let it through
    forced = False

    def _save(self, state: SyncState) -> None:
        if self.engine.dry_run:
            return
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
            tuple_rows(
                SyncItem.select(SyncItem.href, SyncItem.etag)
                .where((SyncItem.collection == self.row) & SyncItem.href.is_null(False))
                .tuples()
            )
        )
        for href, etag in tuple_rows(
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

    def _listing(self, statuses: list[Status], shunted: dict[str, str], changes: Changes) -> dict[str, str]:
        """href -> etag: the status, with the changes the sync token reports."""
        listing = {s.href: s.etag or "" for s in statuses if s.href is not None}
        for href, etag in shunted.items():
            listing.setdefault(href, etag)
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

    async def _read(self, inputs: Inputs, wanted: list[str], shunted: dict[str, str]) -> list[str]:
        """Read and parse *wanted* into *inputs*; returns the shunted hrefs that now parse."""
        for href, etag in inputs.listing.items():
            if href in shunted and etag_key(shunted[href]) == etag_key(etag):
                inputs.broken.add(href)
        resolved = []
        for start in range(0, len(wanted), FETCH_BATCH):
            for fetched in await self.target.get_multi(wanted[start : start + FETCH_BATCH]):
                pair = self._parse(fetched)
                if isinstance(pair, SyncItemUnreadable):
                    inputs.unreadable[fetched.href] = (fetched, pair)
                    inputs.broken.add(fetched.href)
                else:
                    inputs.parsed[fetched.href] = pair
                    if fetched.href in shunted:
                        resolved.append(fetched.href)
                inputs.listing[fetched.href] = fetched.etag
        return resolved

    def _parse(self, fetched: Fetched) -> Pair | SyncItemUnreadable:
        try:
            return fetched, self.codec.parse(fetched.data, default_uid=fetched.href.rsplit(".", 1)[0])
        except SyncItemUnreadable as exc:
            return exc


__all__ = ["FETCH_BATCH", "LINKED", "Collection", "Policy", "Result", "SyncEngine"]
