"""Sync-back to vdir folders: a first sync of many contacts and appointments,
and a resync with no changes, beside writing the same items with no engine.

Not a test: prints medians (seconds) of --runs runs, each on a fresh SQLite
store and fresh folders.  The baseline is the bare cost of the files: render
every item and write it with the vdir target's atomic write, as a plain
client would.  Issue 5's target is a no-change resync under 1 s.

    .venv/bin/python bench/sync_vdir.py [--contacts 5000] [--appointments 5000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailfiler.config.syncschema import SyncFilter  # noqa: E402
from mailfiler.store import db as storedb  # noqa: E402
from mailfiler.store.db import transaction  # noqa: E402
from mailfiler.store.detailmodels import ContactDetails  # noqa: E402
from mailfiler.store.migrations import migrate  # noqa: E402
from mailfiler.store.models import Mailbox, Record  # noqa: E402
from mailfiler.store.records import ensure_user  # noqa: E402
from mailfiler.sync import ical, vcard  # noqa: E402
from mailfiler.sync.crm import AppointmentStore, ContactStore  # noqa: E402
from mailfiler.sync.engine import Collection, Policy, SyncEngine  # noqa: E402
from mailfiler.sync.items import APPOINTMENT_FIELDS, CONTACT_FIELDS, empty_fields  # noqa: E402
from mailfiler.sync.vdir import VdirTarget  # noqa: E402

OWNER = "anna@example.com"


def seed(n_contacts: int, n_appointments: int) -> Mailbox:
    user = ensure_user(OWNER)
    mailbox = Mailbox.create(name="anna", owner=OWNER, owner_record=user)
    account = Record.create(entity="account", key="contoso", name="Contoso AB")
    contacts, appointments = ContactStore(), AppointmentStore()
    with transaction(Record._meta.database):
        for i in range(n_contacts):
            rec = Record.create(entity="contact", key=f"c{i}", name=f"Kontakt Åberg {i}", parent=account)
            ContactDetails.create(record=rec, owner=OWNER)
            contacts.write(rec.id, {
                "given_name": "Kontakt", "family_name": f"Åberg {i}", "emails": [f"c{i}@contoso.com"],
                "phones": [["work", f"+46 40 {i:06d}"]], "job_title": "Säljare",
                "addresses": [{"kind": "work", "po_box": "", "extended": "", "street": f"Storgatan {i}",
                               "locality": "Malmö", "region": "", "postal_code": "211 34", "country": "Sverige"}],
            })  # fmt: skip
        for i in range(n_appointments):
            f = empty_fields("calendar")
            day = 1 + i % 28
            f.update(subject=f"Möte {i}", start=f"2024-03-{day:02d}T09:00:00[Europe/Stockholm]",
                     end=f"2024-03-{day:02d}T10:00:00[Europe/Stockholm]", location="Rum 1",
                     organizer=[OWNER, "Anna"], attendees=[[f"c{i}@contoso.com", "", "required"]],
                     rrule="FREQ=WEEKLY;COUNT=10" if i % 10 == 0 else None)  # fmt: skip
            appointments.create(f, uid=f"appt-{i}", owner=OWNER, mailbox=mailbox, regarding=account)
    return mailbox


def run_once(n_contacts: int, n_appointments: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = storedb.connect(f"sqlite:///{root / 'store.db'}")
        migrate(db)
        mailbox = seed(n_contacts, n_appointments)
        policies = {k: Policy(filters=[SyncFilter(owner="mailbox")]) for k in ("contacts", "calendar")}
        engine = SyncEngine(db, mailbox, policies, state_dir=root / "state")
        colls = [
            Collection(VdirTarget("contacts", root / "contacts")),
            Collection(VdirTarget("calendar", root / "cal")),
        ]
        t0 = time.perf_counter()
        results = asyncio.run(engine.sync(colls))
        first = time.perf_counter() - t0
        assert [r.uploaded for r in results] == [n_contacts, n_appointments], results
        t0 = time.perf_counter()
        results = asyncio.run(engine.sync(colls))
        resync = time.perf_counter() - t0
        assert all(r.changes == 0 for r in results), results

        # baseline: render and write the same items with no engine and no status
        items = [("contacts", it) for it in ContactStore().load_all().values()]
        items += [("calendar", it) for it in AppointmentStore().load_all().values()]
        base_targets = {"contacts": VdirTarget("contacts", root / "b-contacts"),
                        "calendar": VdirTarget("calendar", root / "b-cal")}  # fmt: skip
        t0 = time.perf_counter()

        async def bare() -> None:
            for t in base_targets.values():
                await t.open()
            for kind, it in items:
                codec, fields = (vcard, CONTACT_FIELDS) if kind == "contacts" else (ical, APPOINTMENT_FIELDS)
                await base_targets[kind].upload(codec.render(it.fields, set(fields), uid=it.uid), uid=it.uid)

        asyncio.run(bare())
        baseline = time.perf_counter() - t0
        db.close()
    return {"first_sync_s": first, "resync_no_change_s": resync, "baseline_upload_s": baseline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=5000)
    ap.add_argument("--appointments", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    runs = [run_once(args.contacts, args.appointments) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["first_sync_vs_baseline"] = med["first_sync_s"] / med["baseline_upload_s"]
    if args.json:
        print(json.dumps({"load_average_before": load, "items": [args.contacts, args.appointments], **med}))
        return
    print(f"load average before: {load:.2f}")
    print(f"{args.contacts} contacts + {args.appointments} appointments, median of {args.runs} run(s):")
    print(f"  first sync             {med['first_sync_s']:8.2f} s")
    print(f"  bare upload (baseline) {med['baseline_upload_s']:8.2f} s   ratio {med['first_sync_vs_baseline']:.2f}")
    print(f"  resync, no change      {med['resync_no_change_s']:8.2f} s   (target < 1 s)")


if __name__ == "__main__":
    main()
