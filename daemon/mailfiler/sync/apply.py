"""Performs a sync :class:`~mailfiler.sync.actions.Plan` against a target and the
CRM store, with the sync's safety rules:

- every write to the user's side names the etag it expects, so an item the
  user changed meanwhile is skipped (:class:`SyncPreconditionFailed`) and
  seen again next time;
- each item commits alone: the user's side is written first, then the CRM
  and the status row commit together.  A crash between the two leaves the
  user's side ahead of the status; the next sync sees an edit that equals
  the merge and settles it, so nothing is done twice or lost;
- a failure costs that item, not the pass (:meth:`Applier.guarded`);
- an item that cannot be parsed is shunted (``SyncShunt``) with its reason
  and a copy of its bytes, and read again when it changes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw

from mailfiler.errors import (
    SyncError,
    SyncItemExists,
    SyncItemNotFound,
    SyncItemUnreadable,
    SyncPreconditionFailed,
    SyncTargetUnavailable,
)
from mailfiler.sources.target import Fetched, Target, href_for
from mailfiler.store.db import transaction
from mailfiler.store.models import Mailbox, Record, delete_from, utcnow
from mailfiler.store.records import get_by_ref
from mailfiler.store.syncmodels import SyncCollection, SyncItem, SyncShunt
from mailfiler.sync import ical, vcard
from mailfiler.sync.actions import BY_EMAIL, Action, Op, Pair, Plan, Policy, Resolution, Status, resolve
from mailfiler.sync.crm import CrmItem
from mailfiler.sync.items import ParsedItem, content_hash
from mailfiler.sync.merge import Merged, creatable
from mailfiler.util.fsio import atomic_write

log = logging.getLogger("mailfiler.sync")

CODECS: dict[str, Any] = {"contacts": vcard, "calendar": ical}


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


def _drop(status: Status) -> None:
    delete_from(SyncItem).where(SyncItem.id == status.id).execute()


class Applier:
    """Performs the plans of one collection's pass, counting into *result*."""

    def __init__(
        self,
        db: pw.Database,
        mailbox: Mailbox,
        coll: Collection,
        row: SyncCollection,
        policy: Policy,
        crm: Any,
        result: Result,
        *,
        listing: dict[str, str],
        state_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.mailbox = mailbox
        self.owner = mailbox.owner.lower()
        self.coll = coll
        self.kind = coll.kind
        self.target = coll.target
        self.row = row
        self.policy = policy
        self.crm = crm
        self.codec = CODECS[self.kind]
        self.result = result
        self.listing = listing
        self.state_dir = state_dir

    # -- helpers -------------------------------------------------------------------

    def _link_fields(self, crm_id: int) -> dict[str, Any]:
        return {"record": crm_id} if self.kind == "contacts" else {"activity": crm_id}

    def log(self, level: int, message: str, *args: Any, **extra: Any) -> None:
        extra.setdefault("event", "sync")
        extra.update(mailbox=self.mailbox.name, collection=self.target.location)
        log.log(level, "sync %s %s: " + message, self.mailbox.name, self.kind, *args, extra=extra)

    def _report_conflicts(self, merged: Merged, what: str) -> None:
        for c in merged.conflicts:
            self.result.conflicts += 1
            self.log(
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

    async def guarded(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
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
            self.log(logging.INFO, "%s changed while syncing, next time: %s", what, exc, event="sync-skipped")
        except SyncError as exc:
            self.result.errors.append(f"{what}: {exc}")
            self.log(logging.ERROR, "%s failed: %s", what, exc, event="sync-item-error")
        except pw.PeeweeException as exc:
            self.result.errors.append(f"{what}: store error: {exc}")
            self.log(logging.ERROR, "%s failed in the store: %s", what, exc, event="sync-item-error")
        except Exception as exc:  # one item's bug must not stop the others (logged with its traceback)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.result.errors.append(f"{what}: {detail}")
            log.error("sync item %s failed", what, exc_info=True, extra={"event": "sync-item-error"})

    def parse(self, fetched: Fetched) -> ParsedItem | None:
        """The item, or None when it is unreadable (then it is shunted)."""
        try:
            parsed = self.codec.parse(fetched.data, default_uid=fetched.href.rsplit(".", 1)[0])
        except SyncItemUnreadable as exc:
            self.shunt(fetched, exc)
            return None
        self.unshunt(fetched.href)
        return parsed

    # -- the plan ------------------------------------------------------------------------

    async def apply(self, plan: Plan) -> None:
        for action in plan:
            if action.stage in ("items", "upload"):
                await self.guarded(self._what(action), functools.partial(self.perform, action))
            else:  # reading's keep-aside and the status cleanup: as much a part of the pass as reading
                await self.perform(action)

    def _what(self, action: Action) -> str:
        if action.stage == "upload":
            assert action.item is not None
            return f"CRM {self.kind} {action.item.id}"
        if action.status is not None and action.status.href is not None:
            return action.status.href
        return action.href or str(action.op)

    async def perform(self, a: Action) -> None:
        s = a.status
        if a.op is Op.UPDATE:
            assert s is not None and a.item is not None and s.href is not None
            pair, resolution = a.pair, a.resolution
            if pair is None:  # not read with the others (it vanished since the listing, say)
                fetched = await self.target.get(s.href)
                parsed = self.parse(fetched)
                if parsed is None:
                    return
                pair = (fetched, parsed)
            if resolution is None:
                resolution = resolve(self.policy, s.base_fields(), a.item, pair)
            await self.merge(s, a.item, pair, resolution)
        elif a.op is Op.LINK:
            assert a.item is not None and a.pair is not None and a.resolution is not None
            if s is not None:
                _drop(s)
            if a.reason == BY_EMAIL:
                self.log(logging.INFO, "linked %s to CRM contact %d by e-mail address", a.href, a.item.id)
            await self.merge(None, a.item, a.pair, a.resolution, state=a.state)
        elif a.op is Op.CREATE:
            assert a.pair is not None
            with transaction(self.db):
                cid = self.create_in_crm(a.pair[1])
                if s is not None:
                    _drop(s)
            self.result.created_crm += 1
            item = self.crm.load_all([cid])[cid]
            self.log(logging.INFO, "tracked %s into the CRM (%s %d)", a.href, self.kind, cid, event="sync-tracked")
            await self.merge(None, item, a.pair, resolve(self.policy, None, item, a.pair), state="tracked")
        elif a.op is Op.RECREATE:
            assert s is not None and a.pair is not None
            self.log(
                logging.WARNING,
                "conflict in %s: deleted in the CRM, edited by the user; the edit wins (conflicts: %s)",
                a.pair[0].href,
                self.policy.conflicts,
                event="sync-conflict",
                field="*",
                winner="mailbox",
            )
            self.result.conflicts += 1
            with transaction(self.db):
                cid = self.create_in_crm(a.pair[1])
                _drop(s)
            item = self.crm.load_all([cid])[cid]
            await self.merge(None, item, a.pair, resolve(self.policy, None, item, a.pair), state=a.state)
        elif a.op is Op.DELETE_COPY:
            assert s is not None
            if a.winner == "crm":
                assert a.pair is not None
                self.result.conflicts += 1
                self.log(
                    logging.WARNING,
                    "conflict in %s: deleted in the CRM, edited by the user (%s); the deletion wins (conflicts: %s)",
                    a.pair[0].href,
                    json.dumps(a.pair[1].fields, ensure_ascii=False),
                    self.policy.conflicts,
                    event="sync-conflict",
                    field="*",
                    winner="crm",
                    mailbox_value=a.pair[1].fields,
                )
            if a.resolution is not None:  # the user's last edits to an item about to leave their side
                assert a.item is not None and a.pair is not None
                self._report_conflicts(a.resolution.merged, a.pair[0].href)
                if a.resolution.to_crm:
                    with transaction(self.db):
                        self.crm.write(a.item.id, a.resolution.to_crm)
                    self.result.updated_crm += 1
            await self.delete_copy(s, a.reason)
        elif a.op is Op.FORGET:
            assert s is not None
            with transaction(self.db):
                _drop(s)
        elif a.op is Op.RESTORE:
            assert s is not None and a.item is not None
            with transaction(self.db):
                _drop(s)
            await self.upload(a.item)
            self.log(logging.INFO, "restored %s the user deleted", s.href, event="sync-restored")
        elif a.op is Op.DELETE_IN_CRM:
            assert s is not None and a.item is not None
            with transaction(self.db):
                self.crm.delete(a.item.id)
                _drop(s)
            self.result.deleted_crm += 1
            self.log(logging.INFO, "deleted CRM %s %d: the user deleted it", self.kind, a.item.id, event="sync-deleted")
        elif a.op is Op.UNLINK:
            assert s is not None
            with transaction(self.db):
                SyncItem.update(state="unlinked", href=None, etag=None, synced_at=utcnow()).where(
                    SyncItem.id == s.id
                ).execute()
            self.result.unlinked += 1
            self.log(logging.INFO, "unlinked %s: the user deleted their copy", s.href, event="sync-unlinked")
        elif a.op is Op.IGNORE:
            assert a.pair is not None
            self.ignore(s, *a.pair)
        elif a.op is Op.TOUCH:
            assert s is not None and a.href is not None
            SyncItem.update(etag=self.listing[a.href]).where(SyncItem.id == s.id).execute()
        elif a.op is Op.UPLOAD:
            assert a.item is not None
            await self.upload(a.item)
        elif a.op is Op.KEEP_ASIDE:
            assert a.fetched is not None and isinstance(a.error, SyncItemUnreadable)
            self.shunt(a.fetched, a.error)
        else:  # pragma: no cover - a new Op without its step
            raise AssertionError(f"no step for {a.op}")

    # -- the steps -------------------------------------------------------------------------

    async def merge(
        self,
        status: Status | None,
        item: CrmItem,
        pair: Pair,
        resolution: Resolution,
        *,
        state: str | None = None,
    ) -> None:
        fetched, parsed = pair
        merged = resolution.merged
        self._report_conflicts(merged, f"{fetched.href} ({item.fields.get('name') or item.fields.get('subject')})")
        etag, mbox_fields = fetched.etag, parsed.fields
        if resolution.to_mailbox:
            data = self.codec.render(merged.mailbox, set(resolution.to_mailbox), uid=parsed.uid, existing=fetched.data)
            etag = await self.target.update(fetched.href, data, fetched.etag)
            mbox_fields = self.codec.parse(data).fields
            self.result.updated_mailbox += 1
        to_crm = resolution.to_crm
        with transaction(self.db):
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

    async def delete_copy(self, status: Status, why: str) -> None:
        assert status.href is not None
        try:
            await self.target.delete(status.href, self.listing[status.href])
        except SyncItemNotFound:
            pass
        with transaction(self.db):
            _drop(status)
        self.result.deleted_mailbox += 1
        self.log(logging.INFO, "removed %s: %s", status.href, why, event="sync-removed")

    def ignore(self, status: Status | None, fetched: Fetched, parsed: ParsedItem) -> None:
        with transaction(self.db):
            if status is None:
                SyncItem.create(
                    collection=self.row, state="ignored", href=fetched.href, etag=fetched.etag, uid=parsed.uid
                )
            else:
                SyncItem.update(etag=fetched.etag, uid=parsed.uid).where(SyncItem.id == status.id).execute()

    def create_in_crm(self, parsed: ParsedItem) -> int:
        fields = {k: v for k, v in parsed.fields.items() if k in creatable(parsed.fields, self.policy.directions)}
        regarding: Record | None = get_by_ref(self.coll.regarding) if self.coll.regarding else None
        return self.crm.create(fields, uid=parsed.uid, owner=self.owner, mailbox=self.mailbox, regarding=regarding)

    async def upload(self, item: CrmItem) -> None:
        write = creatable(item.fields, self.policy.directions)
        data = self.codec.render(item.fields, write, uid=item.uid)
        try:
            href, etag = await self.target.upload(data, uid=item.uid)
        except SyncItemExists:
            # an item of that name that is not linked: link it if it is this one
            fetched = await self.target.get(href_for(item.uid, self.target.kind))
            parsed = self.parse(fetched)
            if parsed is None or parsed.uid != item.uid:
                raise
            pair = (fetched, parsed)
            await self.merge(None, item, pair, resolve(self.policy, None, item, pair))
            return
        mbox_fields = self.codec.parse(data).fields
        base = {k: item.fields[k] for k in write}
        with transaction(self.db):
            delete_from(SyncItem).where(
                (SyncItem.collection == self.row) & (SyncItem.href == href)
            ).execute()  # a stale ignored row
            SyncItem.create(
                collection=self.row,
                state="linked",
                href=href,
                etag=etag,
                uid=item.uid,
                crm_id=item.id,
                crm_hash=content_hash(item.fields),
                mbox_hash=content_hash(mbox_fields),
                base=json.dumps(base, ensure_ascii=False),
                **self._link_fields(item.id),
            )
        self.result.uploaded += 1

    # -- the shunt ---------------------------------------------------------------------------

    def shunt(self, fetched: Fetched, exc: SyncItemUnreadable) -> None:
        reason = getattr(exc, "reason", exc.code)
        rel = None
        if self.state_dir is not None:
            digest = hashlib.sha256(fetched.data).hexdigest()
            target = self.state_dir / "shunt" / self.mailbox.name / "sync" / f"{digest}{self.target.extension}"
            if not target.exists():
                atomic_write(target, fetched.data)
            rel = str(target.relative_to(self.state_dir))
        now = utcnow()
        with transaction(self.db):
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
        self.log(logging.WARNING, "shunted %s: %s", fetched.href, exc, event="sync-shunted", reason=reason)

    def unshunt(self, href: str) -> None:
        SyncShunt.update(resolved_at=utcnow()).where(
            (SyncShunt.collection == self.row) & (SyncShunt.href == href) & SyncShunt.resolved_at.is_null()
        ).execute()


__all__ = ["CODECS", "Applier", "Collection", "Result"]
