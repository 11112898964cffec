"""Folder operations: GetFolder, FindFolder, SyncFolderHierarchy, CreateFolder, UpdateFolder (rename),
MoveFolder, DeleteFolder."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.servers.ews.context import Context
from tests.servers.ews.model import Folder, Mailbox
from tests.servers.ews.properties import Shape, folder_element
from tests.servers.ews.soap import EwsError, error, q, response, sub, success


def get_folder(ctx: Context, request: ET.Element) -> ET.Element:
    shape = Shape.parse(request.find(q("m:FolderShape")))
    messages = []
    for ref in ctx.folders(request.find(q("m:FolderIds"))):
        try:
            with ctx.store.lock:
                mailbox, folder = ctx.folder(ref)
                elem = folder_element(mailbox, folder, shape)
        except EwsError as e:
            message = error("GetFolder", e.code, e.text)
            sub(message, "m:Folders")
        else:
            message = success("GetFolder")
            sub(message, "m:Folders").append(elem)
        messages.append(message)
    return response("GetFolder", messages)


def _descendants(mailbox: Mailbox, folder: Folder, deep: bool) -> list[Folder]:
    found: list[Folder] = []
    for child in sorted(folder.children(mailbox), key=lambda f: f.name.lower()):
        found.append(child)
        if deep:
            found.extend(_descendants(mailbox, child, deep))
    return found


def find_folder(ctx: Context, request: ET.Element) -> ET.Element:
    shape = Shape.parse(request.find(q("m:FolderShape")))
    deep = request.get("Traversal", "Shallow") == "Deep"
    view = request.find(q("m:IndexedPageFolderView"))
    offset = int(view.get("Offset", "0")) if view is not None else 0
    limit = int(view.get("MaxEntriesReturned", "0") or 0) if view is not None else 0
    messages = []
    for ref in ctx.folders(request.find(q("m:ParentFolderIds"))):
        try:
            with ctx.store.lock:
                mailbox, parent = ctx.folder(ref)
                found = _descendants(mailbox, parent, deep)
                page = found[offset : offset + limit] if limit else found[offset:]
                elems = [folder_element(mailbox, f, shape) for f in page]
        except EwsError as e:
            messages.append(error("FindFolder", e.code, e.text))
            continue
        message = success("FindFolder")
        last = offset + len(page) >= len(found)
        root = sub(message, "m:RootFolder", TotalItemsInView=str(len(found)), IncludesLastItemInRange=str(last).lower())
        if view is not None and not last:
            root.set("IndexedPagingOffset", str(offset + len(page)))
        sub(root, "t:Folders").extend(elems)
        messages.append(message)
    return response("FindFolder", messages)


def sync_folder_hierarchy(ctx: Context, request: ET.Element) -> ET.Element:
    shape = Shape.parse(request.find(q("m:FolderShape")))
    ref = request.find(q("m:SyncFolderId"))
    state = (request.findtext(q("m:SyncState")) or "").strip()
    try:
        with ctx.store.lock:
            if ref is not None and len(ref):
                mailbox, top = ctx.folder(ref[0])
            else:
                ctx.check_access(ctx.target)
                mailbox = ctx.store.mailbox(ctx.target)
                top = mailbox.distinguished("msgfolderroot")
            since = ctx.store.read_sync_state(mailbox, "hierarchy:" + top.id, state)
            changes = ctx.store.folder_changes(mailbox, top, since)
            elems = []
            for _, kind, folder in changes:
                change = ET.Element(q(f"t:{kind}"))
                if isinstance(folder, str):
                    sub(change, "t:FolderId", Id=folder)
                else:
                    change.append(folder_element(mailbox, folder, shape))
                elems.append(change)
            new_state = ctx.store.sync_state(mailbox, "hierarchy:" + top.id, mailbox.seq)
    except EwsError as e:
        message = error("SyncFolderHierarchy", e.code, e.text)
        sub(message, "m:SyncState")
        sub(message, "m:IncludesLastFolderInRange", "true")
        return response("SyncFolderHierarchy", [message])
    message = success("SyncFolderHierarchy")
    sub(message, "m:SyncState", new_state)
    sub(message, "m:IncludesLastFolderInRange", "true")
    sub(message, "m:Changes").extend(elems)
    return response("SyncFolderHierarchy", [message])


def create_folder(ctx: Context, request: ET.Element) -> ET.Element:
    messages = []
    parent_ref = request.find(q("m:ParentFolderId"))
    for spec in ctx.folders(request.find(q("m:Folders"))):
        name = (spec.findtext(q("t:DisplayName")) or "").strip()
        default_class = {
            "CalendarFolder": "IPF.Appointment",
            "ContactsFolder": "IPF.Contact",
            "TasksFolder": "IPF.Task",
        }
        folder_class = spec.findtext(q("t:FolderClass")) or default_class.get(spec.tag.rpartition("}")[2], "IPF.Note")
        try:
            if parent_ref is None or not len(parent_ref):
                raise EwsError("ErrorInvalidRequest", "No ParentFolderId.")
            with ctx.store.lock:
                mailbox, parent = ctx.folder(parent_ref[0])
                folder = ctx.store.create_folder(mailbox.user.smtp, parent, name, folder_class.strip())
                folder_id = (folder.id, folder.change_key)
        except EwsError as e:
            message = error("CreateFolder", e.code, e.text)
            sub(message, "m:Folders")
        else:
            message = success("CreateFolder")
            created = sub(sub(message, "m:Folders"), "t:Folder")
            sub(created, "t:FolderId", Id=folder_id[0], ChangeKey=folder_id[1])
        messages.append(message)
    return response("CreateFolder", messages)


def delete_folder(ctx: Context, request: ET.Element) -> ET.Element:
    messages = []
    for ref in ctx.folders(request.find(q("m:FolderIds"))):
        try:
            with ctx.store.lock:
                mailbox, folder = ctx.folder(ref)
                if folder.distinguished:
                    raise EwsError("ErrorDeleteDistinguishedFolder", "Distinguished folders cannot be deleted.")
                ctx.store.delete_folder(mailbox.user.smtp, folder)
        except EwsError as e:
            messages.append(error("DeleteFolder", e.code, e.text))
        else:
            messages.append(success("DeleteFolder"))
    return response("DeleteFolder", messages)


def _folder_answer(operation: str, folder_id: tuple[str, str]) -> ET.Element:
    message = success(operation)
    answered = sub(sub(message, "m:Folders"), "t:Folder")
    sub(answered, "t:FolderId", Id=folder_id[0], ChangeKey=folder_id[1])
    return message


def update_folder(ctx: Context, request: ET.Element) -> ET.Element:
    """Renames (SetFolderField folder:DisplayName); a ChangeKey sent and stale is ErrorInvalidChangeKey."""
    messages = []
    for change in ctx.folders(request.find(q("m:FolderChanges"))):
        try:
            ref = change[0] if len(change) else None
            if ref is None:
                raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
            with ctx.store.lock:
                mailbox, folder = ctx.folder(ref)
                sent_key = ref.get("ChangeKey")
                if sent_key and sent_key != folder.change_key:
                    raise EwsError("ErrorInvalidChangeKey", "The change key is invalid.")
                for update in ctx.folders(change.find(q("t:Updates"))):
                    name = update.find(f"*/{q('t:DisplayName')}")
                    if name is None:
                        raise EwsError(
                            "ErrorInvalidPropertySet", "Only folder:DisplayName can be changed in this fake."
                        )
                    if folder.distinguished:
                        raise EwsError("ErrorAccessDenied", "Distinguished folders cannot be renamed.")
                    ctx.store.rename_folder(mailbox.user.smtp, folder, (name.text or "").strip())
                folder_id = (folder.id, folder.change_key)
        except EwsError as e:
            message = error("UpdateFolder", e.code, e.text)
            sub(message, "m:Folders")
        else:
            message = _folder_answer("UpdateFolder", folder_id)
        messages.append(message)
    return response("UpdateFolder", messages)


def move_folder(ctx: Context, request: ET.Element) -> ET.Element:
    target_ref = request.find(q("m:ToFolderId"))
    messages = []
    for ref in ctx.folders(request.find(q("m:FolderIds"))):
        try:
            if target_ref is None or not len(target_ref):
                raise EwsError("ErrorInvalidRequest", "No ToFolderId.")
            with ctx.store.lock:
                mailbox, folder = ctx.folder(ref)
                target_mailbox, target = ctx.folder(target_ref[0])
                if folder.distinguished:
                    raise EwsError("ErrorMoveDistinguishedFolder", "Cannot move distinguished folder.")
                if target_mailbox is not mailbox or target is folder or _descendant_of(target, folder):
                    raise EwsError("ErrorMoveCopyFailed", "The folder cannot be moved there.")
                ctx.store.move_folder(mailbox.user.smtp, folder, target)
                folder_id = (folder.id, folder.change_key)
        except EwsError as e:
            message = error("MoveFolder", e.code, e.text)
            sub(message, "m:Folders")
        else:
            message = _folder_answer("MoveFolder", folder_id)
        messages.append(message)
    return response("MoveFolder", messages)


def _descendant_of(folder: Folder, ancestor: Folder) -> bool:
    parent = folder.parent
    while parent is not None:
        if parent is ancestor:
            return True
        parent = parent.parent
    return False
