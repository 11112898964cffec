"""Sync-back targets on Exchange: the mailbox's contacts folder or calendar as a
:class:`~mailfiler.sources.target.Target` (issue 18).

An item's ``href`` is its EWS ItemId made file-safe (``+/`` -> ``-_``) plus the
kind's extension, and its ``etag`` the ChangeKey, which Exchange changes with
every save.  What each call costs (all of them in the client's bounded pool,
under its timeout, ErrorServerBusy waited out as Exchange asks):

==================  =======================================================
``list``            SyncFolderItems from no state (IdOnly + our UID property),
                    ``page_size`` (200) per page
``get_multi``       one GetItem per ``fetch_batch`` items
``upload``          CreateItem
``update``          UpdateItem, ConflictResolution=NeverOverwrite with the
                    ChangeKey: a stale one is ErrorIrresolvableConflict
``delete``          GetItem of the ChangeKey, then DeleteItem (to Deleted
                    Items): EWS's DeleteItem does not compare ChangeKeys
``changes_since``   SyncFolderItems pages from the state held in the token
==================  =======================================================

Exchange keeps only what its item types hold (three e-mail addresses, a
phone per label, no vCard extensions, no per-occurrence attendees...).  So
the vCard or iCalendar text we wrote is kept on the item in an extended
property: when the item's Exchange fields are still what that text maps to,
``get`` answers the text itself, byte for byte; when Outlook changed them,
the text is rebuilt from the Exchange fields on top of the kept copy (its
extra properties survive).  The conversions are in ``contacts.py`` and
``calendar.py``."""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import logging
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

from exchangelib import ExtendedProperty
from exchangelib import errors as ex
from exchangelib.fields import FieldPath
from exchangelib.folders import Folder
from exchangelib.items import ID_ONLY, NEVER_OVERWRITE
from exchangelib.properties import ItemId
from exchangelib.recurrence import Boundary
from exchangelib.services import SyncFolderItems

from mailfiler.errors import MailfilerError, SyncError
from mailfiler.sources.ews.client import EwsClient
from mailfiler.sources.ews.settings import EwsSettings
from mailfiler.sources.target import (
    Changes,
    Fetched,
    SyncItemExists,
    SyncItemNotFound,
    SyncPreconditionFailed,
    SyncTargetUnavailable,
    Target,
)

log = logging.getLogger("mailfiler.sources.ews")


class SourceText(ExtendedProperty):
    """The vCard or iCalendar text mailfiler last wrote to the item."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "mailfiler-sync-source"
    property_type = "String"


class SourceUid(ExtendedProperty):
    """The UID of that text (a contact has no UID of its own in Exchange)."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "mailfiler-sync-uid"
    property_type = "String"


def register(item_cls: Any) -> None:
    """Our two properties on an exchangelib item class (once per process)."""
    for name, prop in (("mf_source", SourceText), ("mf_uid", SourceUid)):
        if not any(f.name == name for f in item_cls.FIELDS):
            item_cls.register(name, prop)


def to_href(item_id: str, extension: str) -> str:
    return item_id.replace("+", "-").replace("/", "_") + extension


def to_id(href: str, extension: str) -> str:
    stem = href[: -len(extension)] if href.endswith(extension) else href
    return stem.replace("-", "+").replace("_", "/")


def plain_utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime (exchangelib's EWSDateTime too, which refuses other tzinfos) in UTC."""
    return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)


def canon(value: Any) -> Any:
    """A comparable, hashable form of an exchangelib field value: instants in UTC,
    elements as their class and fields, empty values as None."""
    if value is None or value is False:
        return None  # not set, false, empty: all "nothing" to Exchange
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = plain_utc(value).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str):
        return str(value).strip() or None
    if isinstance(value, int):
        return value
    if isinstance(value, list | tuple):
        items = [canon(v) for v in value]
        return tuple(sorted((i for i in items if i is not None), key=repr)) or None
    fields = getattr(type(value), "FIELDS", None)
    if fields is not None:
        parts = tuple((f.name, canon(_day(value, f.name))) for f in fields)
        return (type(value).__name__, tuple(p for p in parts if p[1] is not None))
    return value


#: Exchange's answers about one item (client.run maps anything else to the mailbox as a whole)
_ITEM_LEVEL = (
    ex.ErrorItemNotFound,
    ex.ErrorInvalidIdMalformed,
    ex.ErrorIrresolvableConflict,
    ex.ErrorInvalidChangeKey,
    ex.ErrorChangeKeyRequiredForWriteOperations,
    ex.ErrorInvalidSyncStateData,
)


def _day(element: Any, name: str) -> Any:
    """A field of an exchangelib element; a recurrence's start and end dates as dates
    (exchangelib reads them back as midnight datetimes)."""
    value = getattr(element, name, None)
    if isinstance(element, Boundary) and isinstance(value, dt.datetime):
        return value.date()
    return value


#: a ChangeKey Exchange will not write over
_STALE = (ex.ErrorIrresolvableConflict, ex.ErrorInvalidChangeKey, ex.ErrorChangeKeyRequiredForWriteOperations)


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


def _item_call(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except _ITEM_LEVEL as exc:
        return _Failed(exc)


def _crlf(text: str) -> bytes:
    # an XML parser turns CRLF into LF (XML 1.0 2.11); vCard and iCalendar lines end in CRLF
    if "\r\n" not in text and "\n" in text:
        text = text.replace("\n", "\r\n")
    return text.encode("utf-8")


class EwsItemTarget(Target):
    """One Exchange folder of contacts or calendar items (subclassed per kind)."""

    backend = "ews"
    #: the exchangelib item class
    item_cls: Any = None
    #: the exchangelib fields the conversion sets and reads
    fields: tuple[str, ...] = ()
    #: the distinguished folder (``contacts`` / ``calendar``) and its folder class
    distinguished = ""
    folder_class = ""

    def __init__(self, kind: str, settings: EwsSettings, folder: str | None = None) -> None:
        where = f"ews://{settings.mailbox}/{self.distinguished}" + (f"/{folder}" if folder else "")
        super().__init__(kind, where)
        self.settings = settings
        self.client = EwsClient(settings)
        #: a sub-folder of the distinguished folder by name; None: the folder itself
        self.folder_name = folder
        self._folder: Folder | None = None
        self._create = True
        #: uid -> href, for telling an upload of a known UID (filled by ``list``)
        self._uids: dict[str, str] | None = None
        register(self.item_cls)

    # -- conversions (per kind) ----------------------------------------------------------
    @abstractmethod
    def uid_of(self, data: bytes) -> str:
        """The UID of a vCard or iCalendar text (ValueError if it cannot be read)."""

    @abstractmethod
    def to_values(self, data: bytes) -> dict[str, Any]:
        """exchangelib field values for the text (what Exchange can hold of it), and its UID
        (``uid``, a field of calendar items, or ``_uid``)."""

    @abstractmethod
    def render(self, values: dict[str, Any], kept: bytes | None, uid: str, changed: set[str]) -> bytes:
        """The text for an item's Exchange field values: the kept copy with the properties of
        the *changed* fields replaced (a new text when nothing is kept)."""

    def snapshot(self, values: dict[str, Any]) -> dict[str, Any]:
        """Each field's value as compared to tell whether Exchange changed it."""
        return {name: canon(values.get(name)) for name in self.fields}

    def read_values(self, item: Any) -> dict[str, Any]:
        return {name: getattr(item, name, None) for name in self.fields}

    def fields_of_class(self) -> set[str]:
        return {f.name for f in self.item_cls.FIELDS}

    # -- connection ---------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        self._create = create

    async def close(self) -> None:
        self._folder = None

    def _find_folder(self) -> Folder:
        account = self.client.account
        parent = getattr(account, self.distinguished)
        if self.folder_name is None:
            return parent
        for child in parent.children:
            if child.name == self.folder_name:
                return child
        if not self._create:
            raise ex.ErrorFolderNotFound(f"no folder {self.folder_name!r} under {parent.name}")
        new = type(parent)(parent=parent, name=self.folder_name, folder_class=self.folder_class)
        new.save()
        return new

    async def folder(self) -> Folder:
        if self._folder is None:
            try:
                self._folder = await self.client.run(self._find_folder)
            except ex.ErrorFolderNotFound as exc:
                raise SyncTargetUnavailable(f"{self.location}: {exc}", location=self.location) from exc
            except MailfilerError as exc:  # a refused login, an unreachable server: this collection stops
                raise SyncTargetUnavailable(f"{self.location}: {exc}", location=self.location) from exc
        return self._folder

    async def _run(self, fn: Any, *args: Any) -> Any:
        """A call in the pool; what stops the whole collection becomes SyncTargetUnavailable,
        Exchange's answers about one item come back raised as exchangelib gave them."""
        try:
            result = await self.client.run(_item_call, fn, *args)
        except ex.ErrorFolderNotFound as exc:
            self._folder = None
            raise SyncTargetUnavailable(f"{self.location}: the folder is gone", location=self.location) from exc
        except MailfilerError as exc:  # login, throttling past the cap, unreachable: the collection stops
            raise SyncTargetUnavailable(f"{self.location}: {exc}", location=self.location) from exc
        if isinstance(result, _Failed):
            raise result.error
        return result

    def _id(self, href: str) -> str:
        if not href.endswith(self.extension) or "/" in href:
            raise SyncItemNotFound(f"{self.location}: {href!r} is not an item name", href=href)
        return to_id(href, self.extension)

    def _href(self, item_id: str) -> str:
        return to_href(item_id, self.extension)

    # -- listing ------------------------------------------------------------------------
    async def list(self) -> dict[str, str]:
        """A SyncFolderItems walk from no state: every item with its ChangeKey and UID,
        one page (``page_size`` items) per request, each under the client's timeout."""
        folder = await self.folder()
        found: dict[str, tuple[str, str | None]] = {}
        state: str | None = None
        while True:
            changes, state, last = await self._run(self._page, folder, state, True)
            for kind, item_id, key, uid in changes:
                if kind == "delete":
                    found.pop(item_id, None)
                elif key is not None:
                    found[item_id] = (key, uid)
            if last:
                break
        self._uids = {uid: self._href(i) for i, (_, uid) in found.items() if uid}
        return {self._href(i): key for i, (key, _) in found.items()}

    # -- reading ------------------------------------------------------------------------
    def _fetch(self, ids: builtins.list[str]) -> builtins.list[Any]:
        account = self.client.account
        only = [*self.fields, "mf_source", "mf_uid", "last_modified_time"]
        return list(account.fetch([ItemId(i) for i in ids], only_fields=self.extra_only(only)))

    def extra_only(self, only: builtins.list[str]) -> builtins.list[str]:
        return only

    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]:
        ids = []
        for href in hrefs:
            try:
                ids.append(self._id(href))
            except SyncItemNotFound:
                continue
        out: list[Fetched] = []
        batch = self.settings.fetch_batch
        for start in range(0, len(ids), batch):
            items = await self._run(self._fetch, ids[start : start + batch])
            for item in items:
                if isinstance(item, Exception):
                    continue  # ErrorItemNotFound, a malformed id: gone since the listing
                out.append(await self._fetched(item))
        return out

    async def _fetched(self, item: Any) -> Fetched:
        current = self.read_values(item)
        kept = _crlf(item.mf_source) if item.mf_source else None
        now = self.snapshot(current)
        changed = set(now)
        if kept is not None:
            try:
                before = self.snapshot(self.to_values(kept))
                changed = {name for name in now if now[name] != before.get(name)}
            except ValueError:
                kept = None
        if kept is not None and not changed:
            data = kept  # Exchange holds what we wrote: our text, byte for byte
        else:
            uid = item.mf_uid or getattr(item, "uid", None) or self.default_uid(item.id)
            data = self.render(current, kept, uid, changed)
        modified = item.last_modified_time
        if modified is not None:
            modified = plain_utc(modified).replace(tzinfo=None)
        return Fetched(self._href(item.id), item.changekey, data, modified)

    @staticmethod
    def default_uid(item_id: str) -> str:
        """A UID for an item made in Outlook (it stays the same while the item stays put)."""
        return "ews-" + hashlib.sha256(item_id.encode()).hexdigest()[:32]

    # -- writing ------------------------------------------------------------------------
    def _values(self, data: bytes) -> tuple[str, dict[str, Any]]:
        try:
            values = self.to_values(data)  # one parse: the UID comes with the values
            uid = values.pop("_uid", None) or values.get("uid") or ""
            if not uid:
                raise ValueError("the item has no UID")
        except ValueError as exc:
            raise SyncError(f"{self.location}: the item cannot be written to Exchange: {exc}") from exc
        return uid, values

    def split(self, values: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """The item's exchangelib field values, and what is written after the item itself."""
        return values, None

    async def after_write(self, item_id: str, key: str, later: Any) -> str:
        """Write *later* (a series' exceptions), each request its own call; the item's ChangeKey then."""
        return key

    def _create_item(self, folder: Folder, values: dict[str, Any], data: bytes, uid: str) -> tuple[str, str]:
        item = self.item_cls(account=self.client.account, folder=folder, mf_source=data.decode(), mf_uid=uid, **values)
        item.save()
        return item.id, item.changekey

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        folder = await self.folder()
        if self._uids is None:
            await self.list()
        assert self._uids is not None
        if uid in self._uids:
            raise SyncItemExists(f"{self.location}: an item with UID {uid} exists", href=self._uids[uid])
        _, values = self._values(data)
        values, later = self.split(values)
        item_id, key = await self._run(self._create_item, folder, values, data, uid)
        href = self._href(item_id)
        self._uids[uid] = href
        try:
            return href, await self.after_write(item_id, key, later)
        except _ITEM_LEVEL as exc:  # the item went away meanwhile: the next sync sees what is there
            raise SyncPreconditionFailed(f"{self.location}: {href} changed while it was written", href=href) from exc

    def _update_item(self, item_id: str, etag: str, values: dict[str, Any], data: bytes, uid: str) -> str:
        item = self.item_cls(account=self.client.account, id=item_id, changekey=etag, **values)
        item.mf_source, item.mf_uid = data.decode(), uid
        names = [*self.fields, "mf_source", "mf_uid"]
        item.save(update_fields=self.update_fields(item, names), conflict_resolution=NEVER_OVERWRITE)
        return str(item.changekey)

    def update_fields(self, item: Any, names: builtins.list[str]) -> builtins.list[str]:
        return names

    async def update(self, href: str, data: bytes, etag: str) -> str:
        item_id = self._id(href)
        uid, values = self._values(data)
        values, later = self.split(values)
        try:
            key = str(await self._run(self._update_item, item_id, etag, values, data, uid))
            return await self.after_write(item_id, key, later)
        except (ex.ErrorItemNotFound, ex.ErrorInvalidIdMalformed) as exc:
            raise SyncItemNotFound(f"{self.location}: no item {href}", href=href) from exc
        except _STALE as exc:
            raise SyncPreconditionFailed(f"{self.location}: {href} changed in Exchange meanwhile", href=href) from exc

    def _delete_item(self, item_id: str, etag: str) -> None:
        account = self.client.account
        [found] = list(account.fetch([ItemId(item_id)], only_fields=["changekey"]))
        if isinstance(found, Exception):
            raise found
        if found.changekey != etag:
            raise ex.ErrorIrresolvableConflict("the ChangeKey moved")
        found.move_to_trash()

    async def delete(self, href: str, etag: str) -> None:
        item_id = self._id(href)
        try:
            await self._run(self._delete_item, item_id, etag)
        except (ex.ErrorItemNotFound, ex.ErrorInvalidIdMalformed) as exc:
            raise SyncItemNotFound(f"{self.location}: no item {href}", href=href) from exc
        except ex.ErrorIrresolvableConflict as exc:
            raise SyncPreconditionFailed(f"{self.location}: {href} changed in Exchange meanwhile", href=href) from exc
        if self._uids is not None:
            self._uids = {u: h for u, h in self._uids.items() if h != href}

    # -- changes ------------------------------------------------------------------------
    def _page(
        self, folder: Folder, state: str | None, with_uid: bool = False
    ) -> tuple[builtins.list[tuple[str, str, str | None, str | None]], str, bool]:
        """One SyncFolderItems page: (kind, item id, ChangeKey, UID if asked), the new state, the last?"""
        svc = SyncFolderItems(account=self.client.account)
        names = (["mf_uid", "uid"] if "uid" in self.fields_of_class() else ["mf_uid"]) if with_uid else []
        extra = {FieldPath(field=self.item_cls.get_field_by_fieldname(n)) for n in names}
        changes = []
        for kind, item in svc.call(
            folder=folder,
            shape=ID_ONLY,
            additional_fields=extra,
            sync_state=state,
            ignore=None,
            max_changes_returned=self.settings.page_size,
            sync_scope=None,
        ):
            uid = (getattr(item, "mf_uid", None) or getattr(item, "uid", None)) if with_uid else None
            changes.append((kind, item.id, getattr(item, "changekey", None), uid))
        return changes, svc.sync_state, bool(svc.includes_last_item_in_range) or svc.sync_state == state

    async def changes_since(self, token: str | None) -> Changes | None:
        folder = await self.folder()
        state = token
        out = Changes(token="")
        while True:
            try:
                changes, state, last = await self._run(self._page, folder, state)
            except ex.ErrorInvalidSyncStateData:
                return None
            for kind, item_id, key, _ in changes:
                href = self._href(item_id)
                if kind == "delete":
                    out.changed.pop(href, None)
                    out.deleted.add(href)
                elif key is not None:
                    out.deleted.discard(href)
                    out.changed[href] = key
            if last:
                break
        if token is None:  # the current state only: no changes
            out.changed.clear()
            out.deleted.clear()
        out.token = state or ""
        return out
