#!/usr/bin/env python3
"""The store side of tracking one message: ``Tracker.track`` on pre-parsed messages.

    .venv/bin/python bench/track_store.py                      # 2,000 messages, Tracked/Contoso
    .venv/bin/python bench/track_store.py --count 5000 --folder Tracked/Unfiled
    .venv/bin/python bench/track_store.py --profile            # + cProfile of the tracked run

What is measured (fresh SQLite store per variant, benchconfig's records and mailbox)
  track      ``Tracker.track`` per message (new messages, one tracked folder, a cursor
             token each, ``may_be_shunted=False`` as the backfill calls it): median, p90 and
             mean ms per message (the mean includes the blob fsyncs of every 5th message and
             SQLite's WAL checkpoints); and SQL statements per message (peewee's DEBUG query log,
             BEGIN/COMMIT not counted since peewee does not log them).
  bare       The floor: a bare peewee transaction per message inserting the same rows
             (activity, parties, location) and bumping the cursor, no lookups.

Messages are ``realistic_message``s parsed before timing (parse is not measured here).
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import cProfile
import logging
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import benchconfig  # noqa: E402

from mailfiler.config.loader import load_config  # noqa: E402
from mailfiler.service.runtime import build_services, open_store  # noqa: E402
from mailfiler.store import models as m  # noqa: E402
from mailfiler.store.db import transaction  # noqa: E402
from mailfiler.tracking.parse import ParsedMessage, parse_message  # noqa: E402
from tests.mailgen import realistic_message  # noqa: E402


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def _setup(work: Path, folder: str):
    base = Path(tempfile.mkdtemp(prefix="track-", dir=work))
    (base / "maildir").mkdir()
    cfg = benchconfig.write_config(base, base / "maildir", [folder], writer="bench/track_store.py")
    config = load_config(cfg).config
    db = open_store(config)
    services = build_services(db, config)
    rt = next(iter(services.mailboxes.values()))
    return db, services, rt


def run_track(work: Path, folder: str, msgs: list[ParsedMessage], profile: bool) -> dict:
    db, services, rt = _setup(work, folder)
    fctx = rt.folders[folder]
    counter = _Counter()
    plog = logging.getLogger("peewee")
    plog.addHandler(counter)
    plog.setLevel(logging.DEBUG)
    plog.propagate = False
    times = []
    prof = cProfile.Profile() if profile else None
    try:
        if prof:
            prof.enable()
        for i, msg in enumerate(msgs):
            t0 = time.perf_counter()
            services.tracker.track(rt.ctx, fctx, str(i), msg, may_be_shunted=False, token=f"t{i}")
            times.append(time.perf_counter() - t0)
        if prof:
            prof.disable()
    finally:
        plog.removeHandler(counter)
        plog.setLevel(logging.WARNING)
    activities = m.Activity.select().count()
    db.close()
    if prof:
        stats = pstats.Stats(prof).strip_dirs()
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
    return {"times": times, "statements": counter.count / len(msgs), "activities": activities}


def run_bare(work: Path, folder: str, msgs: list[ParsedMessage]) -> dict:
    db, _services, rt = _setup(work, folder)
    mb = rt.ctx.row
    times = []
    for i, msg in enumerate(msgs):
        t0 = time.perf_counter()
        now = m.utcnow()
        with transaction(db):
            aid = m.Activity.insert(
                message_id=msg.message_id,
                subject=msg.subject,
                sent_at=msg.sent_at,
                first_seen_at=now,
                updated_at=now,
                direction="incoming",
                body_text=msg.body_text,
                body_html=msg.body_html,
                size=msg.size,
            ).execute()
            rows = [
                {"activity": aid, "role": role, "address": a.address, "display_name": a.name}
                for role, addrs in msg.addresses.items()
                for a in addrs
            ]
            if rows:
                m.ActivityParty.insert_many(rows).on_conflict_ignore().execute()
            m.Location.insert(activity=aid, mailbox=mb, folder=folder, source_id=str(i), first_seen_at=now).execute()
            m.FolderCursor.update(processed=m.FolderCursor.processed + 1, token=f"t{i}", updated_at=now).where(
                (m.FolderCursor.mailbox == mb) & (m.FolderCursor.folder == folder)
            ).execute()
        times.append(time.perf_counter() - t0)
    db.close()
    return {"times": times}


def _ms(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100)[int(q) - 1] * 1000 if q != 50 else statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folder", default="Tracked/Contoso", choices=[f for f, _ in benchconfig.FOLDERS])
    ap.add_argument("--profile", action="store_true", help="cProfile the tracked run (inflates the times)")
    args = ap.parse_args()
    msgs = [parse_message(realistic_message(i, seed=args.seed)) for i in range(args.count)]
    with tempfile.TemporaryDirectory(prefix="mailfiler-track-store-") as tmp:
        work = Path(tmp)
        bare = run_bare(work, args.folder, msgs)
        track = run_track(work, args.folder, msgs, args.profile)
    assert track["activities"] == len({msg.message_id for msg in msgs}), track["activities"]
    t50, b50 = _ms(track["times"], 50), _ms(bare["times"], 50)
    print(f"{args.count} messages into {args.folder} (SQLite)")
    for name, times in (("Tracker.track", track["times"]), ("bare insert", bare["times"])):
        mean = statistics.fmean(times) * 1000
        print(f"  {name:<14}  median {_ms(times, 50):.3f} ms  p90 {_ms(times, 90):.3f} ms  mean {mean:.3f} ms")
    plain = [t for t, msg in zip(track["times"], msgs, strict=True) if not msg.attachments]
    with_att = [t for t, msg in zip(track["times"], msgs, strict=True) if msg.attachments]
    print(
        f"  Tracker.track mean without attachment {statistics.fmean(plain) * 1000:.3f} ms ({len(plain)}),"
        f" with one {statistics.fmean(with_att) * 1000:.3f} ms ({len(with_att)}: the blob's two fsyncs)"
    )
    print(f"  ratio track/bare {t50 / b50:.2f}x")
    print(f"  statements per message (peewee log) {track['statements']:.2f}")


if __name__ == "__main__":
    main()
