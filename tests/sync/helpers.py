"""Helpers for the sync tests: a mailbox, an engine over vdir folders, CRM items."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw

from mailfiler.config.syncschema import SyncFilter
from mailfiler.sources.target import Target
from mailfiler.store.models import Mailbox, Record
from mailfiler.store.records import ensure_user
from mailfiler.sync import ical, vcard
from mailfiler.sync.crm import AppointmentStore, ContactStore
from mailfiler.sync.engine import Collection, Policy, Result, SyncEngine
from mailfiler.sync.items import empty_fields
from mailfiler.sync.vdir import VdirTarget

OWNER = "anna@example.com"


def make_mailbox(name: str = "anna", owner: str = OWNER) -> Mailbox:
    user = ensure_user(owner)
    row, _ = Mailbox.get_or_create(name=name, defaults={"owner": owner, "owner_record": user})
    return row


def policy(**kw: Any) -> Policy:
    kw.setdefault("filters", [SyncFilter(all=True)])
    return Policy(**kw)


@dataclass
class Rig:
    """A mailbox with a contacts and a calendar collection on disk, and an engine."""

    db: pw.Database
    root: Path
    mailbox: Mailbox
    contacts_policy: Policy = field(default_factory=policy)
    calendar_policy: Policy = field(default_factory=policy)
    contacts_target: Target | None = None
    calendar_target: Target | None = None
    extra: list[Collection] = field(default_factory=list)
    force_delete: bool = False

    def __post_init__(self) -> None:
        self.contacts_target = self.contacts_target or VdirTarget("contacts", self.root / "contacts")
        self.calendar_target = self.calendar_target or VdirTarget("calendar", self.root / "calendar")

    @property
    def contacts_dir(self) -> Path:
        return self.root / "contacts"

    @property
    def calendar_dir(self) -> Path:
        return self.root / "calendar"

    def engine(self) -> SyncEngine:
        return SyncEngine(
            self.db,
            self.mailbox,
            {"contacts": self.contacts_policy, "calendar": self.calendar_policy},
            state_dir=self.root / "state",
            force_delete=self.force_delete,
        )

    async def sync(self, kind: str | None = None) -> list[Result]:
        colls = []
        if kind in (None, "contacts"):
            colls.append(Collection(self.contacts_target))
        if kind in (None, "calendar"):
            colls.append(Collection(self.calendar_target))
        colls += [c for c in self.extra if kind in (None, c.kind)]
        return await self.engine().sync(colls)

    async def sync_ok(self, kind: str | None = None) -> list[Result]:
        results = await self.sync(kind)
        for r in results:
            assert r.state == "ok", (r.kind, r.errors)
        return results

    # --- the user's side -------------------------------------------------------------

    def files(self, kind: str = "contacts") -> dict[str, bytes]:
        folder = self.contacts_dir if kind == "contacts" else self.calendar_dir
        ext = ".vcf" if kind == "contacts" else ".ics"
        if not folder.exists():
            return {}
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name.endswith(ext)}

    def parsed(self, kind: str = "contacts") -> dict[str, Any]:
        codec = vcard if kind == "contacts" else ical
        return {name: codec.parse(data) for name, data in self.files(kind).items()}

    def by_name(self) -> dict[str, dict[str, Any]]:
        """The user's contacts by display name."""
        return {p.fields["name"]: p.fields for p in self.parsed("contacts").values()}

    def write_item(self, kind: str, name: str, data: bytes) -> Path:
        folder = self.contacts_dir if kind == "contacts" else self.calendar_dir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.rename(path)
        return path

    def edit_contact(self, filename: str, **changes: Any) -> None:
        path = self.contacts_dir / filename
        parsed = vcard.parse(path.read_bytes())
        fields = {**parsed.fields, **changes}
        self.write_item(
            "contacts", filename, vcard.render(fields, set(changes), uid=parsed.uid, existing=path.read_bytes())
        )

    def file_of(self, name: str, kind: str = "contacts") -> str:
        key = "name" if kind == "contacts" else "subject"
        for filename, parsed in self.parsed(kind).items():
            if parsed.fields[key] == name:
                return filename
        raise KeyError(name)


# --- the CRM side ------------------------------------------------------------------------


def crm_contact(key: str, name: str, *, owner: str | None = OWNER, parent: Record | None = None, **fields: Any) -> int:
    f = empty_fields("contacts")
    f.update(name=name, **fields)
    rec = Record.create(entity="contact", key=key, name=name, parent=parent)
    from mailfiler.store.detailmodels import ContactDetails

    ContactDetails.create(record=rec, owner=owner)
    ContactStore().write(rec.id, {k: v for k, v in f.items() if k != "name"})
    return rec.id


def crm_contacts() -> dict[str, dict[str, Any]]:
    """The CRM's contacts by name."""
    return {it.fields["name"]: it.fields for it in ContactStore().load_all().values()}


def crm_appointment(uid: str, subject: str, start: str, end: str | None = None, *, owner: str | None = OWNER,
                    regarding: Record | None = None, **fields: Any) -> int:  # fmt: skip
    f = empty_fields("calendar")
    f.update(subject=subject, start=start, end=end, **fields)
    mailbox = Mailbox.select().first()
    return AppointmentStore().create(f, uid=uid, owner=owner, mailbox=mailbox, regarding=regarding)


def crm_appointments() -> dict[str, dict[str, Any]]:
    return {it.fields["subject"]: it.fields for it in AppointmentStore().load_all().values()}
