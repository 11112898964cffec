"""Sync-back to an Exchange mailbox's own Contacts and Calendar (ews: {sync_back: ...}),
on the fake Exchange (tests/servers/ews, loopback, Basic auth, Exchange 2016).

Not a test: prints medians (seconds) of --runs runs.  Each run has a fresh fake
Exchange, a fresh SQLite store and the same CRM items (bench/sync_vdir.py's seed).

- to Exchange: the first sync, every item one CreateItem (the vCard/iCalendar
  text kept on it), then one SyncFolderItems walk per folder.
- back: Outlook (a plain exchangelib client) changes every item (one UpdateItem
  each, not timed); the sync that brings all of them into the CRM: one
  SyncFolderItems per folder, GetItem in batches, each item rebuilt on its kept copy.
- resync, no change: one SyncFolderItems per folder, nothing read.
- bare create: the floor, a plain exchangelib client saving the same number of contacts
  and events (name, e-mail, phone / subject, start, end, location), one CreateItem each.

    .venv/bin/python bench/sync_ews.py [--contacts 200] [--appointments 200] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from exchangelib.protocol import close_connections  # noqa: E402
from sync_vdir import seed  # noqa: E402

from mailfiler.config.syncschema import SyncFilter  # noqa: E402
from mailfiler.store import db as storedb  # noqa: E402
from mailfiler.store.migrations import migrate  # noqa: E402
from mailfiler.sync.engine import Collection, Policy, SyncEngine  # noqa: E402
from tests.servers.ews import EwsServer  # noqa: E402
from tests.sync.test_ews_targets import ALICE, ews_target, outlook  # noqa: E402


async def one_run(server: EwsServer, root: Path, n_contacts: int, n_appointments: int) -> dict[str, float]:
    db = storedb.connect(f"sqlite:///{root / 'store.db'}")
    migrate(db)
    mailbox = seed(n_contacts, n_appointments)
    policies = {k: Policy(filters=[SyncFilter(owner="mailbox")]) for k in ("contacts", "calendar")}
    engine = SyncEngine(db, mailbox, policies, state_dir=root / "state")
    colls = [Collection(ews_target(server, "contacts")), Collection(ews_target(server, "calendar"))]
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    results = await engine.sync(colls)
    out["to_exchange_s"] = time.perf_counter() - t0
    assert [r.uploaded for r in results] == [n_contacts, n_appointments], results
    acc = outlook(server)
    for item in [*acc.contacts.all().only("job_title"), *acc.calendar.all().only("location")]:
        if hasattr(item, "job_title"):
            item.job_title = "Changed in Outlook"
            item.save(update_fields=["job_title"])
        else:
            item.location = "Changed in Outlook"
            item.save(update_fields=["location"])
    t0 = time.perf_counter()
    results = await engine.sync(colls)
    out["back_from_exchange_s"] = time.perf_counter() - t0
    assert [r.updated_crm for r in results] == [n_contacts, n_appointments], results
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        results = await engine.sync(colls)
        times.append(time.perf_counter() - t0)
        assert all(r.changes == 0 and r.state == "ok" for r in results), results
    out["resync_no_change_s"] = statistics.median(times)
    for c in colls:
        await c.target.close()
    db.close()
    out["bare_create_s"] = bare_create(server, n_contacts, n_appointments)
    return out


def bare_create(server: EwsServer, n_contacts: int, n_appointments: int) -> float:
    from exchangelib import CalendarItem, Contact, EWSDateTime, EWSTimeZone
    from exchangelib.indexed_properties import EmailAddress, PhoneNumber

    acc = outlook(server)
    zone = EWSTimeZone("Europe/Stockholm")
    t0 = time.perf_counter()
    for i in range(n_contacts):
        Contact(account=acc, folder=acc.contacts, display_name=f"Bare {i}", given_name="Bare", surname=str(i),
                email_addresses=[EmailAddress(email=f"b{i}@contoso.com", label="EmailAddress1")],
                phone_numbers=[PhoneNumber(label="BusinessPhone", phone_number=f"+46 40 {i:06d}")]).save()  # fmt: skip
    for i in range(n_appointments):
        start = EWSDateTime(2024, 3, 1 + i % 28, 9, 0, tzinfo=zone)
        CalendarItem(account=acc, folder=acc.calendar, subject=f"Bare {i}", start=start, end=start.replace(hour=10),
                     location="Rum 1").save()  # fmt: skip
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=200)
    ap.add_argument("--appointments", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs = []
    for _ in range(args.runs):
        with EwsServer([{"smtp": ALICE, "password": "pw"}]) as server, tempfile.TemporaryDirectory() as tmp:
            runs.append(asyncio.run(one_run(server, Path(tmp), args.contacts, args.appointments)))
        close_connections()
    medians = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    medians.update(contacts=args.contacts, appointments=args.appointments, runs=args.runs)
    if args.json:
        print(json.dumps(medians))
    else:
        for k, v in medians.items():
            print(f"{k:24} {v}")


if __name__ == "__main__":
    main()
