"""Sync-back to a CalDAV/CardDAV server (a local Radicale): a first sync of many
contacts and appointments, and resyncs with no changes, beside a bare client
uploading the same items with the same HTTP client.

Not a test: prints medians (seconds) of --runs runs.  One Radicale (the test
suite's fixture code, on loopback, htpasswd auth, filesystem storage) serves
every run; each run has a fresh user (so fresh, empty collections), a fresh
SQLite store and the same CRM items (bench/sync_vdir.py's seed).

- first sync: the engine over a CardDavTarget and a CalDavTarget; every item
  is one ``PUT`` with ``If-None-Match: *``.
- resync, first after the first sync: one ``sync-collection`` REPORT per
  collection that reports the engine's own uploads (it took the token before
  writing, as it must); their etags are known, so nothing is read.
- resync, no change: the steady state, one REPORT per collection answering
  "nothing".  Issue 5's target: under 1 s.
- bare upload: render each item and ``PUT`` it with a plain httpx.AsyncClient
  (the same library, the same headers), no engine, no store, no status.
- bare REPORT: the two empty sync-collection REPORTs alone: the floor of a
  no-change resync on this server.

    .venv/bin/python bench/sync_radicale.py [--contacts 5000] [--appointments 5000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httpx  # noqa: E402
from sync_vdir import seed  # noqa: E402

from mailfiler.config.schema import SyncFilter  # noqa: E402
from mailfiler.store import db as storedb  # noqa: E402
from mailfiler.store.migrations import migrate  # noqa: E402
from mailfiler.sync import ical, vcard  # noqa: E402
from mailfiler.sync.crm import AppointmentStore, ContactStore  # noqa: E402
from mailfiler.sync.dav import CalDavTarget, CardDavTarget  # noqa: E402
from mailfiler.sync.engine import Collection, Policy, SyncEngine  # noqa: E402
from mailfiler.sync.items import APPOINTMENT_FIELDS, CONTACT_FIELDS  # noqa: E402
from mailfiler.sync.target import href_for  # noqa: E402
from tests.servers.radicale import DavUser, FaultTransport, RadicaleServer, start_radicale  # noqa: E402


async def _timed(coro) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = await coro
    return time.perf_counter() - t0, out


async def engine_runs(user: DavUser, n_contacts: int, n_appointments: int, root: Path) -> dict[str, float]:
    db = storedb.connect(f"sqlite:///{root / 'store.db'}")
    migrate(db)
    mailbox = seed(n_contacts, n_appointments)
    policies = {k: Policy(filters=[SyncFilter(owner="mailbox")]) for k in ("contacts", "calendar")}
    engine = SyncEngine(db, mailbox, policies, state_dir=root / "state")
    wire = FaultTransport()
    kw = {**user.target_kwargs(), "timeout": 120.0, "wrap_transport": wire.wrap}
    colls = [
        Collection(CardDavTarget(user.url("crm-contacts"), **kw)),
        Collection(CalDavTarget(user.url("crm-calendar"), **kw)),
    ]
    first, results = await _timed(engine.sync(colls))
    assert [r.uploaded for r in results] == [n_contacts, n_appointments], results
    wire.clear()
    resync_own, results = await _timed(engine.sync(colls))
    assert all(r.changes == 0 and r.state == "ok" for r in results), results
    own_requests = wire.methods()
    wire.clear()
    resync, results = await _timed(engine.sync(colls))
    assert all(r.changes == 0 and r.state == "ok" for r in results), results
    assert wire.methods() == ["REPORT:sync-collection"] * 2, wire.methods()
    assert own_requests == ["REPORT:sync-collection"] * 2, own_requests
    for c in colls:
        await c.target.close()
    db.close()
    return {"first_sync_s": first, "resync_after_first_s": resync_own, "resync_no_change_s": resync}


async def bare_upload(user: DavUser, root: Path) -> dict[str, float]:
    """The same items, rendered and PUT by a plain client into two new collections."""
    db = storedb.connect(f"sqlite:///{root / 'store.db'}")
    items = [("contacts", it) for it in ContactStore().load_all().values()]
    items += [("calendar", it) for it in AppointmentStore().load_all().values()]
    db.close()
    async with httpx.AsyncClient(auth=(user.name, user.password), timeout=120.0) as client:
        base = {"contacts": user.url("bare-contacts"), "calendar": user.url("bare-calendar")}
        r = await client.request(
            "MKCOL", base["contacts"],
            content=b'<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav">'
            b"<D:set><D:prop><D:resourcetype><D:collection/><CR:addressbook/></D:resourcetype></D:prop></D:set>"
            b"</D:mkcol>",
        )  # fmt: skip
        assert r.status_code == 201, r
        assert (await client.request("MKCALENDAR", base["calendar"])).status_code == 201
        ctype = {"contacts": "text/vcard; charset=utf-8", "calendar": "text/calendar; charset=utf-8"}
        t0 = time.perf_counter()
        for kind, it in items:
            codec, fields = (vcard, CONTACT_FIELDS) if kind == "contacts" else (ical, APPOINTMENT_FIELDS)
            data = codec.render(it.fields, set(fields), uid=it.uid)
            r = await client.put(base[kind] + href_for(it.uid, kind), content=data,
                                 headers={"If-None-Match": "*", "Content-Type": ctype[kind]})  # fmt: skip
            assert r.status_code == 201, (r.status_code, r.text)
        upload = time.perf_counter() - t0
        # the floor of a no-change resync: two sync-collection REPORTs from the current tokens
        tokens = {}
        for kind, url in base.items():
            r = await client.request("PROPFIND", url, headers={"Depth": "0"},
                                     content=b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                                             b"<D:sync-token/></D:prop></D:propfind>")  # fmt: skip
            tokens[kind] = r.text.split("<sync-token>")[1].split("</sync-token>")[0]
        t0 = time.perf_counter()
        for kind, url in base.items():
            body = (
                '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
                f"<D:sync-token>{tokens[kind]}</D:sync-token><D:sync-level>1</D:sync-level>"
                "<D:prop><D:getetag/></D:prop></D:sync-collection>"
            ).encode()
            r = await client.request("REPORT", url, headers={"Depth": "0"}, content=body)
            assert r.status_code == 207 and "<response>" not in r.text
        report = time.perf_counter() - t0
    return {"baseline_upload_s": upload, "baseline_report_s": report}


def run_once(server: RadicaleServer, n_contacts: int, n_appointments: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        user = server.add_user()
        out = asyncio.run(engine_runs(user, n_contacts, n_appointments, root))
        out.update(asyncio.run(bare_upload(user, root)))
        server.remove_user(user)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=5000)
    ap.add_argument("--appointments", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # a SIGTERM unwinds like ^C, so the Radicale subprocess is stopped and its files removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = os.getloadavg()[0]
    with start_radicale() as server:
        runs = [run_once(server, args.contacts, args.appointments) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    med["first_sync_vs_baseline"] = med["first_sync_s"] / med["baseline_upload_s"]
    if args.json:
        print(json.dumps({"load_average_before": load, "items": [args.contacts, args.appointments], **med}))
        return
    print(f"load average before: {load:.2f}")
    print(f"{args.contacts} contacts + {args.appointments} appointments to Radicale, median of {args.runs} run(s):")
    print(f"  first sync                  {med['first_sync_s']:8.2f} s")
    print(
        f"  bare upload (baseline)      {med['baseline_upload_s']:8.2f} s   ratio {med['first_sync_vs_baseline']:.2f}"
    )
    print(f"  resync right after it       {med['resync_after_first_s']:8.2f} s   (reports our own uploads, reads none)")
    print(f"  resync, no change           {med['resync_no_change_s']:8.2f} s   (target < 1 s)")
    print(f"  bare sync-collection REPORTs{med['baseline_report_s']:8.2f} s   (the floor of a no-change resync)")


if __name__ == "__main__":
    main()
