"""Sync-back to a CalDAV/CardDAV server (a local Radicale): a first sync of many
contacts and appointments, and resyncs with no changes, beside a bare client
uploading the same items with the same HTTP client.

Not a test: prints medians (seconds) of --runs runs.  One Radicale (the test
suite's fixture code, on loopback, htpasswd auth, filesystem storage) serves
every run; each run has a fresh user (so fresh, empty collections), a fresh
SQLite store and the same CRM items (bench/sync_vdir.py's seed).

- first sync: the engine over a CardDavTarget and a CalDavTarget; every item
  is one ``PUT`` with ``If-None-Match: *``, then one more ``sync-collection``
  REPORT per collection: the changes since the token it took before writing
  are all its own uploads, so it keeps the newer token.
- resync, first after the first sync: one REPORT per collection, answered
  "nothing"; no item is looked at.
- resync, no change: the steady state, the same.  Issue 5's target: under 1 s.
- bare upload: render each item and ``PUT`` it with a plain httpx.AsyncClient
  (the same library, the same headers), no engine, no store, no status.
- bare REPORTs: the same two sync-collection REPORTs sent by a plain client:
  the floor of a no-change resync on this server.

Radicale checks each new item's UID against the whole collection, so the
first sync of 10,000 items takes about 25 minutes, and the bare upload as long
again.  ``--prefill`` puts the items on the server in one request per kind;
the engine then links them, and the resync figures come in minutes.

    .venv/bin/python bench/sync_radicale.py [--contacts 5000] [--appointments 5000] [--runs 1]
        [--resyncs 5] [--prefill] [--json]
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

from mailfiler.config.syncschema import SyncFilter  # noqa: E402
from mailfiler.sources.target import href_for  # noqa: E402
from mailfiler.store import db as storedb  # noqa: E402
from mailfiler.store.migrations import migrate  # noqa: E402
from mailfiler.store.syncmodels import SyncCollection  # noqa: E402
from mailfiler.sync import ical, vcard  # noqa: E402
from mailfiler.sync.crm import AppointmentStore, ContactStore  # noqa: E402
from mailfiler.sync.dav import CalDavTarget, CardDavTarget  # noqa: E402
from mailfiler.sync.engine import Collection, Policy, SyncEngine  # noqa: E402
from mailfiler.sync.items import APPOINTMENT_FIELDS, CONTACT_FIELDS  # noqa: E402
from mailfiler.sync.state import SyncState  # noqa: E402
from tests.servers.radicale import DavUser, FaultTransport, RadicaleServer, start_radicale  # noqa: E402


async def _timed(coro) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = await coro
    return time.perf_counter() - t0, out


def rendered(kind: str) -> list[tuple[str, bytes]]:
    """(uid, item) of every CRM item of a kind, as the engine renders it."""
    store, codec, fields = (
        (ContactStore(), vcard, CONTACT_FIELDS)
        if kind == "contacts"
        else (AppointmentStore(), ical, APPOINTMENT_FIELDS)
    )
    return [(it.uid, codec.render(it.fields, set(fields), uid=it.uid)) for it in store.load_all().values()]


async def prefill(user: DavUser) -> None:
    """Every CRM item on the server at once: one whole-collection PUT per kind (Radicale
    splits it by UID), instead of 10,000 single PUTs that cost Radicale O(n) each."""
    import icalendar

    cards = b"".join(data for _, data in rendered("contacts"))
    cal = icalendar.Calendar()
    cal.add("prodid", "-//mailfiler bench//EN")
    cal.add("version", "2.0")
    zones: set[str] = set()
    for _, data in rendered("calendar"):
        for comp in icalendar.Calendar.from_ical(data).subcomponents:
            if comp.name == "VTIMEZONE":
                if str(comp["TZID"]) in zones:
                    continue
                zones.add(str(comp["TZID"]))
            cal.add_component(comp)
    async with httpx.AsyncClient(auth=(user.name, user.password), timeout=600.0) as client:
        for url, body, ctype in (
            (user.url("crm-contacts"), cards, "text/vcard"),
            (user.url("crm-calendar"), cal.to_ical(), "text/calendar"),
        ):
            r = await client.put(url, content=body, headers={"Content-Type": ctype})
            assert r.status_code == 201, (r.status_code, r.text[:300])


async def engine_runs(
    user: DavUser, n_contacts: int, n_appointments: int, root: Path, *, prefilled: bool, resyncs: int
) -> dict[str, float]:
    db = storedb.connect(f"sqlite:///{root / 'store.db'}")
    migrate(db)
    mailbox = seed(n_contacts, n_appointments)
    if prefilled:
        await prefill(user)
    policies = {k: Policy(filters=[SyncFilter(owner="mailbox")]) for k in ("contacts", "calendar")}
    engine = SyncEngine(db, mailbox, policies, state_dir=root / "state")
    wire = FaultTransport()
    kw = {**user.target_kwargs(), "timeout": 600.0, "wrap_transport": wire.wrap}
    colls = [
        Collection(CardDavTarget(user.url("crm-contacts"), **kw)),
        Collection(CalDavTarget(user.url("crm-calendar"), **kw)),
    ]
    out: dict[str, float] = {}
    first, results = await _timed(engine.sync(colls))
    done = [r.linked if prefilled else r.uploaded for r in results]
    assert done == [n_contacts, n_appointments] and all(r.state == "ok" for r in results), results
    out["first_sync_s"] = first
    if not prefilled:
        # the first sync kept the token that follows its own uploads: this REPORT lists nothing
        wire.clear()
        out["resync_after_first_s"], results = await _timed(engine.sync(colls))
        assert all(r.changes == 0 and r.quiet and r.state == "ok" for r in results), results
        assert wire.methods() == ["REPORT:sync-collection"] * 2, wire.methods()
    times = []
    quiet = 0
    for _ in range(resyncs):
        wire.clear()
        took, results = await _timed(engine.sync(colls))
        assert all(r.changes == 0 and r.state == "ok" for r in results), results
        assert wire.methods() == ["REPORT:sync-collection"] * 2, wire.methods()
        times.append(took)
        quiet += all(r.quiet for r in results)
    out["resync_no_change_s"] = statistics.median(times)
    out["quiet_resyncs"] = quiet  # of --resyncs: no item looked at (a whole pass otherwise)
    # the floor: the same two REPORTs from the same tokens by a bare client, nothing else
    tokens = [SyncState.load(c.token).token for c in SyncCollection.select().order_by(SyncCollection.id)]
    async with httpx.AsyncClient(auth=(user.name, user.password), timeout=120.0) as client:
        floor = []
        for _ in range(resyncs):
            t0 = time.perf_counter()
            for coll, token in zip(colls, tokens, strict=True):
                body = (
                    '<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:">'
                    f"<D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>"
                    "<D:prop><D:getetag/></D:prop></D:sync-collection>"
                ).encode()
                r = await client.request("REPORT", coll.target.location, headers={"Depth": "0"}, content=body)
                assert r.status_code == 207 and "<response>" not in r.text
            floor.append(time.perf_counter() - t0)
    out["bare_report_s"] = statistics.median(floor)
    for c in colls:
        await c.target.close()
    db.close()
    return out


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
        return {"baseline_upload_s": time.perf_counter() - t0}


def run_once(server: RadicaleServer, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        user = server.add_user()
        out = asyncio.run(
            engine_runs(user, args.contacts, args.appointments, root, prefilled=args.prefill, resyncs=args.resyncs)
        )
        if not args.prefill:
            out.update(asyncio.run(bare_upload(user, root)))
        server.remove_user(user)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contacts", type=int, default=5000)
    ap.add_argument("--appointments", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--resyncs", type=int, default=5, help="no-change resyncs per run (their median is taken)")
    ap.add_argument(
        "--prefill",
        action="store_true",
        help="put the items on the server in one request per kind; the engine links them (no upload figures)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    # a SIGTERM unwinds like ^C, so the Radicale subprocess is stopped and its files removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = os.getloadavg()[0]
    with start_radicale() as server:
        runs = [run_once(server, args) for _ in range(args.runs)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    if "baseline_upload_s" in med:
        med["first_sync_vs_baseline"] = med["first_sync_s"] / med["baseline_upload_s"]
    if args.json:
        print(json.dumps({"load_average_before": load, "items": [args.contacts, args.appointments], **med}))
        return
    print(f"load average before: {load:.2f}")
    print(f"{args.contacts} contacts + {args.appointments} appointments to Radicale, median of {args.runs} run(s):")
    if args.prefill:
        print(f"  first sync (links what is there) {med['first_sync_s']:8.2f} s")
    else:
        print(f"  first sync                  {med['first_sync_s']:8.2f} s")
        ratio = med["first_sync_vs_baseline"]
        print(f"  bare upload (baseline)      {med['baseline_upload_s']:8.2f} s   ratio {ratio:.2f}")
        print(f"  resync right after it       {med['resync_after_first_s']:8.2f} s   (after the uploads: quiet)")
    print(
        f"  resync, no change           {med['resync_no_change_s']:8.2f} s   (target < 1 s; median of {args.resyncs})"
    )
    print(
        f"  bare sync-collection REPORTs{med['bare_report_s']:8.2f} s   (the same 2 requests alone: the server's floor)"
    )
    print(f"  quiet resyncs               {med['quiet_resyncs']:8.0f}     (of {args.resyncs}: no item looked at)")


if __name__ == "__main__":
    main()
