"""Delta query rounds, shared by messages (per folder), contacts and the calendar view.

A round starts without a token (a full listing) or with a ``$deltatoken`` (the
changes since that round's watermark); it is served in pages linked by
``@odata.nextLink`` (``$skiptoken``) and ends with an ``@odata.deltaLink``
(``$deltatoken``).  Query options of the first request ($select, changeType,
the window) travel inside the tokens, as Graph documents; the page size comes
from each request's ``Prefer: odata.maxpagesize`` (or ``$top``) and otherwise
from the round's first request.

Item rendering happens when a page is served, so an item changed between
pages is shown as it is now (and again next round: replays are allowed).  With
``GraphFake.options.duplicates`` set, each page after the first repeats the
last items of the page before it, as real Graph delta sometimes does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.servers.graph.model import GraphError
from tests.servers.graph.odata import Ctx, json_response, one, page_size, select, select_list

#: (entries, the cursor the round ends with) from the previous round's cursor (None: a first round)
Starter = Callable[[dict[str, Any] | None], tuple[list[Any], dict[str, Any]]]
Renderer = Callable[[Any, list[str] | None], dict[str, Any] | None]


def sync_state_gone(ctx: Ctx, path: str, code: str = "syncStateNotFound") -> GraphError:
    """410 Gone, as Graph answers a delta or skip token it no longer has: a Location header
    with an empty $deltatoken asks for a new full round."""
    message = ("The sync state generation is not found." if code == "syncStateNotFound"
               else "Resync required. Replace any local items with the server's items (sync state is invalid).")  # fmt: skip
    return GraphError(410, code, message, {"Location": ctx.link(path, **{"$deltatoken": ""})})


def serve(ctx: Ctx, *, scope: str, path: str, context: str, start: Starter, render: Renderer,
          default: int = 10, maximum: int = 1000) -> Any:  # fmt: skip
    """Answer one delta request for the collection ``scope`` (a string naming user and collection)."""
    fake = ctx.fake
    skip = one(ctx.request, "$skiptoken")
    delta = one(ctx.request, "$deltatoken")
    if skip is not None:
        state = fake.tokens.get(skip)
        if state is None or state.get("scope") != scope or "entries" not in state:
            raise sync_state_gone(ctx, path, fake.options.expired_code)
    else:
        cursor = None
        if delta:  # an empty $deltatoken (a 410's Location) is a new first round
            cursor = fake.tokens.get(delta)
            if cursor is None or cursor.get("scope") != scope or "entries" in cursor:
                raise sync_state_gone(ctx, path, fake.options.expired_code)
        entries, next_cursor = start(cursor)
        sel = cursor["select"] if cursor else select_list(ctx.request)
        next_cursor.update(scope=scope, select=sel)
        state = {"scope": scope, "entries": entries, "offset": 0, "size": None, "select": sel, "cursor": next_cursor}
    size = page_size(ctx.request, default, maximum, state["size"])
    offset = state["offset"]
    entries = state["entries"]
    replay = fake.options.duplicates if offset else 0
    page = entries[max(0, offset - replay) : offset + size]
    value = [item for item in (render(e, state["select"]) for e in page) if item is not None]
    body: dict[str, Any] = {"@odata.context": f"{ctx.base}/$metadata#Collection({context})"}
    if offset + size < len(entries):
        token = fake.tokens.put({**state, "offset": offset + size, "size": size})
        body["@odata.nextLink"] = ctx.link(path, **{"$skiptoken": token})
    else:
        token = fake.tokens.put(dict(state["cursor"]))
        body["@odata.deltaLink"] = ctx.link(path, **{"$deltatoken": token})
    body["value"] = value
    headers = (
        {"Preference-Applied": f"odata.maxpagesize={size}"}
        if "odata.maxpagesize" in ctx.request.headers.get("prefer", "")
        else {}
    )
    if ctx.immutable:
        headers["Preference-Applied"] = ", ".join(
            filter(None, [headers.get("Preference-Applied"), 'IdType="ImmutableId"'])
        )
    return json_response(body, headers=headers)


def keyed_starter(ctx: Ctx, collection: str, present: Callable[[], list[int]]) -> Starter:
    """Messages and contacts: a first round lists what is there; later rounds read the change log."""
    mailbox = ctx.need_mailbox()
    change_type = one(ctx.request, "changeType")

    def start(cursor: dict[str, Any] | None) -> tuple[list[Any], dict[str, Any]]:
        with mailbox.tenant.lock:
            watermark = mailbox.tenant.seq
            if cursor is None:
                return [(key, None) for key in present()], {"seq": watermark, "changeType": change_type}
            wanted = cursor.get("changeType")
            entries = []
            for key, removed in mailbox.changes_since(collection, cursor["seq"]).items():
                gone = removed is not None and _absent(mailbox, collection, key)
                created = mailbox.created_seq.get(key, 0) > cursor["seq"]
                kind = "deleted" if gone else ("created" if created else "updated")
                if wanted in (None, kind):
                    entries.append((key, removed if gone else None))
            return entries, {"seq": watermark, "changeType": wanted}

    return start


def _absent(mailbox: Any, collection: str, key: int) -> bool:
    if collection == "contacts":
        return key not in mailbox.contacts
    msg = mailbox.messages.get(key)
    return msg is None or msg.folder_id != collection


def removed_entry(odata_type: str, item_id: str) -> dict[str, Any]:
    return {"@odata.type": odata_type, "id": item_id, "@removed": {"reason": "deleted"}}


def keyed_renderer(ctx: Ctx, collection: str, odata_type: str,
                   to_json: Callable[[Any], dict[str, Any]]) -> Renderer:  # fmt: skip
    mailbox = ctx.need_mailbox()

    def render(entry: tuple[int, str | None], sel: list[str] | None) -> dict[str, Any] | None:
        key, removed_id = entry
        with mailbox.tenant.lock:
            if not _absent(mailbox, collection, key):
                item = mailbox.contacts[key] if collection == "contacts" else mailbox.messages[key]
                return select({"@odata.type": odata_type, **to_json(item)}, sel)
            if ctx.immutable:
                live = mailbox.contacts.get(key) if collection == "contacts" else mailbox.messages.get(key)
                removed_id = live.immutable_id if live is not None else mailbox.gone.get(key)
            if removed_id is None:
                return None  # came and went within the round: nothing the client knew
            return removed_entry(odata_type, removed_id)

    return render
