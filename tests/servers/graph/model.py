"""The fake tenant's data: users' mailboxes (folders, messages, contacts) and the
change log that delta queries and change notifications are computed from.

Everything here is guarded by one lock (``Tenant.lock``): the HTTP handler
threads and the test-facing API (acting as Outlook or the user) both mutate it.

Ids follow what Graph documents about Outlook item ids: the default id of a
message changes when it moves to another folder (the old id is then unknown),
while the immutable id (``Prefer: IdType="ImmutableId"``) stays for the item's
life inside the mailbox.  Both are opaque url-safe strings, as real ids are.
"""

from __future__ import annotations

import bisect
import email
import email.errors
import email.header
import email.policy
import email.utils
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

#: well-known folder names Graph accepts in place of an id (lower-case) and their display names
WELL_KNOWN = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "drafts": "Drafts",
    "junkemail": "Junk Email",
    "archive": "Archive",
}


def now_iso(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_id(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(33)


def new_change_key() -> str:
    return "CQAAABYAAA" + secrets.token_urlsafe(12)


class GraphError(Exception):
    """An error answered in Graph's shape: ``{"error": {"code", "message", "innerError"}}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(what: str = "item") -> GraphError:
    return GraphError(404, "ErrorItemNotFound", f"The specified object was not found in the store. ({what})")


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str
    well_known: str | None = None

    def path_name(self) -> str:
        return self.display_name


@dataclass
class Message:
    key: int  # internal, never shown
    immutable_id: str
    id: str  # the default id, new on every move
    folder_id: str
    mime: bytes
    change_key: str
    created: str
    modified: str
    received: str
    sent: str
    subject: str
    internet_message_id: str
    sender: dict[str, Any] | None
    to: list[dict[str, Any]]
    cc: list[dict[str, Any]]
    preview: str
    has_attachments: bool
    categories: list[str] = field(default_factory=list)
    is_read: bool = False
    conversation_id: str = ""

    @property
    def etag(self) -> str:
        return f'W/"{self.change_key}"'


@dataclass
class Contact:
    key: int
    immutable_id: str
    id: str
    change_key: str
    created: str
    modified: str
    fields: dict[str, Any]

    @property
    def etag(self) -> str:
        return f'W/"{self.change_key}"'


@dataclass
class LogEntry:
    seq: int
    key: int
    #: the default id the item had in this collection when it left it (a move or a delete), else None
    removed_id: str | None


def _address(name: str, addr: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name or addr, "address": addr}}


def parse_mime(raw: bytes) -> dict[str, Any]:
    """The message properties Graph derives from the MIME content (best effort, never raises:
    Exchange accepts any bytes as a message)."""
    try:
        return _parse_mime(raw)
    except Exception:  # noqa: BLE001 - malformed mail must still be delivered; its properties stay empty
        return {"subject": "", "internet_message_id": "", "sent": None, "sender": None, "to": [], "cc": [],
                "preview": "", "has_attachments": False}  # fmt: skip


def _parse_mime(raw: bytes) -> dict[str, Any]:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    date = msg.get("Date")
    try:
        sent = parsedate_to_datetime(str(date)).astimezone(UTC) if date else None
    except (TypeError, ValueError):
        sent = None
    frm = getaddresses([str(msg.get("From", ""))])
    text = ""
    has_attachments = False
    for part in msg.walk():
        disposition = str(part.get("Content-Disposition", "")).lower()
        if disposition.startswith("attachment"):
            has_attachments = True
        elif not text and part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                try:
                    text = payload.decode(part.get_content_charset() or "utf-8", "replace")
                except LookupError:  # an unknown charset: Exchange shows the bytes anyway
                    text = payload.decode("utf-8", "replace")
    subject = msg.get("Subject", "")
    try:
        subject = str(email.header.make_header(email.header.decode_header(str(subject))))
    except (LookupError, ValueError, email.errors.HeaderParseError):
        subject = str(subject)
    return {
        "subject": subject,
        "internet_message_id": str(msg.get("Message-ID", "")).strip(),
        "sent": now_iso(sent) if sent else None,
        "sender": _address(*frm[0]) if frm and frm[0][1] else None,
        "to": [_address(n, a) for n, a in getaddresses([str(v) for v in msg.get_all("To", [])]) if a],
        "cc": [_address(n, a) for n, a in getaddresses([str(v) for v in msg.get_all("Cc", [])]) if a],
        "preview": " ".join(text.split())[:255],
        "has_attachments": has_attachments,
    }


class Mailbox:
    """One user's mailbox: folder tree, messages, contacts and their change logs."""

    def __init__(self, tenant: Tenant, upn: str, display_name: str = "", user_id: str | None = None):
        self.tenant = tenant
        self.upn = upn
        self.display_name = display_name or upn.split("@")[0]
        self.id = user_id or str(uuid.uuid4())
        #: False: a user without an Exchange Online mailbox (unlicensed, on-premises, soft-deleted)
        self.mailbox_enabled = True
        self.folders: dict[str, Folder] = {}
        self.messages: dict[int, Message] = {}
        self.by_id: dict[str, int] = {}  # default and immutable message ids -> key
        self.contacts: dict[int, Contact] = {}
        self.contacts_by_id: dict[str, int] = {}
        #: per collection (a folder id, "contacts"): the change log, ordered by seq
        self.logs: dict[str, list[LogEntry]] = {}
        self.created_seq: dict[int, int] = {}
        self.gone: dict[int, str] = {}  # immutable ids of deleted items (for their @removed entries)
        self.contacts_folder_id = new_id("AAMkAC")
        root = Folder(new_id("AAMkAF"), "Top of Information Store", "", "msgfolderroot")
        self.root_id = root.id
        self.folders[root.id] = root
        for wk, name in WELL_KNOWN.items():
            folder = Folder(new_id("AAMkAF"), name, root.id, wk)
            self.folders[folder.id] = folder
        self.events = None  # set by calendar.Calendar (kept apart: it has its own module)

    # -- folders --------------------------------------------------------------
    def folder(self, ref: str) -> Folder:
        """A folder by id or well-known name (Graph accepts both)."""
        if ref in self.folders:
            return self.folders[ref]
        low = ref.lower()
        for folder in self.folders.values():
            if folder.well_known == low:
                return folder
        raise not_found("folder")

    def children(self, folder_id: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def find_path(self, path: str) -> Folder:
        """``Inbox/Clients/Acme`` -> the folder (test-facing: names, not ids)."""
        parts = [p for p in path.split("/") if p]
        folder = self.folder("inbox") if parts and parts[0].lower() == "inbox" else None
        if folder is None:
            folder = self._child_named(self.root_id, parts[0])
        for name in parts[1:]:
            folder = self._child_named(folder.id, name)
        return folder

    def _child_named(self, parent_id: str, name: str) -> Folder:
        for f in self.children(parent_id):
            if f.display_name.lower() == name.lower():
                return f
        raise not_found(f"folder {name!r}")

    def create_folder(self, parent_id: str, name: str) -> Folder:
        if any(f.display_name.lower() == name.lower() for f in self.children(parent_id)):
            raise GraphError(409, "ErrorFolderExists", "A folder with the specified name already exists.")
        folder = Folder(new_id("AAMkAF"), name, parent_id)
        self.folders[folder.id] = folder
        return folder

    def make_path(self, path: str) -> Folder:
        """Create the missing folders of ``Inbox/A/B`` (test-facing)."""
        parts = [p for p in path.split("/") if p]
        folder = self.folder("inbox") if parts[0].lower() == "inbox" else None
        if folder is None:
            try:
                folder = self._child_named(self.root_id, parts[0])
            except GraphError:
                folder = self.create_folder(self.root_id, parts[0])
        for name in parts[1:]:
            try:
                folder = self._child_named(folder.id, name)
            except GraphError:
                folder = self.create_folder(folder.id, name)
        return folder

    def subtree(self, folder_id: str) -> list[str]:
        out = [folder_id]
        for child in self.children(folder_id):
            out.extend(self.subtree(child.id))
        return out

    # -- messages ---------------------------------------------------------------
    def message(self, ref: str) -> Message:
        key = self.by_id.get(ref)
        if key is None or key not in self.messages:
            raise not_found("message")
        return self.messages[key]

    def in_folder(self, folder_id: str) -> list[Message]:
        return sorted((m for m in self.messages.values() if m.folder_id == folder_id), key=lambda m: m.key)

    def log(self, collection: str, key: int, removed_id: str | None = None) -> int:
        seq = self.tenant.next_seq()
        self.logs.setdefault(collection, []).append(LogEntry(seq, key, removed_id))
        return seq

    def changes_since(self, collection: str, seq: int) -> dict[int, str | None]:
        """Keys changed in a collection after ``seq`` -> the id they had when they left it (None: still there)."""
        entries = self.logs.get(collection, [])
        start = bisect.bisect_right([e.seq for e in entries], seq)
        out: dict[int, str | None] = {}
        for entry in entries[start:]:
            out[entry.key] = entry.removed_id
        return out

    def deliver(self, folder_id: str, mime: bytes, *, received: datetime | None = None) -> Message:
        info = parse_mime(mime)
        key = self.tenant.next_key()
        stamp = now_iso(received)
        msg = Message(
            key=key, immutable_id=new_id("AAkALg"), id=new_id("AAMkAG"), folder_id=folder_id, mime=mime,
            change_key=new_change_key(), created=stamp, modified=stamp, received=stamp,
            sent=info["sent"] or stamp, subject=info["subject"], internet_message_id=info["internet_message_id"],
            sender=info["sender"], to=info["to"], cc=info["cc"], preview=info["preview"],
            has_attachments=info["has_attachments"], conversation_id=new_id("AAQkAG"),
        )  # fmt: skip
        self.messages[key] = msg
        self.by_id[msg.id] = key
        self.by_id[msg.immutable_id] = key
        self.created_seq[key] = self.log(folder_id, key)
        self.tenant.notify(self, "message", "created", msg)
        return msg

    def move(self, msg: Message, folder_id: str) -> Message:
        if folder_id == msg.folder_id:
            return msg
        old_folder, old_id = msg.folder_id, msg.id
        del self.by_id[old_id]
        msg.id = new_id("AAMkAG")  # a new default id in the new folder; the immutable id stays
        self.by_id[msg.id] = msg.key
        msg.folder_id = folder_id
        msg.change_key = new_change_key()
        msg.modified = now_iso()
        self.log(old_folder, msg.key, old_id)
        self.created_seq[msg.key] = self.log(folder_id, msg.key)
        self.tenant.notify(self, "message", "deleted", msg, old_id=old_id, old_folder=old_folder)
        self.tenant.notify(self, "message", "created", msg)
        return msg

    def delete(self, msg: Message) -> None:
        del self.messages[msg.key]
        self.gone[msg.key] = msg.immutable_id
        self.by_id.pop(msg.id, None)
        self.by_id.pop(msg.immutable_id, None)
        self.log(msg.folder_id, msg.key, msg.id)
        self.tenant.notify(self, "message", "deleted", msg)

    def update(self, msg: Message, *, categories: list[str] | None = None, is_read: bool | None = None) -> Message:
        if categories is not None:
            msg.categories = list(categories)
        if is_read is not None:
            msg.is_read = is_read
        msg.change_key = new_change_key()
        msg.modified = now_iso()
        self.log(msg.folder_id, msg.key)
        self.tenant.notify(self, "message", "updated", msg)
        return msg

    def delete_folder(self, folder: Folder) -> None:
        """Delete a folder with its subfolders and messages (as Outlook's hard delete)."""
        for fid in self.subtree(folder.id):
            for msg in self.in_folder(fid):
                self.delete(msg)
            del self.folders[fid]

    # -- contacts ---------------------------------------------------------------
    def contact(self, ref: str) -> Contact:
        key = self.contacts_by_id.get(ref)
        if key is None or key not in self.contacts:
            raise not_found("contact")
        return self.contacts[key]

    def add_contact(self, fields: dict[str, Any]) -> Contact:
        key = self.tenant.next_key()
        stamp = now_iso()
        contact = Contact(key, new_id("AAkALg"), new_id("AAMkAD"), new_change_key(), stamp, stamp, dict(fields))
        self.contacts[key] = contact
        self.contacts_by_id[contact.id] = key
        self.contacts_by_id[contact.immutable_id] = key
        self.created_seq[key] = self.log("contacts", key)
        self.tenant.notify(self, "contact", "created", contact)
        return contact

    def edit_contact(self, contact: Contact, fields: dict[str, Any]) -> Contact:
        contact.fields.update(fields)
        contact.change_key = new_change_key()
        contact.modified = now_iso()
        self.log("contacts", contact.key)
        self.tenant.notify(self, "contact", "updated", contact)
        return contact

    def delete_contact(self, contact: Contact) -> None:
        del self.contacts[contact.key]
        self.gone[contact.key] = contact.immutable_id
        self.contacts_by_id.pop(contact.id, None)
        self.contacts_by_id.pop(contact.immutable_id, None)
        self.log("contacts", contact.key, contact.id)
        self.tenant.notify(self, "contact", "deleted", contact)


class Tenant:
    """The fake directory: one tenant, its users' mailboxes, a global change sequence."""

    def __init__(self, tenant_id: str | None = None, domain: str = "contoso.onmicrosoft.com"):
        self.id = tenant_id or str(uuid.uuid4())
        self.domain = domain
        self.lock = threading.RLock()
        self.mailboxes: dict[str, Mailbox] = {}  # by user id
        self._seq = 0
        self._key = 0
        #: called (under the lock) on every change: (mailbox, kind, change_type, item, extra) -> None
        self.listeners: list[Callable[..., None]] = []

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def seq(self) -> int:
        return self._seq

    def next_key(self) -> int:
        self._key += 1
        return self._key

    def add_user(self, upn: str, display_name: str = "", user_id: str | None = None) -> Mailbox:
        with self.lock:
            mailbox = Mailbox(self, upn, display_name, user_id)
            self.mailboxes[mailbox.id] = mailbox
            return mailbox

    def user(self, ref: str) -> Mailbox:
        """By object id or user principal name (case-insensitive), as /users/{id | userPrincipalName}."""
        if ref in self.mailboxes:
            return self.mailboxes[ref]
        for mailbox in self.mailboxes.values():
            if mailbox.upn.lower() == ref.lower():
                return mailbox
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{ref}' is invalid.")

    def notify(self, mailbox: Mailbox, kind: str, change: str, item: Any, **extra: Any) -> None:
        for listener in self.listeners:
            listener(mailbox, kind, change, item, extra)


def mime_message(subject: str, *, sender: str = "alice@example.com", to: str = "bob@contoso.com",
                 body: str = "Hello.\n", message_id: str | None = None) -> bytes:  # fmt: skip
    """A small RFC 5322 message for tests and the standalone runner."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = message_id or email.utils.make_msgid(domain="example.com")
    msg.set_content(body)
    return msg.as_bytes()
