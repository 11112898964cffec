"""The mailbox model of the fake Exchange: users, folders, items, change logs, sync states.

Item ids change when an item moves to another folder (as in Exchange); folder ids
survive renames and moves; every change bumps a ChangeKey.  Each folder keeps a
log of (sequence, item, kind) so that SyncFolderItems can answer the net changes
since any sync state it handed out; each mailbox keeps the same for its folders
(SyncFolderHierarchy).  Every mutation also publishes a notification event to
the subscriptions (streaming.py).  One lock guards the whole store.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import email.parser
import email.policy
import email.utils
import itertools
import json
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.servers.ews.soap import EwsError

# distinguished id -> (display name, folder class, parent distinguished id)
WELL_KNOWN: dict[str, tuple[str, str | None, str | None]] = {
    "root": ("", None, None),
    "msgfolderroot": ("Top of Information Store", None, "root"),
    "inbox": ("Inbox", "IPF.Note", "msgfolderroot"),
    "drafts": ("Drafts", "IPF.Note", "msgfolderroot"),
    "sentitems": ("Sent Items", "IPF.Note", "msgfolderroot"),
    "deleteditems": ("Deleted Items", "IPF.Note", "msgfolderroot"),
    "junkemail": ("Junk Email", "IPF.Note", "msgfolderroot"),
    "outbox": ("Outbox", "IPF.Note", "msgfolderroot"),
    "calendar": ("Calendar", "IPF.Appointment", "msgfolderroot"),
    "contacts": ("Contacts", "IPF.Contact", "msgfolderroot"),
    "tasks": ("Tasks", "IPF.Task", "msgfolderroot"),
    "notes": ("Notes", "IPF.StickyNote", "msgfolderroot"),
}
# the element an item is answered as, by the class of the folder it is created in
ITEM_CLASS_BY_TAG = {
    "Message": "IPM.Note",
    "Contact": "IPM.Contact",
    "CalendarItem": "IPM.Appointment",
    "Task": "IPM.Task",
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _opaque(kind: str, smtp: str, n: int) -> str:
    # Exchange ids are opaque base64; ours carry the mailbox so that any request can resolve them
    return base64.b64encode(f"{kind}|{smtp}|{n}".encode()).decode()


def decode_id(value: str) -> tuple[str, str]:
    """(kind, mailbox smtp) of an id this fake made; ErrorInvalidIdMalformed otherwise."""
    try:
        kind, smtp, _ = base64.b64decode(value.encode(), validate=True).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.") from None
    return kind, smtp


@dataclass
class User:
    smtp: str
    username: str
    password: str
    display_name: str = ""
    impersonate: set[str] = field(default_factory=set)  # smtp addresses, or {"*"}
    delegates: set[str] = field(default_factory=set)  # principals who may open this mailbox (delegate access)

    def logins(self, domain: str) -> set[str]:
        return {self.username.lower(), f"{domain}\\{self.username}".lower(), self.smtp.lower()}

    def may_impersonate(self, smtp: str) -> bool:
        return "*" in self.impersonate or smtp.lower() in self.impersonate


@dataclass
class Folder:
    id: str
    name: str
    folder_class: str | None
    parent: Folder | None
    distinguished: str | None = None
    version: int = 0
    items: dict[int, Item] = field(default_factory=dict)  # by item key, in arrival order
    # (seq, item key, kind, item id at that time); kind: add, remove, update, read
    log: list[tuple[int, int, str, str]] = field(default_factory=list)
    log_seqs: list[int] = field(default_factory=list)

    @property
    def change_key(self) -> str:
        return base64.b64encode(f"AQ|{self.id[:6]}|{self.version}".encode()).decode()

    def children(self, mailbox: Mailbox) -> list[Folder]:
        return [f for f in mailbox.folders.values() if f.parent is self]

    def path(self) -> str:
        parts: list[str] = []
        folder: Folder | None = self
        while folder is not None and folder.distinguished not in ("msgfolderroot", "root"):
            parts.append(folder.name)
            folder = folder.parent
        return "/".join(reversed(parts))

    def record(self, seq: int, item: Item, kind: str) -> None:
        self.log.append((seq, item.key, kind, item.id))
        self.log_seqs.append(seq)


@dataclass
class Item:
    key: int  # stable across moves (the model's own identity; EWS ids are not)
    id: str
    tag: str  # Message, Contact, CalendarItem, Task
    folder: Folder
    mime: bytes | None = None
    is_read: bool = False
    categories: list[str] = field(default_factory=list)
    fields: dict[str, ET.Element] = field(default_factory=dict)  # client-set properties by element name
    version: int = 0
    received: dt.datetime = field(default_factory=_now)
    created: dt.datetime = field(default_factory=_now)
    modified: dt.datetime = field(default_factory=_now)
    headers: dict[str, str] = field(default_factory=dict)  # parsed from the MIME, by lower-case name
    header_list: list[tuple[str, str]] = field(default_factory=list)  # all of them, in order
    # a series (occurrences.py): a master's changed/deleted occurrences by index; an occurrence's master
    exceptions: dict[int, Item] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    master: Item | None = None
    index: int = 0

    @property
    def change_key(self) -> str:
        return base64.b64encode(f"CQ|{self.key}|{self.version}".encode()).decode()

    @property
    def item_class(self) -> str:
        return ITEM_CLASS_BY_TAG.get(self.tag, "IPM.Note")

    def subject(self) -> str | None:
        field_ = self.fields.get("Subject")
        if field_ is not None:
            return field_.text or ""
        return self.headers.get("subject")


@dataclass
class Mailbox:
    user: User
    folders: dict[str, Folder] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)  # by current item id
    seq: int = 0
    generation: int = 0  # bumped to invalidate every sync state handed out so far
    folder_log: list[tuple[int, str, str]] = field(default_factory=list)  # (seq, folder id, add/update/remove)

    def distinguished(self, name: str) -> Folder:
        for folder in self.folders.values():
            if folder.distinguished == name:
                return folder
        raise EwsError("ErrorFolderNotFound", "The specified folder could not be found in the store.")


Publish = Callable[[str, dict[str, Any]], None]


class Store:
    """All mailboxes of the fake, behind one lock.  ``publish(smtp, event)`` receives every event."""

    def __init__(self, domain: str = "EXAMPLE"):
        self.domain = domain
        self.lock = threading.RLock()
        self.users: dict[str, User] = {}
        self.mailboxes: dict[str, Mailbox] = {}
        self._numbers = itertools.count(1)
        self.publish: Publish = lambda smtp, event: None

    # -- users and logins ---------------------------------------------------
    def add_user(self, user: User, folders: list[str] = ()) -> Mailbox:  # type: ignore[assignment]
        with self.lock:
            smtp = user.smtp.lower()
            self.users[smtp] = user
            mailbox = Mailbox(user)
            self.mailboxes[smtp] = mailbox
            for name, (display, folder_class, parent) in WELL_KNOWN.items():
                parent_folder = mailbox.distinguished(parent) if parent else None
                self._new_folder(mailbox, display, folder_class, parent_folder, distinguished=name)
            for path in folders:
                self.ensure_path(smtp, path)
            return mailbox

    def user_by_login(self, login: str) -> User | None:
        login = login.lower()
        for user in self.users.values():
            if login in user.logins(self.domain):
                return user
        return None

    def mailbox(self, smtp: str) -> Mailbox:
        try:
            return self.mailboxes[smtp.lower()]
        except KeyError:
            raise EwsError("ErrorNonExistentMailbox", f"No mailbox with such guid or SMTP address: {smtp}") from None

    # -- ids ------------------------------------------------------------------
    def folder(self, folder_id: str) -> tuple[Mailbox, Folder]:
        kind, smtp = decode_id(folder_id)
        mailbox = self.mailboxes.get(smtp)
        folder = mailbox.folders.get(folder_id) if mailbox and kind == "F" else None
        if mailbox is None or folder is None:
            raise EwsError("ErrorFolderNotFound", "The specified folder could not be found in the store.")
        return mailbox, folder

    def item(self, item_id: str) -> tuple[Mailbox, Item]:
        kind, smtp = decode_id(item_id)
        mailbox = self.mailboxes.get(smtp)
        item = mailbox.items.get(item_id) if mailbox and kind == "I" else None
        if mailbox is None or item is None:
            raise EwsError("ErrorItemNotFound", "The specified object was not found in the store.")
        return mailbox, item

    def folder_by_path(self, smtp: str, path: str) -> Folder:
        """A folder by display-name path below the top of the store ("Inbox/Clients/Contoso")."""
        mailbox = self.mailbox(smtp)
        folder = mailbox.distinguished("msgfolderroot")
        for part in [p for p in path.split("/") if p]:
            matches = [f for f in folder.children(mailbox) if f.name == part]
            if not matches:
                raise EwsError("ErrorFolderNotFound", f"No folder {path!r}")
            folder = matches[0]
        return folder

    # -- folders ----------------------------------------------------------------
    def _next(self, mailbox: Mailbox) -> int:
        mailbox.seq += 1
        return mailbox.seq

    def _new_folder(
        self,
        mailbox: Mailbox,
        name: str,
        folder_class: str | None,
        parent: Folder | None,
        distinguished: str | None = None,
    ) -> Folder:
        folder_id = _opaque("F", mailbox.user.smtp.lower(), next(self._numbers))
        folder = Folder(folder_id, name, folder_class, parent, distinguished)
        mailbox.folders[folder_id] = folder
        mailbox.folder_log.append((self._next(mailbox), folder_id, "add"))
        return folder

    def create_folder(self, smtp: str, parent: Folder, name: str, folder_class: str | None = "IPF.Note") -> Folder:
        with self.lock:
            mailbox = self.mailbox(smtp)
            if any(f.name.lower() == name.lower() for f in parent.children(mailbox)):
                raise EwsError("ErrorFolderExists", "A folder with the specified name already exists.")
            folder = self._new_folder(mailbox, name, folder_class, parent)
            self._folder_event(mailbox, "CreatedEvent", folder)
            return folder

    def ensure_path(self, smtp: str, path: str) -> Folder:
        with self.lock:
            mailbox = self.mailbox(smtp)
            folder = mailbox.distinguished("msgfolderroot")
            for part in [p for p in path.split("/") if p]:
                matches = [f for f in folder.children(mailbox) if f.name == part]
                folder = (
                    matches[0] if matches else self.create_folder(smtp, folder, part, folder.folder_class or "IPF.Note")
                )
            return folder

    def rename_folder(self, smtp: str, folder: Folder, name: str) -> None:
        with self.lock:
            mailbox = self.mailbox(smtp)
            folder.name = name
            folder.version += 1
            mailbox.folder_log.append((self._next(mailbox), folder.id, "update"))
            self._folder_event(mailbox, "ModifiedEvent", folder)

    def move_folder(self, smtp: str, folder: Folder, new_parent: Folder) -> None:
        with self.lock:
            mailbox = self.mailbox(smtp)
            old_parent = folder.parent
            folder.parent = new_parent
            folder.version += 1
            mailbox.folder_log.append((self._next(mailbox), folder.id, "update"))
            self._folder_event(mailbox, "MovedEvent", folder, old_parent=old_parent)

    def delete_folder(self, smtp: str, folder: Folder) -> None:
        """Hard delete of a folder and everything below it."""
        with self.lock:
            mailbox = self.mailbox(smtp)
            for child in folder.children(mailbox):
                self.delete_folder(smtp, child)
            for item in list(folder.items.values()):
                self.remove_item(smtp, item)
            del mailbox.folders[folder.id]
            mailbox.folder_log.append((self._next(mailbox), folder.id, "remove"))
            self._folder_event(mailbox, "DeletedEvent", folder)

    def _folder_event(self, mailbox: Mailbox, kind: str, folder: Folder, old_parent: Folder | None = None) -> None:
        event: dict[str, Any] = {"type": kind, "folder_id": (folder.id, folder.change_key)}
        if folder.parent is not None:
            event["parent_folder_id"] = (folder.parent.id, folder.parent.change_key)
        if old_parent is not None:
            event["old_folder_id"] = (folder.id, folder.change_key)
            event["old_parent_folder_id"] = (old_parent.id, old_parent.change_key)
        self.publish(mailbox.user.smtp.lower(), event)

    # -- items --------------------------------------------------------------------
    def add_item(
        self,
        smtp: str,
        folder: Folder,
        tag: str = "Message",
        mime: bytes | None = None,
        fields: dict[str, ET.Element] | None = None,
        is_read: bool = False,
        new_mail: bool = False,
    ) -> Item:
        with self.lock:
            mailbox = self.mailbox(smtp)
            key = next(self._numbers)
            item = Item(
                key, _opaque("I", smtp.lower(), key), tag, folder, mime=mime, is_read=is_read, fields=fields or {}
            )
            if mime is not None:
                head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(mime)
                item.header_list = [(xml_safe(k), xml_safe(str(v))) for k, v in head.items()]
                item.headers = {k.lower(): v for k, v in reversed(item.header_list)}  # the first of repeated ones
            mailbox.items[item.id] = item
            folder.items[key] = item
            folder.record(self._next(mailbox), item, "add")
            self._item_event(mailbox, "CreatedEvent", item)
            if new_mail:
                self._item_event(mailbox, "NewMailEvent", item)
                # the folder's unread count changed too (Exchange sends this with new mail)
                unread = sum(1 for i in folder.items.values() if not i.is_read)
                event: dict[str, Any] = {
                    "type": "ModifiedEvent",
                    "folder_id": (folder.id, folder.change_key),
                    "unread_count": unread,
                }
                if folder.parent is not None:
                    event["parent_folder_id"] = (folder.parent.id, folder.parent.change_key)
                self.publish(mailbox.user.smtp.lower(), event)
            return item

    def update_item(self, smtp: str, item: Item, *, read_only: bool = False) -> None:
        """Record a change made to ``item`` (by the caller, under the lock): a new ChangeKey."""
        with self.lock:
            mailbox = self.mailbox(smtp)
            item.version += 1
            item.modified = _now()
            item.folder.record(self._next(mailbox), item, "read" if read_only else "update")
            self._item_event(mailbox, "ModifiedEvent", item)

    def move_item(self, smtp: str, item: Item, target: Folder) -> Item:
        """Move: the item gets a new id in the target folder (Exchange's behaviour)."""
        with self.lock:
            mailbox = self.mailbox(smtp)
            source = item.folder
            old_id = item.id
            source.record(self._next(mailbox), item, "remove")
            del source.items[item.key]
            del mailbox.items[old_id]
            item.id = _opaque("I", smtp.lower(), next(self._numbers))
            item.folder = target
            item.version += 1
            mailbox.items[item.id] = item
            target.items[item.key] = item
            target.record(self._next(mailbox), item, "add")
            event = self._event("MovedEvent", item)
            event["old_item_id"] = (old_id, item.change_key)
            event["old_parent_folder_id"] = (source.id, source.change_key)
            self.publish(smtp.lower(), event)
            return item

    def remove_item(self, smtp: str, item: Item) -> None:
        with self.lock:
            mailbox = self.mailbox(smtp)
            item.folder.record(self._next(mailbox), item, "remove")
            del item.folder.items[item.key]
            del mailbox.items[item.id]
            self._item_event(mailbox, "DeletedEvent", item)

    def _event(self, kind: str, item: Item) -> dict[str, Any]:
        return {
            "type": kind,
            "item_id": (item.id, item.change_key),
            "parent_folder_id": (item.folder.id, item.folder.change_key),
        }

    def _item_event(self, mailbox: Mailbox, kind: str, item: Item) -> None:
        self.publish(mailbox.user.smtp.lower(), self._event(kind, item))

    # -- sync states --------------------------------------------------------------
    def sync_state(self, mailbox: Mailbox, scope: str, seq: int) -> str:
        raw = json.dumps({"m": mailbox.user.smtp.lower(), "f": scope, "s": seq, "g": mailbox.generation})
        return base64.b64encode(raw.encode()).decode()

    def read_sync_state(self, mailbox: Mailbox, scope: str, state: str | None) -> int:
        """The sequence a sync state stands for; ErrorInvalidSyncStateData when it is not one of ours for
        this folder, or was invalidated (``invalidate_sync_states``)."""
        if not state:
            return 0
        try:
            data = json.loads(base64.b64decode(state.encode(), validate=True))
            valid = data["m"] == mailbox.user.smtp.lower() and data["f"] == scope and data["g"] == mailbox.generation
            seq = int(data["s"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            valid, seq = False, 0
        if not valid or seq > mailbox.seq:
            raise EwsError("ErrorInvalidSyncStateData", "Synchronization state data is corrupt or otherwise invalid.")
        return seq

    def item_changes(self, folder: Folder, since: int) -> list[tuple[int, str, Item | str]]:
        """Net changes to ``folder`` after sequence ``since``: (first seq, kind, item or deleted id),
        kind Create/Update/Delete/ReadFlagChange, oldest first change first."""
        start = bisect.bisect_right(folder.log_seqs, since)
        first: dict[int, tuple[int, int, str, str]] = {}
        last: dict[int, tuple[int, int, str, str]] = {}
        only_read: dict[int, bool] = {}
        for entry in folder.log[start:]:
            key = entry[1]
            first.setdefault(key, entry)
            last[key] = entry
            only_read[key] = only_read.get(key, True) and entry[2] == "read"
        # ordered by each item's first change since ``since`` (and a page's state is the first
        # change of its last item): an item created before a page boundary and changed after it
        # is still a Create for the client paging through, as with Exchange's per-client state;
        # ordering by the last change made such items Updates the client was never told of
        changes: list[tuple[int, str, Item | str]] = []
        for key, last_entry in last.items():
            existed = first[key][2] != "add"
            seq = first[key][0]
            item = folder.items.get(key)
            if item is not None and not existed:
                changes.append((seq, "Create", item))
            elif item is None and existed:
                changes.append((seq, "Delete", last_entry[3]))
            elif item is not None:
                changes.append((seq, "ReadFlagChange" if only_read[key] else "Update", item))
        changes.sort(key=lambda change: change[0])
        return changes

    def folder_changes(self, mailbox: Mailbox, top: Folder, since: int) -> list[tuple[int, str, Folder | str]]:
        """Net folder changes below ``top`` after ``since`` (SyncFolderHierarchy)."""
        first: dict[str, str] = {}
        last: dict[str, int] = {}
        for seq, folder_id, kind in mailbox.folder_log:
            if seq <= since:
                continue
            first.setdefault(folder_id, kind)
            last[folder_id] = seq
        changes: list[tuple[int, str, Folder | str]] = []
        for folder_id, seq in last.items():
            folder = mailbox.folders.get(folder_id)
            if folder is not None and not _below(folder, top):
                folder = None
            existed = first[folder_id] != "add"
            if folder is not None and not existed:
                changes.append((seq, "Create", folder))
            elif folder is None and existed:
                changes.append((seq, "Delete", folder_id))
            elif folder is not None:
                changes.append((seq, "Update", folder))
        changes.sort(key=lambda change: change[0])
        return changes

    def invalidate_sync_states(self, smtp: str) -> None:
        with self.lock:
            self.mailbox(smtp).generation += 1


def _below(folder: Folder, top: Folder) -> bool:
    parent = folder.parent
    while parent is not None:
        if parent is top:
            return True
        parent = parent.parent
    return False


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """What Exchange would answer for a header with raw 8-bit bytes or control characters: text
    that XML 1.0 can carry (undecodable bytes become U+FFFD, control characters are dropped)."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _NOT_XML.sub("", text)


def new_uid() -> str:
    return uuid.uuid4().hex.upper()


def format_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def mime_date(item: Item) -> str | None:
    raw = item.headers.get("date")
    if not raw:
        return None
    try:
        return format_time(email.utils.parsedate_to_datetime(raw))
    except (TypeError, ValueError):
        return None
