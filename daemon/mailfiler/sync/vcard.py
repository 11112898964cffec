"""vCard (3.0 and 4.0, via vobject) to contact fields and back.

Writing merges into the user's card: only the properties of the fields
being written are replaced, so a photo, a birthday or a client's X-
properties survive a sync, and an e-mail address or phone number that did
not change keeps its TYPE and spelling.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import vobject

from mailfiler.sync.items import ADDRESS_PARTS, Fields, ParsedItem, empty_fields
from mailfiler.sync.parsing import ItemParseError, decode_text, parse_stamp

#: field -> the vCard properties it is written to
_PROPS = {
    "name": ("fn",),
    "given_name": ("n",),
    "family_name": ("n",),
    "additional_names": ("n",),
    "prefix": ("n",),
    "suffix": ("n",),
    "emails": ("email",),
    "phones": ("tel",),
    "company": ("org",),
    "job_title": ("title",),
    "addresses": ("adr",),
    "notes": ("note",),
}
_N_PARTS = (
    ("family_name", "family"),
    ("given_name", "given"),
    ("additional_names", "additional"),
    ("prefix", "prefix"),
    ("suffix", "suffix"),
)
_ADR_PARTS = (
    ("po_box", "box"),
    ("extended", "extended"),
    ("street", "street"),
    ("locality", "city"),
    ("region", "region"),
    ("postal_code", "code"),
    ("country", "country"),
)


def _text(value: Any) -> str:
    """vobject gives a list for a component with commas in it; the fields hold one string."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value).strip()
    return str(value or "").strip()


def _kind(line: Any) -> str:
    types = line.params.get("TYPE", [])
    parts: list[str] = []
    for t in types:
        parts.extend(p.strip().lower() for p in str(t).split(",") if p.strip())
    return ",".join(sorted(set(parts)))


def _read(data: bytes) -> Any:
    text = decode_text(data)
    if "BEGIN:VCARD" not in text.upper():
        raise ItemParseError("not a vCard: no BEGIN:VCARD line", reason="bad-vcard")
    try:
        card = vobject.readOne(text)
    except Exception as exc:  # vobject raises many types on broken input; all mean "unreadable"
        raise ItemParseError(f"broken vCard: {exc}", reason="bad-vcard") from exc
    if getattr(card, "name", "").upper() != "VCARD":
        raise ItemParseError(f"not a vCard: the item is a {card.name}", reason="bad-vcard")
    return card


def parse(data: bytes, *, default_uid: str = "") -> ParsedItem:
    """Read a vCard; raises :class:`ItemParseError` with the reason."""
    card = _read(data)
    try:
        return _fields(card, default_uid)
    except ItemParseError:
        raise
    except Exception as exc:  # a property vobject could not decode
        raise ItemParseError(f"broken vCard: {type(exc).__name__}: {exc}", reason="bad-vcard") from exc


def _fields(card: Any, default_uid: str) -> ParsedItem:
    c = card.contents
    f = empty_fields("contacts")
    if "n" in c:
        n = c["n"][0].value
        for field, attr in _N_PARTS:
            f[field] = _text(getattr(n, attr, ""))
    f["name"] = _text(c["fn"][0].value) if "fn" in c else ""
    if not f["name"]:
        f["name"] = " ".join(x for x in (f["given_name"], f["family_name"]) if x)
    f["emails"] = sorted({_text(line.value).lower() for line in c.get("email", []) if _text(line.value)})
    f["phones"] = [[_kind(line), _text(line.value)] for line in c.get("tel", []) if _text(line.value)]
    if "org" in c:
        org = c["org"][0].value
        f["company"] = _text(org[0] if isinstance(org, list) and org else org)
    f["job_title"] = _text(c["title"][0].value) if "title" in c else ""
    addresses = []
    for line in c.get("adr", []):
        adr = line.value
        item = {"kind": _kind(line)}
        for field, attr in _ADR_PARTS:
            item[field] = _text(getattr(adr, attr, ""))
        if any(item[p] for p in ADDRESS_PARTS[1:]):
            addresses.append(item)
    f["addresses"] = addresses
    f["notes"] = "\n".join(_text(line.value) for line in c.get("note", []))
    categories: list[str] = []
    for line in c.get("categories", []):
        value = line.value
        categories.extend(_text(v) for v in (value if isinstance(value, list) else str(value).split(",")))
    uid = _text(c["uid"][0].value) if "uid" in c else default_uid
    if not uid:
        raise ItemParseError("the vCard has no UID", reason="bad-vcard")
    modified = parse_stamp(_text(c["rev"][0].value)) if "rev" in c else None
    return ParsedItem(uid=uid, fields=f, categories=[x for x in categories if x], modified=modified)


def render(fields: Fields, write: set[str], *, uid: str, existing: bytes | None = None) -> bytes:
    """The user's card (or a new vCard 3.0) with the *write* fields set from *fields*."""
    card = _read(existing) if existing else None
    if card is None:
        card = vobject.vCard()
        card.add("version").value = "3.0"
    c = card.contents
    if "uid" not in c:
        card.add("uid").value = uid or str(uuid.uuid4())
    props = {p for name in write for p in _PROPS[name]}
    if "fn" in props or "fn" not in c:
        _set_single(card, "fn", fields.get("name") or _display(fields) or "(no name)")
    if "n" in props or "n" not in c:
        _replace(card, "n", [])
        old = {attr: "" for _, attr in _N_PARTS}
        old.update({attr: fields.get(field, "") or "" for field, attr in _N_PARTS})
        card.add("n").value = vobject.vcard.Name(**old)
    if "email" in props:
        _write_emails(card, fields.get("emails") or [])
    if "tel" in props:
        _write_phones(card, fields.get("phones") or [])
    if "org" in props:
        units = c["org"][0].value[1:] if "org" in c and isinstance(c["org"][0].value, list) else []
        _replace(card, "org", [])
        if fields.get("company"):
            card.add("org").value = [fields["company"], *units]
    if "title" in props:
        _set_single(card, "title", fields.get("job_title") or "")
    if "adr" in props:
        _replace(card, "adr", [])
        for item in fields.get("addresses") or []:
            line = card.add("adr")
            line.value = vobject.vcard.Address(**{attr: item.get(field, "") for field, attr in _ADR_PARTS})
            if item.get("kind"):
                line.params["TYPE"] = item["kind"].split(",")
    if "note" in props:
        _set_single(card, "note", fields.get("notes") or "")
    if write:
        _set_single(card, "rev", dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    return card.serialize().encode()


def _display(fields: Fields) -> str:
    return " ".join(x for x in (fields.get("given_name"), fields.get("family_name")) if x)


def _replace(card: Any, name: str, keep: list[Any]) -> None:
    for line in list(card.contents.get(name, [])):
        if line not in keep:
            card.remove(line)


def _set_single(card: Any, name: str, value: str) -> None:
    _replace(card, name, [])
    if value:
        card.add(name).value = value


def _write_emails(card: Any, emails: list[str]) -> None:
    wanted = {e.lower() for e in emails}
    keep = [line for line in card.contents.get("email", []) if _text(line.value).lower() in wanted]
    _replace(card, "email", keep)
    have = {_text(line.value).lower() for line in keep}
    for address in emails:
        if address.lower() not in have:
            card.add("email").value = address
            have.add(address.lower())


def _write_phones(card: Any, phones: list[list[str]]) -> None:
    # order carries meaning (the first is the one a client dials), so rebuild
    # the list; an unchanged number keeps its line and parameters
    old = list(card.contents.get("tel", []))
    _replace(card, "tel", [])
    for kind, number in phones:
        line = next((x for x in old if _kind(x) == kind and _text(x.value) == number), None)
        new = card.add("tel")
        new.value = number
        if line is not None:
            new.params = dict(line.params)
            old.remove(line)
        elif kind:
            new.params["TYPE"] = kind.split(",")
