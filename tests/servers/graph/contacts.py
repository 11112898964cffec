"""Personal contacts of the default contacts folder: list, get, create, PATCH
(If-Match), delete, and the contact delta."""

from __future__ import annotations

from typing import Any

from tests.servers.graph import delta, extprops
from tests.servers.graph.mail import check_if_match
from tests.servers.graph.model import Contact, GraphError
from tests.servers.graph.odata import Ctx, collection_page, json_response, read_json, select, select_list
from tests.servers.httpfake import Response

#: contact properties a client may write (the rest are computed)
WRITABLE = {
    "givenName", "surname", "middleName", "displayName", "nickName", "title", "fileAs", "initials",
    "emailAddresses", "businessPhones", "homePhones", "mobilePhone", "companyName", "department",
    "jobTitle", "officeLocation", "businessAddress", "homeAddress", "otherAddress", "birthday",
    "personalNotes", "categories", "imAddresses", "spouseName", "children", "manager", "assistantName",
    "businessHomePage", "profession", "generation", "yomiGivenName", "yomiSurname", "yomiCompanyName",
    "singleValueExtendedProperties",
}  # fmt: skip


def contact_json(ctx: Ctx, contact: Contact) -> dict[str, Any]:
    mailbox = ctx.need_mailbox()
    fields = contact.fields
    display = fields.get("displayName") or " ".join(filter(None, [fields.get("givenName"), fields.get("surname")]))
    return {
        "@odata.etag": contact.etag,
        "id": ctx.item_id(contact),
        "createdDateTime": contact.created,
        "lastModifiedDateTime": contact.modified,
        "changeKey": contact.change_key,
        "categories": [],
        "parentFolderId": mailbox.contacts_folder_id,
        "birthday": None,
        "fileAs": "",
        "displayName": display,
        "givenName": None,
        "initials": None,
        "middleName": None,
        "nickName": None,
        "surname": None,
        "title": None,
        "jobTitle": None,
        "companyName": None,
        "department": None,
        "officeLocation": None,
        "businessHomePage": None,
        "personalNotes": "",
        "mobilePhone": None,
        "homePhones": [],
        "businessPhones": [],
        "emailAddresses": [],
        "imAddresses": [],
        "homeAddress": {},
        "businessAddress": {},
        "otherAddress": {},
        **{k: v for k, v in fields.items() if k not in ("displayName", extprops.KEY)},
    }


def shown(ctx: Ctx, contact: Contact, sel: list[str] | None) -> dict[str, Any]:
    """A contact as answered: ``$select`` applied, our extended properties when ``$expand`` asks."""
    return {
        **select(contact_json(ctx, contact), sel),
        **extprops.expanded(ctx.request, contact.fields.get(extprops.KEY)),
    }


def _fields(ctx: Ctx) -> dict[str, Any]:
    body = read_json(ctx.request)
    unknown = sorted(k for k in body if k not in WRITABLE and not k.startswith("@"))
    if unknown:
        raise GraphError(
            400, "RequestBodyRead", f"The property '{unknown[0]}' does not exist on type 'microsoft.graph.contact'."
        )
    fields = {k: v for k, v in body.items() if k in WRITABLE}
    if extprops.KEY in fields:
        fields[extprops.KEY] = extprops.merged(None, fields[extprops.KEY])
    return fields


def _folder(ctx: Ctx, ref: str | None) -> None:
    if ref is not None and ref.lower() != "contacts" and ref != ctx.need_mailbox().contacts_folder_id:
        raise GraphError(
            404, "ErrorItemNotFound", "The specified contact folder was not found (only the default one exists here)."
        )


def list_contacts(ctx: Ctx, folder: str | None) -> Response:
    _folder(ctx, folder)
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        sel = select_list(ctx.request)
        items = [shown(ctx, c, sel) for c in sorted(mailbox.contacts.values(), key=lambda c: c.key)
                 if extprops.matches(ctx.request, c.fields.get(extprops.KEY))]  # fmt: skip
    return collection_page(ctx, items, "contacts", "Collection(contact)")


def get_contact(ctx: Ctx, ref: str) -> Response:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        contact = mailbox.contact(ref)
        item = shown(ctx, contact, select_list(ctx.request))
    return json_response(
        {"@odata.context": f"{ctx.base}/$metadata#contacts/$entity", **item}, headers={"ETag": contact.etag}
    )


def create_contact(ctx: Ctx, folder: str | None) -> Response:
    _folder(ctx, folder)
    mailbox = ctx.need_mailbox()
    fields = _fields(ctx)
    with mailbox.tenant.lock:
        contact = mailbox.add_contact(fields)
        item = shown(ctx, contact, None)
    return json_response(
        {"@odata.context": f"{ctx.base}/$metadata#contacts/$entity", **item}, 201, {"ETag": contact.etag}
    )


def patch_contact(ctx: Ctx, ref: str) -> Response:
    mailbox = ctx.need_mailbox()
    fields = _fields(ctx)
    with mailbox.tenant.lock:
        contact = mailbox.contact(ref)
        check_if_match(ctx, contact.etag)
        if extprops.KEY in fields:  # a PATCH adds or replaces properties by id, keeping the others
            fields[extprops.KEY] = extprops.merged(contact.fields.get(extprops.KEY), fields[extprops.KEY])
        mailbox.edit_contact(contact, fields)
        item = shown(ctx, contact, None)
    return json_response(
        {"@odata.context": f"{ctx.base}/$metadata#contacts/$entity", **item}, headers={"ETag": contact.etag}
    )


def delete_contact(ctx: Ctx, ref: str) -> Response:
    mailbox = ctx.need_mailbox()
    with mailbox.tenant.lock:
        contact = mailbox.contact(ref)
        check_if_match(ctx, contact.etag)
        mailbox.delete_contact(contact)
    return Response(204)


def contacts_delta(ctx: Ctx, folder: str | None) -> Any:
    _folder(ctx, folder)
    mailbox = ctx.need_mailbox()
    start = delta.keyed_starter(ctx, "contacts", lambda: sorted(mailbox.contacts))
    render = delta.keyed_renderer(ctx, "contacts", "#microsoft.graph.contact", lambda c: contact_json(ctx, c))
    path = f"contactFolders('{folder}')/contacts/delta" if folder else "contacts/delta"
    return delta.serve(ctx, scope=f"{mailbox.id}/contacts", path=path, context="contact", start=start, render=render)
