"""Item operations: SyncFolderItems, FindItem, GetItem, CreateItem, UpdateItem, DeleteItem, MoveItem."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import xml.etree.ElementTree as ET

from tests.servers.ews import occurrences
from tests.servers.ews.context import Context
from tests.servers.ews.model import Item, new_uid
from tests.servers.ews.properties import Shape, delete_field, item_element, merge_field
from tests.servers.ews.soap import EwsError, el, error, local, q, response, sub, success

MAX_SYNC_CHANGES = 512  # Exchange's ceiling for MaxChangesReturned


def sync_folder_items(ctx: Context, request: ET.Element) -> ET.Element:
    shape = Shape.parse(request.find(q("m:ItemShape")))
    ref = request.find(q("m:SyncFolderId"))
    state = (request.findtext(q("m:SyncState")) or "").strip()
    ignore = {e.get("Id") for e in ctx.folders(request.find(q("m:Ignore")))}
    limit = int((request.findtext(q("m:MaxChangesReturned")) or "100").strip())
    try:
        if not 1 <= limit <= MAX_SYNC_CHANGES:
            raise EwsError("ErrorInvalidArgument", f"MaxChangesReturned must be between 1 and {MAX_SYNC_CHANGES}.")
        if ref is None or not len(ref):
            raise EwsError("ErrorInvalidRequest", "No SyncFolderId.")
        with ctx.store.lock:
            mailbox, folder = ctx.folder(ref[0])
            since = ctx.store.read_sync_state(mailbox, "items:" + folder.id, state)
            changes = ctx.store.item_changes(folder, since)
            page, rest = changes[:limit], changes[limit:]
            upto = page[-1][0] if rest else mailbox.seq
            elems = []
            for _, kind, item in page:
                item_id = item if isinstance(item, str) else item.id
                if item_id in ignore:
                    continue
                change = ET.Element(q(f"t:{kind}"))
                if isinstance(item, str):
                    sub(change, "t:ItemId", Id=item)
                elif kind == "ReadFlagChange":
                    sub(change, "t:ItemId", Id=item.id, ChangeKey=item.change_key)
                    sub(change, "t:IsRead", str(item.is_read).lower())
                else:
                    change.append(item_element(item, shape))
                elems.append(change)
            new_state = ctx.store.sync_state(mailbox, "items:" + folder.id, upto)
    except EwsError as e:
        message = error("SyncFolderItems", e.code, e.text)
        sub(message, "m:SyncState")
        sub(message, "m:IncludesLastItemInRange", "true")
        return response("SyncFolderItems", [message])
    message = success("SyncFolderItems")
    sub(message, "m:SyncState", new_state)
    sub(message, "m:IncludesLastItemInRange", str(not rest).lower())
    sub(message, "m:Changes").extend(elems)
    return response("SyncFolderItems", [message])


def get_item(ctx: Context, request: ET.Element) -> ET.Element:
    shape = Shape.parse(request.find(q("m:ItemShape")))
    messages = []
    for ref in ctx.folders(request.find(q("m:ItemIds"))):
        try:
            with ctx.store.lock:
                _, item = ctx.item(ref)
                elem = item_element(item, shape)
        except EwsError as e:
            message = error("GetItem", e.code, e.text)
            sub(message, "m:Items")
        else:
            message = success("GetItem")
            sub(message, "m:Items").append(elem)
        messages.append(message)
    return response("GetItem", messages)


def _when(item: Item, name: str) -> dt.datetime | None:
    value = item.fields.get(name)
    if value is None or not value.text:
        return None
    parsed = dt.datetime.fromisoformat(value.text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def find_item(ctx: Context, request: ET.Element) -> ET.Element:
    """Shallow FindItem with an IndexedPageItemView or a CalendarView; no restrictions, no sort
    order (arrival order), and recurring series are not expanded into occurrences."""
    shape = Shape.parse(request.find(q("m:ItemShape")))
    paged = request.find(q("m:IndexedPageItemView"))
    calendar = request.find(q("m:CalendarView"))
    offset = int(paged.get("Offset", "0")) if paged is not None else 0
    view = paged if paged is not None else calendar
    limit = int(view.get("MaxEntriesReturned", "0") or 0) if view is not None else 0
    messages = []
    for ref in ctx.folders(request.find(q("m:ParentFolderIds"))):
        try:
            if request.find(q("m:Restriction")) is not None or request.find(q("m:QueryString")) is not None:
                raise EwsError("ErrorUnsupportedQueryFilter", "Restrictions are not supported by this fake.")
            with ctx.store.lock:
                _, folder = ctx.folder(ref)
                found = list(folder.items.values())
                if calendar is not None:
                    start = dt.datetime.fromisoformat(calendar.get("StartDate", "").replace("Z", "+00:00"))
                    end = dt.datetime.fromisoformat(calendar.get("EndDate", "").replace("Z", "+00:00"))
                    found = [
                        i for i in found
                        if (s := _when(i, "Start")) is not None and (e := _when(i, "End")) is not None and s < end and e > start
                    ]  # fmt: skip
                page = found[offset : offset + limit] if limit else found[offset:]
                elems = [item_element(i, shape) for i in page]
        except (EwsError, ValueError) as e:
            code, text = (e.code, e.text) if isinstance(e, EwsError) else ("ErrorInvalidRequest", str(e))
            messages.append(error("FindItem", code, text))
            continue
        message = success("FindItem")
        last = offset + len(page) >= len(found)
        root = sub(message, "m:RootFolder", TotalItemsInView=str(len(found)), IncludesLastItemInRange=str(last).lower())
        if paged is not None and not last:
            root.set("IndexedPagingOffset", str(offset + len(page)))
        sub(root, "t:Items").extend(elems)
        messages.append(message)
    return response("FindItem", messages)


def _id_only(item: Item) -> ET.Element:
    elem = el(f"t:{item.tag}")
    sub(elem, "t:ItemId", Id=item.id, ChangeKey=item.change_key)
    return elem


def create_item(ctx: Context, request: ET.Element) -> ET.Element:
    disposition = request.get("MessageDisposition")
    target_ref = request.find(q("m:SavedItemFolderId"))
    messages = []
    for spec in ctx.folders(request.find(q("m:Items"))):
        tag = local(spec)
        try:
            with ctx.store.lock:
                if target_ref is not None and len(target_ref):
                    mailbox, folder = ctx.folder(target_ref[0])
                else:
                    ctx.check_access(ctx.target)
                    mailbox = ctx.store.mailbox(ctx.target)
                    default = {"Contact": "contacts", "CalendarItem": "calendar", "Task": "tasks"}.get(tag, "drafts")
                    folder = mailbox.distinguished("sentitems" if disposition == "SendAndSaveCopy" else default)
                if tag == "Contact" and folder.folder_class != "IPF.Contact":
                    raise EwsError(
                        "ErrorCannotCreateContactInNonContactFolder", "Cannot create a contact in a non-contact Folder."
                    )
                if tag == "CalendarItem" and folder.folder_class != "IPF.Appointment":
                    raise EwsError(
                        "ErrorCannotCreateCalendarItemInNonCalendarFolder",
                        "Cannot create a calendar item in a non-calendar folder.",
                    )
                mime = None
                mime_elem = spec.find(q("t:MimeContent"))
                if mime_elem is not None:
                    try:
                        mime = base64.b64decode((mime_elem.text or "").strip(), validate=True)
                    except binascii.Error:
                        raise EwsError(
                            "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
                        ) from None
                item = ctx.store.add_item(
                    mailbox.user.smtp,
                    folder,
                    tag=tag if tag in ("Message", "Contact", "CalendarItem", "Task") else "Message",
                    mime=mime,
                )
                for child in spec:
                    merge_field(item, child)
                if tag == "CalendarItem" and "UID" not in item.fields:
                    item.fields["UID"] = el("t:UID", new_uid())
                created = item
                if disposition == "SendOnly":
                    ctx.store.remove_item(mailbox.user.smtp, item)
        except EwsError as e:
            message = error("CreateItem", e.code, e.text)
            sub(message, "m:Items")
        else:
            message = success("CreateItem")
            items = sub(message, "m:Items")
            if disposition not in ("SendOnly", "SendAndSaveCopy"):
                items.append(_id_only(created))
        messages.append(message)
    return response("CreateItem", messages)


def update_item(ctx: Context, request: ET.Element) -> ET.Element:
    resolution = request.get("ConflictResolution", "AutoResolve")
    messages = []
    for change in ctx.folders(request.find(q("m:ItemChanges"))):
        ref = change.find(q("t:ItemId"))
        if ref is None:
            ref = change.find(q("t:OccurrenceItemId"))
        try:
            if ref is None:
                raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
            with ctx.store.lock:
                mailbox, item = ctx.item(ref)
                sent_key = ref.get("ChangeKey")
                current = (
                    item.master.change_key if ref.tag == q("t:OccurrenceItemId") and item.master else item.change_key
                )
                if resolution == "NeverOverwrite" and sent_key and sent_key != current:
                    raise EwsError(
                        "ErrorIrresolvableConflict",
                        "The send or update operation could not be performed because the change key passed in the "
                        "request does not match the current change key for the item.",
                    )
                read_only = True
                for update in ctx.folders(change.find(q("t:Updates"))):
                    kind = local(update)
                    if kind in ("SetItemField", "AppendToItemField"):
                        values = [
                            v
                            for v in update
                            if v.tag not in (q("t:FieldURI"), q("t:IndexedFieldURI"), q("t:ExtendedFieldURI"))
                        ]
                        for value in list(values[0]) if values else []:
                            read_only = read_only and local(value) == "IsRead"
                            merge_field(item, value)
                    elif kind == "DeleteItemField":
                        read_only = False
                        for uri in update:
                            delete_field(item, uri)
                    if any((u.get("FieldURI") or "") == "calendar:Recurrence" for u in update):
                        occurrences.reset(mailbox, item)  # a new pattern: the exceptions are gone
                if item.master is not None:
                    occurrences.changed(ctx.store, mailbox, item)
                else:
                    ctx.store.update_item(mailbox.user.smtp, item, read_only=read_only)
                answer = _id_only(item)
        except EwsError as e:
            message = error("UpdateItem", e.code, e.text)
            sub(message, "m:Items")
        else:
            message = success("UpdateItem")
            sub(message, "m:Items").append(answer)
        messages.append(message)
    return response("UpdateItem", messages)


def delete_item(ctx: Context, request: ET.Element) -> ET.Element:
    how = request.get("DeleteType", "HardDelete")
    messages = []
    for ref in ctx.folders(request.find(q("m:ItemIds"))):
        try:
            with ctx.store.lock:
                mailbox, item = ctx.item(ref)
                if item.master is not None:  # one occurrence of a series
                    occurrences.deleted(ctx.store, mailbox, item)
                elif how == "MoveToDeletedItems" and item.folder.distinguished != "deleteditems":
                    ctx.store.move_item(mailbox.user.smtp, item, mailbox.distinguished("deleteditems"))
                else:
                    ctx.store.remove_item(mailbox.user.smtp, item)
        except EwsError as e:
            messages.append(error("DeleteItem", e.code, e.text))
        else:
            messages.append(success("DeleteItem"))
    return response("DeleteItem", messages)


def move_item(ctx: Context, request: ET.Element) -> ET.Element:
    target_ref = request.find(q("m:ToFolderId"))
    messages = []
    for ref in ctx.folders(request.find(q("m:ItemIds"))):
        try:
            with ctx.store.lock:
                if target_ref is None or not len(target_ref):
                    raise EwsError("ErrorInvalidRequest", "No ToFolderId.")
                target_mailbox, target = ctx.folder(target_ref[0])
                mailbox, item = ctx.item(ref)
                if target_mailbox is not mailbox:
                    raise EwsError("ErrorCrossMailboxMoveCopy", "Cross-mailbox moves are not supported by this fake.")
                moved = _id_only(ctx.store.move_item(mailbox.user.smtp, item, target))
        except EwsError as e:
            message = error("MoveItem", e.code, e.text)
            sub(message, "m:Items")
        else:
            message = success("MoveItem")
            sub(message, "m:Items").append(moved)
        messages.append(message)
    return response("MoveItem", messages)
