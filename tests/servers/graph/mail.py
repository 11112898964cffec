"""Mail endpoints: mailFolders and childFolders (list, get, create, rename,
delete), messages (list, get, PATCH with If-Match, move, raw MIME through
``$value``) and the per-folder message delta."""

from __future__ import annotations

from typing import Any

from tests.servers.graph import delta
from tests.servers.graph.model import Folder, GraphError, Message
from tests.servers.graph.odata import Ctx, collection_page, json_response, read_json, select, select_list
from tests.servers.httpfake import Response

MIME_CHUNK = 64 * 1024


def folder_json(ctx: Ctx, folder: Folder) -> dict[str, Any]:
    mailbox = ctx.need_mailbox()
    msgs = mailbox.in_folder(folder.id)
    return {
        "id": folder.id,
        "displayName": folder.display_name,
        "parentFolderId": folder.parent_id,
        "childFolderCount": len(mailbox.children(folder.id)),
        "unreadItemCount": sum(1 for m in msgs if not m.is_read),
        "totalItemCount": len(msgs),
        "sizeInBytes": sum(len(m.mime) for m in msgs),
        "isHidden": False,
    }


def message_json(ctx: Ctx, msg: Message) -> dict[str, Any]:
    return {
        "@odata.etag": msg.etag,
        "id": ctx.item_id(msg),
        "createdDateTime": msg.created,
        "lastModifiedDateTime": msg.modified,
        "changeKey": msg.change_key,
        "categories": list(msg.categories),
        "receivedDateTime": msg.received,
        "sentDateTime": msg.sent,
        "hasAttachments": msg.has_attachments,
        "internetMessageId": msg.internet_message_id,
        "subject": msg.subject,
        "bodyPreview": msg.preview,
        "importance": "normal",
        "parentFolderId": msg.folder_id,
        "conversationId": msg.conversation_id,
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": msg.is_read,
        "isDraft": False,
        "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": msg.preview},
        "sender": msg.sender,
        "from": msg.sender,
        "toRecipients": msg.to,
        "ccRecipients": msg.cc,
        "bccRecipients": [],
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    }


# -- folders --------------------------------------------------------------------
def list_folders(ctx: Ctx, parent: str | None) -> Response:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        parent_folder = mailbox.folder(parent) if parent else mailbox.folders[mailbox.root_id]
        items = [select(folder_json(ctx, f), select_list(ctx.request)) for f in mailbox.children(parent_folder.id)]
    path = f"mailFolders/{parent}/childFolders" if parent else "mailFolders"
    return collection_page(ctx, items, path, "Collection(mailFolder)")


def get_folder(ctx: Ctx, ref: str) -> Response:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        item = select(folder_json(ctx, mailbox.folder(ref)), select_list(ctx.request))
    return json_response({"@odata.context": f"{ctx.base}/$metadata#mailFolders/$entity", **item})


def create_folder(ctx: Ctx, parent: str | None) -> Response:
    mailbox = ctx.need_mailbox()
    name = read_json(ctx.request).get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise GraphError(400, "ErrorInvalidRequest", "The folder display name is required.")
    with mailbox.tenant.lock:
        parent_id = mailbox.folder(parent).id if parent else mailbox.root_id
        folder = mailbox.create_folder(parent_id, name)
        item = folder_json(ctx, folder)
    return json_response({"@odata.context": f"{ctx.base}/$metadata#mailFolders/$entity", **item}, 201)


def patch_folder(ctx: Ctx, ref: str) -> Response:
    mailbox = ctx.need_mailbox()
    name = read_json(ctx.request).get("displayName")
    with mailbox.tenant.lock:
        folder = mailbox.folder(ref)
        if isinstance(name, str) and name.strip():
            folder.display_name = name
        item = folder_json(ctx, folder)
    return json_response({"@odata.context": f"{ctx.base}/$metadata#mailFolders/$entity", **item})


def delete_folder(ctx: Ctx, ref: str) -> Response:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        mailbox.delete_folder(mailbox.folder(ref))
    return Response(204)


# -- messages -------------------------------------------------------------------
def _message(ctx: Ctx, ref: str, folder: str | None) -> Message:
    mailbox = ctx.need_mailbox()
    msg = mailbox.message(ref)
    if folder is not None and msg.folder_id != mailbox.folder(folder).id:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return msg


def list_messages(ctx: Ctx, folder: str | None) -> Response:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        if folder is None:
            msgs = list(mailbox.messages.values())
        else:
            msgs = mailbox.in_folder(mailbox.folder(folder).id)
        msgs.sort(key=lambda m: (m.received, m.key), reverse=True)  # Graph's default: newest first
        sel = select_list(ctx.request)
        path = f"mailFolders/{folder}/messages" if folder else "messages"
        return collection_page(
            ctx, msgs, path, "Collection(message)", render=lambda m: select(message_json(ctx, m), sel)
        )


def get_message(ctx: Ctx, ref: str, folder: str | None) -> Response:
    with ctx.need_mailbox().tenant.lock:
        msg = _message(ctx, ref, folder)
        item = select(message_json(ctx, msg), select_list(ctx.request))
    headers = {"ETag": msg.etag, **ctx.preference_applied()}
    return json_response({"@odata.context": f"{ctx.base}/$metadata#messages/$entity", **item}, headers=headers)


def message_value(ctx: Ctx, ref: str, folder: str | None) -> Response:
    """Raw MIME, streamed in chunks (a fault can drop the connection part way)."""
    with ctx.need_mailbox().tenant.lock:
        mime = _message(ctx, ref, folder).mime
    chunks = (mime[i : i + MIME_CHUNK] for i in range(0, len(mime), MIME_CHUNK))
    return Response(200, {"Content-Type": "text/plain"}, chunks=chunks)


def patch_message(ctx: Ctx, ref: str, folder: str | None) -> Response:
    """Updatable here: categories and isRead.  If-Match with a stale etag is 412."""
    mailbox = ctx.need_mailbox()
    body = read_json(ctx.request)
    categories = body.get("categories")
    if categories is not None and not (isinstance(categories, list) and all(isinstance(c, str) for c in categories)):
        raise GraphError(400, "ErrorInvalidProperty", "categories must be a list of strings.")
    is_read = body.get("isRead")
    with mailbox.tenant.lock:
        msg = _message(ctx, ref, folder)
        check_if_match(ctx, msg.etag)
        mailbox.update(msg, categories=categories, is_read=is_read if isinstance(is_read, bool) else None)
        item = message_json(ctx, msg)
    headers = {"ETag": msg.etag, **ctx.preference_applied()}
    return json_response({"@odata.context": f"{ctx.base}/$metadata#messages/$entity", **item}, headers=headers)


def move_message(ctx: Ctx, ref: str, folder: str | None) -> Response:
    mailbox = ctx.need_mailbox()
    dest = read_json(ctx.request).get("destinationId")
    if not isinstance(dest, str):
        raise GraphError(400, "ErrorInvalidRequest", "destinationId is required.")
    with mailbox.tenant.lock:
        msg = _message(ctx, ref, folder)
        mailbox.move(msg, mailbox.folder(dest).id)
        item = message_json(ctx, msg)
    return json_response({"@odata.context": f"{ctx.base}/$metadata#messages/$entity", **item}, 201)


def check_if_match(ctx: Ctx, etag: str) -> None:
    wanted = ctx.request.headers.get("if-match")
    if wanted is None or wanted.strip() == "*":
        return
    if wanted.strip() != etag:
        raise GraphError(412, "ErrorIrresolvableConflict",
                         "The send or update operation could not be performed because the change key passed in the "
                         "request does not match the current change key for the item.")  # fmt: skip


def messages_delta(ctx: Ctx, folder_ref: str) -> Any:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        folder = mailbox.folder(folder_ref)
    collection = folder.id
    start = delta.keyed_starter(ctx, collection, lambda: [m.key for m in mailbox.in_folder(collection)])
    render = delta.keyed_renderer(ctx, collection, "#microsoft.graph.message", lambda m: message_json(ctx, m))
    return delta.serve(ctx, scope=f"{mailbox.id}/messages/{collection}", path=f"mailFolders('{folder_ref}')/messages/delta",
                       context="message", start=start, render=render)  # fmt: skip


def folders_delta(ctx: Ctx) -> Any:
    """``mailFolders/delta``: the whole folder tree, then folders added, renamed, moved or removed
    (a snapshot of id -> name and parent per round)."""
    mailbox = ctx.need_mailbox()

    def start(cursor: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
        with mailbox.tenant.lock:
            current = {f.id: {"@odata.type": "#microsoft.graph.mailFolder", **folder_json(ctx, f)}
                       for f in mailbox.folders.values() if f.id != mailbox.root_id}  # fmt: skip
        seen = cursor["seen"] if cursor else {}
        state = {fid: [item["displayName"], item["parentFolderId"]] for fid, item in current.items()}
        entries: list[Any] = [item for fid, item in current.items() if seen.get(fid) != state[fid]]
        entries += [delta.removed_entry("#microsoft.graph.mailFolder", fid) for fid in seen if fid not in current]
        return entries, {"seen": state}

    return delta.serve(ctx, scope=f"{mailbox.id}/mailFolders", path="mailFolders/delta", context="mailFolder",
                       start=start, render=lambda entry, sel: select(entry, sel))  # fmt: skip
