"""The mailbox's contacts (the default contacts folder) as a sync target, and
Graph's contact JSON to vCard and back (vobject).

On the wire: ``list`` pages ``GET /contacts`` (ids, etags and our UID);
``changes_since`` follows the ``contacts/delta`` link; ``get_multi`` is one
``$batch`` per 20 contacts; ``upload`` is ``POST /contacts`` after making
sure no contact with the UID is there already (a sync that died between
the upload and its commit must not make a second one); ``update`` and
``delete`` are ``PATCH``/``DELETE`` with ``If-Match``.  (Graph filters on an
extended property's string value only for messages and events, so for
contacts "is there one with this UID" is answered by a listing, once a
session.)

Graph holds at most three e-mail addresses, two business and two home
numbers and one mobile; a card with more keeps the rest in our copy of its
text (they are not lost, Outlook just does not show them).
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from typing import Any

import vobject

from mailfiler.errors import SyncError
from mailfiler.sources.graph.targets import EXPAND, UID_PROP, GraphConnection, GraphTarget, Stash, digest
from mailfiler.sources.target import Changes, Fetched

_ADDRESS_KEYS = ("street", "city", "state", "postalCode", "countryOrRegion")
_NAME_KEYS = ("displayName", "givenName", "surname", "middleName", "title", "generation")
_ADDRESS_SLOTS = (("businessAddress", "work"), ("homeAddress", "home"), ("otherAddress", ""))


def _s(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value).strip()
    return str(value or "").strip()


def _types(line: Any) -> set[str]:
    out: set[str] = set()
    for t in line.params.get("TYPE", []):
        out.update(p.strip().lower() for p in str(t).split(",") if p.strip())
    return out


def graph_time(text: str | None) -> dt.datetime | None:
    """Graph's ``lastModifiedDateTime`` as naive UTC."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00")[:19])
    except ValueError:
        return None
    return value.replace(tzinfo=None)


# -- vCard -> Graph -----------------------------------------------------------------------


def read_card(data: bytes | str) -> Any:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    try:
        card = vobject.readOne(text)
    except Exception as exc:  # vobject raises many types on broken input
        raise SyncError(f"not a readable vCard: {exc}") from exc
    if getattr(card, "name", "").upper() != "VCARD":
        raise SyncError("not a vCard")
    return card


def card_uid(card: Any) -> str | None:
    return _s(card.contents["uid"][0].value) if "uid" in card.contents else None


def to_graph(card: Any) -> dict[str, Any]:
    """The contact fields Graph has, from a vCard: every field set (empty when the card has none),
    so a PATCH also clears what the card dropped."""
    c = card.contents
    n = c["n"][0].value if "n" in c else None
    name = _s(c["fn"][0].value) if "fn" in c else ""
    body: dict[str, Any] = {
        "displayName": name or " ".join(x for x in (_s(getattr(n, "given", "")), _s(getattr(n, "family", ""))) if x),
        "givenName": _s(getattr(n, "given", "")),
        "surname": _s(getattr(n, "family", "")),
        "middleName": _s(getattr(n, "additional", "")),
        "title": _s(getattr(n, "prefix", "")),
        "generation": _s(getattr(n, "suffix", "")),
    }
    emails: list[str] = []
    for line in c.get("email", []):
        address = _s(line.value)
        if address and address.lower() not in {e.lower() for e in emails}:
            emails.append(address)
    body["emailAddresses"] = [{"address": e, "name": body["displayName"]} for e in emails[:3]]
    mobile, business, home = None, [], []
    for line in c.get("tel", []):
        number, types = _s(line.value), _types(line)
        if not number:
            continue
        if ("cell" in types or "mobile" in types) and mobile is None:
            mobile = number
        elif "home" in types:
            home.append(number)
        elif "fax" not in types and "pager" not in types:
            business.append(number)
    body.update(mobilePhone=mobile or "", businessPhones=business[:2], homePhones=home[:2])
    org = c["org"][0].value if "org" in c else []
    org = org if isinstance(org, list) else [org]
    body["companyName"] = _s(org[0]) if org else ""
    body["department"] = _s(org[1]) if len(org) > 1 else ""
    body["jobTitle"] = _s(c["title"][0].value) if "title" in c else ""
    for slot, _ in _ADDRESS_SLOTS:
        body[slot] = {}
    for line in c.get("adr", []):
        types, adr = _types(line), line.value
        slot = "businessAddress" if "work" in types else "homeAddress" if "home" in types else "otherAddress"
        if body[slot]:
            continue  # Graph has one of each
        street = "\n".join(x for x in (_s(adr.box), _s(adr.extended), _s(adr.street)) if x)
        values = (street, _s(adr.city), _s(adr.region), _s(adr.code), _s(adr.country))
        if any(values):
            body[slot] = dict(zip(_ADDRESS_KEYS, values, strict=True))
    body["personalNotes"] = "\n".join(_s(line.value) for line in c.get("note", []))
    body["categories"] = card_categories(card)
    return body


def card_categories(card: Any) -> list[str]:
    """CATEGORIES, which Outlook shows as the contact's categories (a sync's ``category`` tracks by it)."""
    out: list[str] = []
    for line in card.contents.get("categories", []):
        value = line.value
        for cat in value if isinstance(value, list) else str(value).split(","):
            if _s(cat) and _s(cat) not in out:
                out.append(_s(cat))
    return out


def sigs(item: dict[str, Any]) -> dict[str, str]:
    """Per group of fields, a digest of Graph's values (as sent or as answered: empty is empty)."""

    def address(value: Any) -> list[str]:
        value = value if isinstance(value, dict) else {}
        return [_s(value.get(k)) for k in _ADDRESS_KEYS]

    return {
        "name": digest([_s(item.get(k)) for k in _NAME_KEYS]),
        "emails": digest(sorted(_s((e or {}).get("address")).lower() for e in item.get("emailAddresses") or [])),
        "phones": digest([_s(item.get("mobilePhone")), [_s(p) for p in item.get("businessPhones") or []],
                          [_s(p) for p in item.get("homePhones") or []]]),
        "org": digest([_s(item.get("companyName")), _s(item.get("department"))]),
        "title": digest(_s(item.get("jobTitle"))),
        "adr": digest([address(item.get(slot)) for slot, _ in _ADDRESS_SLOTS]),
        "note": digest(_s(item.get("personalNotes"))),
        "categories": digest(sorted(_s(c) for c in item.get("categories") or [])),
    }  # fmt: skip


# -- Graph -> vCard -----------------------------------------------------------------------


def _replace(card: Any, name: str) -> list[Any]:
    old = list(card.contents.get(name, []))
    for line in old:
        card.remove(line)
    return old


def _set(card: Any, name: str, value: str) -> None:
    _replace(card, name)
    if value:
        card.add(name).value = value


def _write_group(card: Any, group: str, item: dict[str, Any]) -> None:
    if group == "name":
        given, family = _s(item.get("givenName")), _s(item.get("surname"))
        _set(card, "fn", _s(item.get("displayName")) or " ".join(x for x in (given, family) if x) or "(no name)")
        _replace(card, "n")
        card.add("n").value = vobject.vcard.Name(
            family=family, given=given, additional=_s(item.get("middleName")),
            prefix=_s(item.get("title")), suffix=_s(item.get("generation")),
        )  # fmt: skip
    elif group == "emails":
        wanted = [_s((e or {}).get("address")) for e in item.get("emailAddresses") or []]
        old = {_s(line.value).lower(): line for line in _replace(card, "email")}
        for address in filter(None, wanted):
            line = card.add("email")
            line.value = address
            if address.lower() in old:
                line.params = dict(old[address.lower()].params)
    elif group == "phones":
        old = {_s(line.value): line for line in _replace(card, "tel")}
        numbers = [(item.get("mobilePhone"), "cell")]
        numbers += [(p, "work") for p in item.get("businessPhones") or []]
        numbers += [(p, "home") for p in item.get("homePhones") or []]
        for number, kind in numbers:
            if _s(number):
                line = card.add("tel")
                line.value = _s(number)
                before = old.get(_s(number))
                line.params = dict(before.params) if before is not None else {"TYPE": [kind]}
    elif group == "org":
        _replace(card, "org")
        org = [_s(item.get("companyName")), _s(item.get("department"))]
        if org[0] or org[1]:
            card.add("org").value = org if org[1] else org[:1]
    elif group == "title":
        _set(card, "title", _s(item.get("jobTitle")))
    elif group == "adr":
        _replace(card, "adr")
        for slot, kind in _ADDRESS_SLOTS:
            raw = item.get(slot)
            value = raw if isinstance(raw, dict) else {}
            parts = {k: _s(value.get(k)) for k in _ADDRESS_KEYS}
            if any(parts.values()):
                line = card.add("adr")
                line.value = vobject.vcard.Address(
                    street=parts["street"], city=parts["city"], region=parts["state"],
                    code=parts["postalCode"], country=parts["countryOrRegion"],
                )  # fmt: skip
                if kind:
                    line.params["TYPE"] = [kind]
    elif group == "note":
        _set(card, "note", _s(item.get("personalNotes")))
    elif group == "categories":
        _replace(card, "categories")
        cats = [_s(c) for c in item.get("categories") or [] if _s(c)]
        if cats:
            card.add("categories").value = cats


def from_graph(item: dict[str, Any]) -> bytes:
    """The contact as a vCard: the text we wrote while Graph's fields still match it, else
    that text (or a new card) with the groups Outlook changed rewritten from Graph."""
    stash = Stash.of(item)
    now = sigs(item)
    if stash.text is not None and now == stash.sigs:
        return stash.text.encode("utf-8")
    card = None
    if stash.text is not None:
        try:
            card = read_card(stash.text)
        except SyncError:
            card = None
    if card is None:
        card = vobject.vCard()
        card.add("version").value = "3.0"
        stash.sigs = {}
    if "uid" not in card.contents:
        card.add("uid").value = stash.uid or item["id"]
    for group, value in now.items():
        if stash.sigs.get(group) != value:
            _write_group(card, group, item)
    modified = graph_time(item.get("lastModifiedDateTime"))
    if modified is not None:
        _set(card, "rev", modified.strftime("%Y%m%dT%H%M%SZ"))
    return card.serialize().encode("utf-8")


class GraphContacts(GraphTarget):
    """The default contacts folder of a Graph mailbox."""

    collection = "/contacts"

    def __init__(self, connection: GraphConnection, location: str) -> None:
        super().__init__("contacts", connection, location)

    async def list(self) -> dict[str, str]:
        query = f"?$select=id&$expand=singleValueExtendedProperties($filter=id eq '{UID_PROP}')"
        items = await self._pages(self.collection + query)
        self.remember_uids(items)
        return {self.href(i["id"]): str(i.get("@odata.etag") or "") for i in items}

    async def find_uid(self, uid: str) -> str | None:
        # Graph documents $filter on a string extended property's value for messages and
        # events only: contacts are listed (once a session, with their UIDs) instead
        if self._uids is None:
            await self.list()
        return await super().find_uid(uid)

    async def changes_since(self, token: str | None) -> Changes | None:
        found = await self.delta(token, "/contacts/delta?$select=id")
        if found is None:
            return None
        items, link = found
        if token is None:
            return Changes(link)
        return self.changes_of(link, items, self.href)

    async def get_multi(self, hrefs: Sequence[str]) -> builtins.list[Fetched]:
        items = await self.fetch_items(hrefs, f"?$expand={EXPAND}")
        return [
            Fetched(h, str(items[h].get("@odata.etag") or ""), from_graph(items[h]),
                    graph_time(items[h].get("lastModifiedDateTime")))
            for h in hrefs if h in items
        ]  # fmt: skip

    def _body(self, data: bytes, uid: str) -> dict[str, Any]:
        card = read_card(data)
        body = to_graph(card)
        text = data.decode("utf-8", errors="replace")
        body["singleValueExtendedProperties"] = Stash.props(card_uid(card) or uid, text, sigs(body))
        return body

    async def upload(self, data: bytes, *, uid: str) -> tuple[str, str]:
        body = self._body(data, uid)
        await self.check_new(uid)
        made = await self.write("POST", self.collection, body, etag=None, href=uid)
        href = self.href(made["id"])
        self.uid_written(uid, href)
        return href, str(made.get("@odata.etag") or "")

    async def update(self, href: str, data: bytes, etag: str) -> str:
        body = self._body(data, "")
        answer = await self.write("PATCH", self.item_path(href), body, etag=etag, href=href)
        return str((answer or {}).get("@odata.etag") or "")
