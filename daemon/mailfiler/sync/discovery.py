"""Finding the calendar or address book from a server's or a user's URL, as
calendar apps do (RFC 6764 §6, RFC 4791 §6.2.1, RFC 6352 §7.1.1), for a
config that names ``https://dav.example.com/`` rather than the collection:

1. ``DAV:current-user-principal`` of the URL (a PROPFIND, Depth 0); when the
   URL does not say, of ``/.well-known/caldav`` or ``/.well-known/carddav``
   on the same server, following its redirect;
2. the principal's ``calendar-home-set`` or ``addressbook-home-set``;
3. the home's first calendar or address book (by URL, so the choice is the
   same every time); when it has none and the target may make one,
   ``mailfiler-calendar/`` or ``mailfiler-contacts/`` there (made by the
   first request, as any missing collection is).

Every step stays on the configured server: an href to another host is
refused (the login would go there).  The result is kept for the life of the
process, so a daemon asks once; it is logged, with the advice to put the
URL in the config.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from mailfiler.errors import SyncTargetUnavailable
from mailfiler.sync.davxml import CR, KIND, C, D, props, xml_body
from mailfiler.sync.multistatus import parse_multistatus

log = logging.getLogger("mailfiler.sync.dav")

#: (kind, configured URL, username) -> the collection found, for this process
discovered: dict[tuple[str, str, str | None], str] = {}
MAX_REDIRECTS = 5


_HOME = {"calendar": (f"{{{C}}}calendar-home-set", "C:calendar-home-set"),
         "contacts": (f"{{{CR}}}addressbook-home-set", "CR:addressbook-home-set")}  # fmt: skip
_TYPE = {kind: names["resourcetype"] for kind, names in KIND.items()}
_MADE = {"calendar": "mailfiler-calendar/", "contacts": "mailfiler-contacts/"}
_PRINCIPAL = (f"{{{D}}}current-user-principal", "D:current-user-principal")


def _propfind(*tags: str) -> bytes:
    return xml_body("D:propfind", props(*tags))


class Discovery:
    """The search, as a mixin of :class:`mailfiler.sync.dav.DavTarget` (which it uses to send)."""

    if TYPE_CHECKING:
        kind: str
        location: str
        noun: str
        backend: str
        _send: Callable[..., Awaitable[Any]]
        _unavailable: Callable[[str], SyncTargetUnavailable]
        _multistatus: Callable[..., tuple[list[Any], str | None]]

    async def _discover(self, create: bool) -> str:
        """The URL of this target's collection, found from ``location``; raises SyncTargetUnavailable."""
        principal = await self._href_prop(self.location, *_PRINCIPAL)
        if principal is None:
            well_known = urljoin(self.location, "/.well-known/" + ("caldav" if self.kind == "calendar" else "carddav"))
            principal = await self._href_prop(well_known, *_PRINCIPAL)
        if principal is None:
            raise self._unavailable(
                f"the URL is a plain WebDAV folder and the server names no principal to find the {self.noun}"
                f" from; give the URL of the {self.noun} itself"
            )
        home = await self._href_prop(principal, *_HOME[self.kind])
        if home is None:
            name = _HOME[self.kind][1].split(":")[1]
            raise self._unavailable(f"the principal {principal} has no {name}; is this a {self.backend} server?")
        home = home if home.endswith("/") else home + "/"
        found = await self._collections(home)
        if found:
            url, what = found[0], "found"
        elif create:
            url, what = urljoin(home, _MADE[self.kind]), "will make"
        else:
            raise self._unavailable(f"the home {home} holds no {self.noun}")
        others = ""
        if len(found) > 1:
            others = f" (the first of {len(found)}; the others are not synced: {', '.join(found[1:4])}"
            others += " ...)" if len(found) > 4 else ")"
        log.info(
            "%s: %s the %s %s%s; put that URL in the config to skip this search",
            self.location,
            what,
            self.noun,
            url,
            others,
            extra={"event": "sync-discovered", "collection": self.location, "url": url},
        )
        return url

    async def _href_prop(self, url: str, clark: str, tag: str) -> str | None:
        """The href inside property *tag* of *url* (Depth 0), redirects followed on the same server."""
        headers = {"Content-Type": "application/xml; charset=utf-8", "Depth": "0"}
        for _ in range(MAX_REDIRECTS):
            resp = await self._send("PROPFIND", url, headers=headers, content=_propfind(tag), redirects=True)
            if 300 <= resp.status_code < 400 and resp.headers.get("location"):
                url = self._same_server(urljoin(url, resp.headers["location"]))
                continue
            if resp.status_code != 207:
                return None
            try:
                members, _ = parse_multistatus(resp.content)
            except ValueError:
                return None
            for m in members:
                el: ET.Element | None = m.props.get(clark)
                href = el.findtext(f"{{{D}}}href") if el is not None else None
                if href and href.strip():
                    return self._same_server(urljoin(url, href.strip()))
            return None
        raise self._unavailable(f"more than {MAX_REDIRECTS} redirects from {url}")

    async def _collections(self, home: str) -> list[str]:
        """The calendars (or address books) in *home*, by URL."""
        headers = {"Content-Type": "application/xml; charset=utf-8", "Depth": "1"}
        resp = await self._send("PROPFIND", home, headers=headers, content=_propfind("D:resourcetype"))
        members, _ = self._multistatus(resp, "PROPFIND")
        scheme, netloc, home_path = urlsplit(home)[:3]
        out = []
        for m in members:
            rt = m.props.get(f"{{{D}}}resourcetype")
            if m.path.rstrip("/") == home_path.rstrip("/") or rt is None or rt.find(_TYPE[self.kind]) is None:
                continue
            path = m.path if m.path.endswith("/") else m.path + "/"
            out.append(urlunsplit((scheme, netloc, quote(path, safe="/@+=-._~"), "", "")))
        return sorted(out)

    def _same_server(self, url: str) -> str:
        here, there = urlsplit(self.location), urlsplit(url)
        if (there.scheme, there.netloc) != (here.scheme, here.netloc):
            raise self._unavailable(f"the server points to {url}, on another server; give the {self.noun}'s URL")
        return urlunsplit((there.scheme, there.netloc, there.path or "/", "", ""))


__all__ = ["Discovery"]
