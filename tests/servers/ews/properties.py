"""How folders and items are answered: which properties a shape (IdOnly, Default, AllProperties
plus AdditionalProperties) asks for, in the order the EWS schema gives them."""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import email
import email.policy
import email.utils
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from tests.servers.ews import occurrences
from tests.servers.ews.model import Folder, Item, Mailbox, format_time, mime_date, xml_safe
from tests.servers.ews.soap import el, local, q, sub

# The order of the item properties in the types schema (ItemType, then MessageType /
# ContactItemType / CalendarItemType extensions); properties not listed go last.
ITEM_ORDER = [
    "MimeContent", "ItemId", "ParentFolderId", "ItemClass", "Subject", "Sensitivity", "Body", "Attachments",
    "DateTimeReceived", "Size", "Categories", "Importance", "InReplyTo", "IsSubmitted", "IsDraft", "IsFromMe",
    "IsResend", "IsUnmodified", "InternetMessageHeaders", "DateTimeSent", "DateTimeCreated", "ResponseObjects",
    "ReminderDueBy", "ReminderIsSet", "ReminderMinutesBeforeStart", "DisplayCc", "DisplayTo", "HasAttachments",
    "ExtendedProperty", "Culture", "EffectiveRights", "LastModifiedName", "LastModifiedTime", "IsAssociated",
    "WebClientReadFormQueryString", "WebClientEditFormQueryString", "ConversationId", "UniqueBody",
    # MessageType
    "Sender", "ToRecipients", "CcRecipients", "BccRecipients", "IsReadReceiptRequested",
    "IsDeliveryReceiptRequested", "ConversationIndex", "ConversationTopic", "From", "InternetMessageId", "IsRead",
    "IsResponseRequested", "References", "ReplyTo", "ReceivedBy", "ReceivedRepresenting",
    # CalendarItemType
    "UID", "RecurrenceId", "DateTimeStamp", "Start", "End", "OriginalStart", "IsAllDayEvent",
    "LegacyFreeBusyStatus", "Location", "When", "IsMeeting", "IsCancelled", "IsRecurring", "MeetingRequestWasSent",
    "IsResponseRequested", "CalendarItemType", "MyResponseType", "Organizer", "RequiredAttendees",
    "OptionalAttendees", "Resources", "ConflictingMeetingCount", "AdjacentMeetingCount", "Duration", "TimeZone",
    "AppointmentReplyTime", "AppointmentSequenceNumber", "AppointmentState", "Recurrence", "FirstOccurrence",
    "LastOccurrence", "ModifiedOccurrences", "DeletedOccurrences", "StartTimeZone", "EndTimeZone",
    # ContactItemType
    "FileAs", "FileAsMapping", "DisplayName", "GivenName", "Initials", "MiddleName", "Nickname", "CompleteName",
    "CompanyName", "EmailAddresses", "PhysicalAddresses", "PhoneNumbers", "AssistantName", "Birthday",
    "BusinessHomePage", "Children", "Companies", "ContactSource", "Department", "Generation", "ImAddresses",
    "JobTitle", "Manager", "Mileage", "OfficeLocation", "PostalAddressIndex", "Profession", "SpouseName",
    "Surname", "WeddingAnniversary",
]  # fmt: skip
_RANK = {name: i for i, name in enumerate(ITEM_ORDER)}
# What BaseShape=Default answers for a message (the documented GetItem example)
MESSAGE_DEFAULT = [
    "ItemId", "Subject", "Sensitivity", "Body", "Size", "DateTimeSent", "DateTimeCreated", "ResponseObjects",
    "HasAttachments", "ToRecipients", "IsReadReceiptRequested", "IsDeliveryReceiptRequested", "From", "IsRead",
]  # fmt: skip
OTHER_DEFAULT = [
    "ItemId",
    "ItemClass",
    "Subject",
    "Start",
    "End",
    "Location",
    "FileAs",
    "DisplayName",
    "GivenName",
    "Surname",
]
# indexed FieldURIs name an entry of a container element
INDEXED = {
    "EmailAddress": "EmailAddresses",
    "PhoneNumber": "PhoneNumbers",
    "ImAddress": "ImAddresses",
    "PhysicalAddress": "PhysicalAddresses",
}
# boolean item properties a client may set
BOOLEANS = {
    "IsAllDayEvent", "ReminderIsSet", "IsResponseRequested", "AllowNewTimeProposal", "IsOnlineMeeting",
    "IsReadReceiptRequested", "IsDeliveryReceiptRequested", "IsDraft",
}  # fmt: skip
# date-time item properties a client may set
TIMES = {"Start", "End", "ReminderDueBy", "OriginalStart"}
FOLDER_DEFAULT = ["FolderId", "DisplayName", "TotalCount", "ChildFolderCount", "UnreadCount"]
FOLDER_ALL = [
    "FolderId",
    "ParentFolderId",
    "FolderClass",
    "DisplayName",
    "TotalCount",
    "ChildFolderCount",
    "UnreadCount",
]


def extended_key(uri: ET.Element) -> str:
    """The name an extended property is kept under: its ExtendedFieldURI's identity."""
    names = ("DistinguishedPropertySetId", "PropertySetId", "PropertyTag", "PropertyName", "PropertyId")
    parts = [uri.get(a) or "" for a in names]
    return "ExtendedProperty:" + "|".join(parts)


def field_name(uri: str) -> str:
    """'item:Subject' -> 'Subject'; 'contacts:PhysicalAddress:Street' -> 'PhysicalAddresses'."""
    parts = uri.split(":")
    if len(parts) > 1 and parts[1] in INDEXED:
        return INDEXED[parts[1]]
    return parts[-1]


@dataclass
class Shape:
    base: str = "Default"
    mime: bool = False
    extra: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, elem: ET.Element | None) -> Shape:
        if elem is None:
            return cls()
        shape = cls(base=(elem.findtext(q("t:BaseShape")) or "Default").strip())
        shape.mime = (elem.findtext(q("t:IncludeMimeContent")) or "").strip().lower() == "true"
        extra = elem.find(q("t:AdditionalProperties"))
        if extra is not None:
            for uri in extra:
                if uri.tag == q("t:ExtendedFieldURI"):
                    shape.extra.add(extended_key(uri))
                    continue
                name = field_name(uri.get("FieldURI") or "")
                if name:
                    shape.extra.add(name)
        if "MimeContent" in shape.extra:
            shape.mime = True
        return shape


def _mailbox_elem(tag: str, address: str | None) -> ET.Element | None:
    if not address:
        return None
    name, addr = email.utils.parseaddr(address)
    outer = el(tag)
    box = sub(outer, "t:Mailbox")
    sub(box, "t:Name", name or addr)
    sub(box, "t:EmailAddress", addr)
    sub(box, "t:RoutingType", "SMTP")
    return outer


def _recipients(tag: str, header: str | None) -> ET.Element | None:
    if not header:
        return None
    outer = el(tag)
    for name, addr in email.utils.getaddresses([header]):
        box = sub(outer, "t:Mailbox")
        sub(box, "t:Name", name or addr)
        sub(box, "t:EmailAddress", addr)
        sub(box, "t:RoutingType", "SMTP")
    return outer


def _text_body(mime: bytes) -> str:
    message = email.message_from_bytes(mime, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain", "html"))  # type: ignore[attr-defined]
    try:
        return xml_safe(part.get_content()) if part is not None else ""
    except (LookupError, ValueError, AttributeError):
        return ""


def item_properties(item: Item, wanted: set[str] | None, mime: bool) -> dict[str, ET.Element]:
    """The item's properties by element name (computed ones, then what clients set); only ``wanted``
    ones are built (None: all of them)."""

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    props: dict[str, ET.Element] = {}

    def put(name: str, value: str | None, **attrs: str) -> None:
        if value is not None and want(name):
            props[name] = el(f"t:{name}", value, **attrs)

    if mime and item.mime is not None:
        props["MimeContent"] = el("t:MimeContent", base64.b64encode(item.mime).decode(), CharacterSet="UTF-8")
    props["ItemId"] = el("t:ItemId", Id=item.id, ChangeKey=item.change_key)
    if want("ParentFolderId"):
        props["ParentFolderId"] = el("t:ParentFolderId", Id=item.folder.id, ChangeKey=item.folder.change_key)
    put("ItemClass", item.item_class)
    put("Subject", item.subject())
    put("Sensitivity", "Normal")
    if want("Body") and item.mime is not None:
        props["Body"] = el("t:Body", _text_body(item.mime), BodyType="Text")
    put("DateTimeReceived", format_time(item.received))
    size = len(item.mime) if item.mime is not None else 0
    put("Size", str(size))
    if want("Categories") and item.categories:
        cats = el("t:Categories")
        for name in item.categories:
            sub(cats, "t:String", name)
        props["Categories"] = cats
    put("Importance", "Normal")
    put("DateTimeSent", mime_date(item) or (format_time(item.received) if item.tag == "Message" else None))
    put("DateTimeCreated", format_time(item.created))
    put("LastModifiedTime", format_time(item.modified))
    if item.tag == "Message":
        if want("ResponseObjects"):
            objects = el("t:ResponseObjects")
            for name in ("ReplyToItem", "ReplyAllToItem", "ForwardItem"):
                sub(objects, f"t:{name}")
            props["ResponseObjects"] = objects
        content_type = item.headers.get("content-type", "")
        put("HasAttachments", "true" if content_type.lower().startswith("multipart/mixed") else "false")
        for name, header in (("ToRecipients", "to"), ("CcRecipients", "cc"), ("ReplyTo", "reply-to")):
            value = _recipients(f"t:{name}", item.headers.get(header)) if want(name) else None
            if value is not None:
                props[name] = value
        for name, header in (("DisplayTo", "to"), ("DisplayCc", "cc")):
            names = [n or a for n, a in email.utils.getaddresses([item.headers.get(header, "")]) if n or a]
            put(name, "; ".join(names) if names else None)
        put("IsReadReceiptRequested", "false")
        put("IsDeliveryReceiptRequested", "false")
        # Exchange fills Sender from From when the message has no Sender header
        for name, header in (("From", "from"), ("Sender", "sender" if "sender" in item.headers else "from")):
            value = _mailbox_elem(f"t:{name}", item.headers.get(header)) if want(name) else None
            if value is not None:
                props[name] = value
        put("InReplyTo", item.headers.get("in-reply-to"))
        put("References", item.headers.get("references"))
        put("ConversationTopic", item.subject())
        put("InternetMessageId", item.headers.get("message-id"))
        put("IsRead", "true" if item.is_read else "false")
        if want("InternetMessageHeaders") and item.headers:
            headers = el("t:InternetMessageHeaders")
            for header_name, header_value in item.header_list:
                sub(headers, "t:InternetMessageHeader", header_value, HeaderName=header_name)
            props["InternetMessageHeaders"] = headers
    if item.tag == "CalendarItem":
        props.update({name: value for name, value in occurrences.properties(item).items() if want(name)})
    for name, value in item.fields.items():
        # extended properties only when named (AllProperties does not give them, as in Exchange)
        if want(name) and (not name.startswith("ExtendedProperty:") or (wanted is not None and name in wanted)):
            props[name] = copy.deepcopy(value)
    return props


def item_element(item: Item, shape: Shape) -> ET.Element:
    """<t:Message> (or Contact, CalendarItem) answering ``shape``."""
    if shape.base == "IdOnly":
        wanted: set[str] | None = {"ItemId"} | shape.extra
    elif shape.base == "AllProperties":
        wanted = None
    else:
        wanted = set(MESSAGE_DEFAULT if item.tag == "Message" else OTHER_DEFAULT) | shape.extra
    props = item_properties(item, wanted, shape.mime)
    elem = el(f"t:{item.tag}")
    for name in sorted(props, key=lambda n: _RANK.get(n.partition(":")[0], len(_RANK))):
        elem.append(props[name])
    return elem


def folder_element(mailbox: Mailbox, folder: Folder, shape: Shape) -> ET.Element:
    if shape.base == "IdOnly":
        names = ["FolderId"]
    elif shape.base == "AllProperties":
        names = list(FOLDER_ALL)
    else:
        names = list(FOLDER_DEFAULT)
    names += [n for n in FOLDER_ALL if n in shape.extra and n not in names]
    names.sort(key=FOLDER_ALL.index)
    tag = {"IPF.Appointment": "CalendarFolder", "IPF.Contact": "ContactsFolder", "IPF.Task": "TasksFolder"}
    elem = el(f"t:{tag.get(folder.folder_class or '', 'Folder')}")
    for name in names:
        if name == "FolderId":
            sub(elem, "t:FolderId", Id=folder.id, ChangeKey=folder.change_key)
        elif name == "ParentFolderId" and folder.parent is not None:
            sub(elem, "t:ParentFolderId", Id=folder.parent.id, ChangeKey=folder.parent.change_key)
        elif name == "FolderClass" and folder.folder_class:
            sub(elem, "t:FolderClass", folder.folder_class)
        elif name == "DisplayName":
            sub(elem, "t:DisplayName", folder.name)
        elif name == "TotalCount":
            sub(elem, "t:TotalCount", str(len(folder.items)))
        elif name == "ChildFolderCount":
            sub(elem, "t:ChildFolderCount", str(len(folder.children(mailbox))))
        elif name == "UnreadCount":
            sub(elem, "t:UnreadCount", str(sum(1 for i in folder.items.values() if not i.is_read)))
    return elem


def merge_field(item: Item, value: ET.Element) -> None:
    """Set one property from a SetItemField / CreateItem child (indexed containers merge by Key)."""
    name = local(value)
    if name == "IsRead":
        item.is_read = (value.text or "").strip().lower() == "true"
    elif name == "Categories":
        item.categories = [s.text or "" for s in value]
    elif name in ("ItemId", "MimeContent", "ParentFolderId"):
        return
    elif name == "ExtendedProperty":
        uri = value.find(q("t:ExtendedFieldURI"))
        if uri is not None:
            item.fields[extended_key(uri)] = copy.deepcopy(value)
    elif name in INDEXED.values() and name in item.fields:
        existing = item.fields[name]
        for entry in value:
            for old in [e for e in existing if e.get("Key") == entry.get("Key")]:
                existing.remove(old)
            existing.append(copy.deepcopy(entry))
    else:
        item.fields[name] = copy.deepcopy(value)
        text = (value.text or "").strip()
        if name in TIMES and len(text) > 19 and text[19:] not in ("Z", ".000Z"):
            # Exchange keeps instants and answers them in UTC (a time with an offset is converted)
            with contextlib.suppress(ValueError):
                when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                if when.tzinfo is not None:
                    item.fields[name].text = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if name in BOOLEANS and (value.text or "").strip() in ("0", "1"):
            # xs:boolean allows 0/1 (exchangelib sends them); Exchange answers true/false
            item.fields[name].text = "true" if value.text.strip() == "1" else "false"


def delete_field(item: Item, uri: ET.Element) -> None:
    name = field_name(uri.get("FieldURI") or "")
    if uri.tag == q("t:ExtendedFieldURI"):
        item.fields.pop(extended_key(uri), None)
    elif name == "Categories":
        item.categories = []
    elif uri.tag == q("t:IndexedFieldURI") and name in item.fields:
        container = item.fields[name]
        for entry in [e for e in container if e.get("Key") == uri.get("FieldIndex")]:
            container.remove(entry)
    else:
        item.fields.pop(name, None)
