"""The mailbox's Exchange contacts as a sync target: vCard <-> EWS Contact.

What Exchange holds of a card: the formatted name, given/middle/family name
and suffix, three e-mail addresses, one phone number per Exchange label
(BusinessPhone, MobilePhone, ...), one address each of Business, Home and
Other, the company, the job title, the note and the categories.  Everything
else of the card stays in the kept copy (see ``target.py``)."""

from __future__ import annotations

from typing import Any

import vobject
from exchangelib import Contact
from exchangelib.indexed_properties import EmailAddress, PhoneNumber, PhysicalAddress

from mailfiler.sources.ews.settings import EwsSettings
from mailfiler.sources.ews.target import EwsItemTarget

#: vCard TYPE sets -> Exchange phone labels, first match wins (and a second phone of a
#: label takes the label's spare, if it has one)
_PHONE_LABELS: tuple[tuple[set[str], str, str | None], ...] = (
    ({"cell"}, "MobilePhone", None),
    ({"work", "fax"}, "BusinessFax", None),
    ({"home", "fax"}, "HomeFax", None),
    ({"fax"}, "OtherFax", None),
    ({"pager"}, "Pager", None),
    ({"car"}, "CarPhone", None),
    ({"work"}, "BusinessPhone", "BusinessPhone2"),
    ({"home"}, "HomePhone", "HomePhone2"),
    (set(), "OtherTelephone", "PrimaryPhone"),
)
_PHONE_TYPES = {
    "MobilePhone": ["CELL"],
    "BusinessFax": ["WORK", "FAX"],
    "HomeFax": ["HOME", "FAX"],
    "OtherFax": ["FAX"],
    "Pager": ["PAGER"],
    "CarPhone": ["CAR"],
    "BusinessPhone": ["WORK"],
    "BusinessPhone2": ["WORK"],
    "HomePhone": ["HOME"],
    "HomePhone2": ["HOME"],
    "CompanyMainPhone": ["WORK"],
    "AssistantPhone": ["WORK"],
}
_ADR_LABELS = {"work": "Business", "home": "Home"}
_ADR_TYPES = {"Business": "WORK", "Home": "HOME", "Other": ""}
#: Exchange field -> the vCard properties it is written to
_PROPS = {
    "display_name": ("fn",),
    "given_name": ("n",),
    "middle_name": ("n",),
    "surname": ("n",),
    "generation": ("n",),
    "email_addresses": ("email",),
    "phone_numbers": ("tel",),
    "physical_addresses": ("adr",),
    "company_name": ("org",),
    "job_title": ("title",),
    "body": ("note",),
    "categories": ("categories",),
}


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value).strip()
    return str(value or "").strip()


def _types(line: Any) -> set[str]:
    out: set[str] = set()
    for t in line.params.get("TYPE", []):
        out.update(p.strip().lower() for p in str(t).split(",") if p.strip())
    return out


def read_card(data: bytes) -> Any:
    try:
        card = vobject.readOne(data.decode("utf-8", "replace"))
    except Exception as exc:  # vobject raises many types on broken input
        raise ValueError(f"broken vCard: {exc}") from exc
    if getattr(card, "name", "").upper() != "VCARD":
        raise ValueError("not a vCard")
    return card


def contact_values(data: bytes) -> dict[str, Any]:
    """exchangelib Contact fields for a vCard."""
    c = read_card(data).contents
    values: dict[str, Any] = {name: None for name in ContactsTarget.fields}
    if "n" in c:
        n = c["n"][0].value
        values["given_name"] = _text(n.given) or None
        values["middle_name"] = _text(n.additional) or None
        values["surname"] = _text(n.family) or None
        values["generation"] = _text(n.suffix) or None
    values["display_name"] = _text(c["fn"][0].value) if "fn" in c else None
    emails = [_text(line.value) for line in c.get("email", []) if _text(line.value)]
    values["email_addresses"] = [EmailAddress(email=e, label=f"EmailAddress{i + 1}") for i, e in enumerate(emails[:3])]
    phones: dict[str, str] = {}
    for line in c.get("tel", []):
        number, types = _text(line.value), _types(line)
        for wanted, label, spare in _PHONE_LABELS:
            if wanted <= types:
                for choice in (label, spare):
                    if choice is not None and choice not in phones and number:
                        phones[choice] = number
                        break
                break
    values["phone_numbers"] = [PhoneNumber(label=k, phone_number=v) for k, v in phones.items()]
    addresses: dict[str, PhysicalAddress] = {}
    for line in c.get("adr", []):
        adr, types = line.value, _types(line)
        label = next((v for k, v in _ADR_LABELS.items() if k in types), "Other")
        if label not in addresses:
            addresses[label] = PhysicalAddress(
                label=label,
                street=_text(adr.street) or None,
                city=_text(adr.city) or None,
                state=_text(adr.region) or None,
                country=_text(adr.country) or None,
                zipcode=_text(adr.code) or None,
            )
    values["physical_addresses"] = list(addresses.values())
    if "org" in c:
        org = c["org"][0].value
        values["company_name"] = _text(org[0] if isinstance(org, list) and org else org) or None
    values["job_title"] = _text(c["title"][0].value) if "title" in c else None
    notes = "\n".join(_text(line.value) for line in c.get("note", []))
    values["body"] = notes or None
    values["categories"] = _categories(c.get("categories", [])) or None
    values["_uid"] = _text(c["uid"][0].value) if "uid" in c else None
    return values


def _categories(lines: list[Any]) -> list[str]:
    """CATEGORIES (one or more lines, comma-separated): Outlook's categories, as a user marks items."""
    out: list[str] = []
    for line in lines:
        value = line.value
        out.extend(_text(v) for v in (value if isinstance(value, list) else str(value).split(",")))
    return [c for c in out if c]


def render_card(values: dict[str, Any], kept: bytes | None, uid: str, changed: set[str]) -> bytes:
    """A vCard of a contact's Exchange fields: the kept card with the properties of the
    *changed* fields replaced (its other properties stay)."""
    card = read_card(kept) if kept is not None else vobject.vCard()
    if kept is None:
        card.add("version").value = "3.0"
        card.add("uid").value = uid
    props = {prop for name in changed for prop in _PROPS.get(name, ())}
    old: dict[str, list[Any]] = {}
    for name in props:
        old[name] = list(card.contents.get(name, []))
        for line in old[name]:
            card.remove(line)
    given, middle, family = (values.get(k) or "" for k in ("given_name", "middle_name", "surname"))
    if "n" in props:
        prefix = _text(old["n"][0].value.prefix) if old.get("n") else ""  # Exchange cannot hold it; kept
        card.add("n").value = vobject.vcard.Name(
            family=family, given=given, additional=middle, prefix=prefix, suffix=values.get("generation") or ""
        )
    if "fn" in props:
        card.add("fn").value = values.get("display_name") or " ".join(x for x in (given, family) if x)
    if "email" in props:
        for entry in sorted(values.get("email_addresses") or [], key=lambda e: e.label):
            card.add("email").value = entry.email
        for line in old["email"][3:]:  # Exchange holds three; the others stay
            card.add(line)
    if "tel" in props:
        _add_phones(card, values)
    if "adr" in props:
        _add_addresses(card, values)
    if "org" in props and values.get("company_name"):
        card.add("org").value = [values["company_name"]]
    if "title" in props and values.get("job_title"):
        card.add("title").value = values["job_title"]
    if "note" in props and values.get("body"):
        card.add("note").value = str(values["body"])
    if "categories" in props and values.get("categories"):
        card.add("categories").value = list(values["categories"])
    if "fn" not in card.contents:  # a vCard must have one
        card.add("fn").value = values.get("display_name") or ""
    return card.serialize().encode()


def _add_phones(card: Any, values: dict[str, Any]) -> None:
    for entry in values.get("phone_numbers") or []:
        if entry.phone_number:
            line = card.add("tel")
            line.value = entry.phone_number
            kinds = _PHONE_TYPES.get(entry.label)
            if kinds:
                line.params["TYPE"] = kinds


def _add_addresses(card: Any, values: dict[str, Any]) -> None:
    for entry in values.get("physical_addresses") or []:
        line = card.add("adr")
        line.value = vobject.vcard.Address(
            street=entry.street or "",
            city=entry.city or "",
            region=entry.state or "",
            code=entry.zipcode or "",
            country=entry.country or "",
        )
        if _ADR_TYPES.get(entry.label):
            line.params["TYPE"] = [_ADR_TYPES[entry.label]]


class ContactsTarget(EwsItemTarget):
    """The mailbox's Contacts folder (or a folder of that name below it)."""

    item_cls = Contact
    fields = (
        "display_name",
        "given_name",
        "middle_name",
        "surname",
        "generation",
        "email_addresses",
        "phone_numbers",
        "physical_addresses",
        "company_name",
        "job_title",
        "body",
        "categories",
    )
    distinguished = "contacts"
    folder_class = "IPF.Contact"

    def __init__(self, settings: EwsSettings, folder: str | None = None) -> None:
        super().__init__("contacts", settings, folder)

    def uid_of(self, data: bytes) -> str:
        card = read_card(data)
        uid = _text(card.contents["uid"][0].value) if "uid" in card.contents else ""
        if not uid:
            raise ValueError("the vCard has no UID")
        return uid

    def to_values(self, data: bytes) -> dict[str, Any]:
        return contact_values(data)

    def render(self, values: dict[str, Any], kept: bytes | None, uid: str, changed: set[str]) -> bytes:
        return render_card(values, kept, uid, changed)
