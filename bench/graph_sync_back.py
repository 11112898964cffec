"""Sync-back into a Microsoft 365 mailbox (the Graph fake on loopback HTTPS): a first
sync of N contacts and N appointments (every 10th weekly), a resync with no changes,
and Outlook's edits of 10 % of each coming back, with the requests each phase sent.

Not a test: prints medians of --runs runs, each on a fresh SQLite store and a fresh
fake tenant.  The fake answers in microseconds, so the wall times are mailfiler's own
cost plus loopback TLS; on Exchange Online each request costs 50-300 ms more, which is
why the request counts matter more than the seconds.

    .venv/bin/python bench/graph_sync_back.py [--count 200] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailfiler.config.syncschema import SyncFilter  # noqa: E402
from mailfiler.sources.graph.calendar import GraphCalendar  # noqa: E402
from mailfiler.sources.graph.contacts import GraphContacts  # noqa: E402
from mailfiler.store import db as storedb  # noqa: E402
from mailfiler.store.db import transaction  # noqa: E402
from mailfiler.store.detailmodels import ContactDetails  # noqa: E402
from mailfiler.store.migrations import migrate  # noqa: E402
from mailfiler.store.models import Mailbox, Record  # noqa: E402
from mailfiler.store.records import ensure_user  # noqa: E402
from mailfiler.sync.crm import AppointmentStore, ContactStore  # noqa: E402
from mailfiler.sync.engine import Collection, Policy, SyncEngine  # noqa: E402
from mailfiler.sync.items import empty_fields  # noqa: E402
from tests.graph.helpers import UPN, connection, tenant  # noqa: E402
from tests.servers.graph import GraphFake  # noqa: E402
from tests.servers.tls import make_tls  # noqa: E402

OWNER = "anna@example.com"
STO = "Europe/Stockholm"


def seed(n: int) -> Mailbox:
    user = ensure_user(OWNER)
    mailbox = Mailbox.create(name="anna", owner=OWNER, owner_record=user)
    account = Record.create(entity="account", key="contoso", name="Contoso AB")
    contacts, appointments = ContactStore(), AppointmentStore()
    today = dt.date.today()
    with transaction(Record._meta.database):
        for i in range(n):
            rec = Record.create(entity="contact", key=f"c{i}", name=f"Kontakt Åberg {i}", parent=account)
            ContactDetails.create(record=rec, owner=OWNER)
            contacts.write(rec.id, {
                "given_name": "Kontakt", "family_name": f"Åberg {i}", "emails": [f"c{i}@contoso.com"],
                "phones": [["work", f"+46 40 {i:06d}"]], "job_title": "Säljare",
                "addresses": [{"kind": "work", "po_box": "", "extended": "", "street": f"Storgatan {i}",
                               "locality": "Malmö", "region": "", "postal_code": "211 34", "country": "Sverige"}],
            })  # fmt: skip
        for i in range(n):
            day = today + dt.timedelta(days=1 + i % 60)
            f = empty_fields("calendar")
            f.update(subject=f"Möte {i}", start=f"{day.isoformat()}T09:00:00[{STO}]",
                     end=f"{day.isoformat()}T10:00:00[{STO}]", location="Rum 1", body="Agenda",
                     rrule="FREQ=WEEKLY;COUNT=10" if i % 10 == 0 else None)  # fmt: skip
            appointments.create(f, uid=f"appt-{i}", owner=OWNER, mailbox=mailbox, regarding=account)
    return mailbox


def outlook_edits(graph: GraphFake, n: int) -> None:
    """Outlook changes n contacts' job titles and n events' subjects."""
    for contact in list(graph.mailbox(UPN).contacts.values())[:n]:
        graph.edit_contact(UPN, contact, jobTitle="Vd")
    for event in list(graph.calendar(UPN).events.values())[:n]:
        graph.edit_event(UPN, event, subject=str(event.fields.get("subject")) + " (ändrat)")


def run_once(n: int, tls: Any) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, GraphFake(tls) as graph:
        root = Path(tmp)
        tenant(graph)
        db = storedb.connect(f"sqlite:///{root / 'store.db'}")
        migrate(db)
        mailbox = seed(n)
        policies = {k: Policy(filters=[SyncFilter(all=True)]) for k in ("contacts", "calendar")}
        conn = connection(graph, timeout=60.0)
        contacts = GraphContacts(conn, f"graph://{UPN}/contacts")
        calendar = GraphCalendar(conn, f"graph://{UPN}/calendar")
        colls = [Collection(contacts), Collection(calendar)]
        out: dict[str, float] = {}

        def phase(name: str) -> list[Any]:
            engine = SyncEngine(db, mailbox, policies, state_dir=root / "state")
            before = len(graph.operations())
            t0 = time.perf_counter()

            async def sync() -> list[Any]:
                try:
                    return await engine.sync(colls)
                finally:  # as the runner does: the targets' client goes with the sync
                    await contacts.close()
                    await calendar.close()

            results = asyncio.run(sync())
            out[f"{name}_s"] = time.perf_counter() - t0
            out[f"{name}_requests"] = len(graph.operations()) - before - _tokens(graph, before)
            for r in results:
                assert r.state == "ok", (r.kind, r.errors)
            return results

        first = phase("first_sync")
        assert [r.uploaded for r in first] == [n, n], first
        again = phase("resync_no_change")
        assert all(r.changes == 0 for r in again), again
        outlook_edits(graph, max(1, n // 10))
        back = phase("outlook_edits_back")
        assert [r.updated_crm for r in back] == [max(1, n // 10)] * 2, back
        out["batched_reads"] = float(len(graph.batched))
        db.close()
    return out


def _tokens(graph: GraphFake, since: int) -> int:
    """Sign-in requests (to the token endpoint) are not Graph requests."""
    return sum(1 for op in graph.operations()[since:] if op in ("POST token", "GET openid-configuration"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tls = make_tls(Path(tmp))
        runs = [run_once(args.count, tls) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    if args.json:
        print(json.dumps({"load_average_before": load, "items": args.count, **med}))
        return
    print(f"load average before: {load:.2f}")
    print(f"{args.count} contacts + {args.count} appointments (every 10th weekly), median of {args.runs} run(s):")
    for name in ("first_sync", "resync_no_change", "outlook_edits_back"):
        print(f"  {name:20s} {med[name + '_s']:7.2f} s  {med[name + '_requests']:6.0f} requests")
    print(f"  (sub-requests inside $batch over all phases: {med['batched_reads']:.0f})")


if __name__ == "__main__":
    main()
