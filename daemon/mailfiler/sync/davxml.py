"""The WebDAV XML of a CalDAV or CardDAV target: namespaces, each collection
kind's names, request bodies and headers, and the bits read from replies
(dates, CRLF line ends, an error's reason).  The multistatus itself is read by
:mod:`mailfiler.sync.multistatus`."""

from __future__ import annotations

import datetime as dt
import email.utils
import xml.etree.ElementTree as ET

import httpx

D, C, CR = "DAV:", "urn:ietf:params:xml:ns:caldav", "urn:ietf:params:xml:ns:carddav"
XML_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'

KIND = {
    "calendar": {
        "backend": "caldav",
        "noun": "calendar",
        "resourcetype": f"{{{C}}}calendar",
        "multiget": "C:calendar-multiget",
        "data": f"{{{C}}}calendar-data",
        "data_tag": "C:calendar-data",
        "content_type": "text/calendar; charset=utf-8",
    },
    "contacts": {
        "backend": "carddav",
        "noun": "address book",
        "resourcetype": f"{{{CR}}}addressbook",
        "multiget": "CR:addressbook-multiget",
        "data": f"{{{CR}}}address-data",
        "data_tag": "CR:address-data",
        "content_type": "text/vcard; charset=utf-8",
    },
}


def xml_body(root: str, body: str) -> bytes:
    return (f'{XML_HEAD}<{root} xmlns:D="{D}" xmlns:C="{C}" xmlns:CR="{CR}">{body}</{root}>').encode()


def xml_headers(depth: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/xml; charset=utf-8"}
    if depth is not None:
        headers["Depth"] = depth
    return headers


def props(*tags: str) -> str:
    return "<D:prop>" + "".join(f"<{t}/>" for t in tags) + "</D:prop>"


def http_date(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def crlf(text: str) -> bytes:
    # an XML parser turns CRLF into LF (XML 1.0 §2.11); iCalendar and vCard lines end in CRLF
    if "\r\n" not in text and "\n" in text:
        text = text.replace("\n", "\r\n")
    return text.encode("utf-8")


def error_reason(resp: httpx.Response) -> str:
    """A short reason from an error body: a DAV precondition name, else the first line."""
    text = resp.text.strip() if resp.content and len(resp.content) < 20000 else ""
    if not text:
        return ""
    if text.startswith("<"):
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            return ""
        if root.tag == f"{{{D}}}error" and len(root):
            return ": " + root[0].tag.rsplit("}", 1)[-1]
        return ""
    return ": " + text.splitlines()[0][:200]
