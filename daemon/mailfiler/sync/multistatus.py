"""Reading a WebDAV multistatus (``207``) reply: what the collection client
(:mod:`mailfiler.sync.dav`) and discovery (:mod:`mailfiler.sync.discovery`) both
parse, in a module of its own so that neither imports the other for it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

D = "DAV:"


@dataclass
class Member:
    """One ``<D:response>`` of a multistatus."""

    path: str  # unquoted URL path
    status: int | None  # the response-level status, when given
    props: dict[str, ET.Element] = field(default_factory=dict)  # found (200) properties

    def text(self, clark: str) -> str | None:
        el = self.props.get(clark)
        return None if el is None else (el.text or "")

    def is_collection(self) -> bool:
        rt = self.props.get(f"{{{D}}}resourcetype")
        return rt is not None and rt.find(f"{{{D}}}collection") is not None


def status_code(text: str | None) -> int | None:
    # "HTTP/1.1 404 Not Found"
    parts = (text or "").split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def url_path(href: str) -> str:
    return unquote(urlsplit(href.strip()).path)


def parse_multistatus(content: bytes) -> tuple[list[Member], str | None]:
    """The responses of a 207 body and its ``DAV:sync-token`` (RFC 4918 §14.16, RFC 6578 §6.4).

    Raises ValueError on a body that is not a multistatus."""
    try:
        root = ET.fromstring(content)  # expat >= 2.4.1 refuses entity-expansion bombs; no external entities
    except ET.ParseError as exc:
        raise ValueError(f"the reply is not XML ({exc})") from None
    if root.tag != f"{{{D}}}multistatus":
        raise ValueError(f"expected a DAV:multistatus, got {root.tag}")
    members = []
    for resp in root.findall(f"{{{D}}}response"):
        href = resp.find(f"{{{D}}}href")
        if href is None or not (href.text or "").strip():
            continue
        member = Member(url_path(href.text or ""), status_code(resp.findtext(f"{{{D}}}status")))
        for propstat in resp.findall(f"{{{D}}}propstat"):
            code = status_code(propstat.findtext(f"{{{D}}}status"))
            prop = propstat.find(f"{{{D}}}prop")
            if prop is None or (code is not None and not 200 <= code < 300):
                continue
            for el in prop:
                member.props[el.tag] = el
        members.append(member)
    token = root.findtext(f"{{{D}}}sync-token")
    return members, (token.strip() if token else None)
