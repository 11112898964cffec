#!/usr/bin/env python3
"""Drop-to-tracked latency over EWS (the fake Exchange), beside the fake's own notification delay.

    .venv/bin/python bench/ews_latency.py                 # 200 deliveries, human-readable figures
    .venv/bin/python bench/ews_latency.py --drops 500 --json

What is measured (one run)
  server    The fake Exchange of tests/servers/ews in this process (threads), one mailbox with
            the four tracked folders of bench/benchconfig.py, a service account impersonating it.
  mailfiler The real daemon (``python -m mailfiler --log-format json run``) configured with
            ``ews:`` (NTLM, impersonation), fresh SQLite store.  Latency: from the fake's
            ``deliver`` returning (the item exists, its events are queued) to the daemon's
            ``tracked`` JSON log line for that Message-ID (written after the commit).
  baseline  ``server.hub.delays``: for each event the fake streamed, the seconds from the event
            to the write of the envelope carrying it: the server's own notification delay.

Deliveries go round-robin over the folders, one every 100-200 ms; five warm-up deliveries
(waited for) are not counted.  Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchconfig
from benchconfig import FOLDERS
from ews_common import users, write_ews_config
from latency import LogReader, Pace, paced_drops, summary

from tests.mailgen import message_id_for, realistic_message
from tests.servers.ews import EwsServer

MAILBOX = "alice@example.com"


def run(base: Path, n: int, warmup: int, pace: Pace, seed: int) -> dict[str, object]:
    folders = [f for f, _ in FOLDERS]
    with EwsServer(users([MAILBOX], folders)) as server:
        cfg = write_ews_config(base, server.ews_url, [MAILBOX], folders, writer="bench/ews_latency.py")
        cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "run"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MAILFILER_CONFIG"):
            env.pop(var, None)
        t_spawn = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        reader = LogReader(proc.stderr)
        reader.start()
        drops: list[tuple[str, float]] = []

        def deliver(k: int) -> str:
            data = realistic_message(k, seed=seed).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            server.deliver(MAILBOX, data, folders[k % len(folders)])
            drops.append((message_id_for(k, seed=seed), time.monotonic()))
            return drops[-1][0]

        result: dict[str, object] = {}
        try:
            reader.wait_watching(proc)
            result["startup_s"] = round(time.monotonic() - t_spawn, 3)
            reader.warm_up(deliver, warmup)
            server.hub.delays.clear()
            requests_before = len(server.requests)
            paced_drops(n, pace, lambda k: deliver(warmup + k))
            wanted = {d[0] for d in drops}
            reader.wait(lambda: wanted <= reader.tracked.keys(), 30)
            result["requests_per_delivery"] = round((len(server.requests) - requests_before) / max(n, 1), 2)
            fake_delays = list(server.hub.delays)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            reader.join(5)
    measured = drops[warmup:]
    lat = [reader.tracked[mid] - t for mid, t in measured if mid in reader.tracked]
    with sqlite3.connect(f"file:{base / 'store.db'}?mode=ro", uri=True) as con:
        activities = con.execute("select count(*) from activity").fetchone()[0]
    result.update(
        {
            "fake_notification_delay": summary(fake_delays),
            "mailfiler_tracked": summary(lat),
            "missed": n - len(lat),
            "db": {"expected": warmup + n, "activities": activities},
            "exit_code": rc,
            "problems": reader.problems[:10],
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--drops", type=int, default=200, help="measured deliveries (default 200)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pace-ms", type=float, nargs=2, default=(100.0, 200.0), metavar=("LO", "HI"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    base = Path(tempfile.mkdtemp(prefix="mailfiler-ews-latency-"))
    out = run(base, args.drops, args.warmup, Pace(*args.pace_ms), args.seed)
    out.update({**benchconfig.run_info("ews_latency", load_before), "drops": args.drops})
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.drops} deliveries over {len(FOLDERS)} tracked folders; load average before {load_before[0]:.2f}")
    print(f"  {'':<44} {'median':>9} {'p90':>9} {'p99':>9} {'max':>9}  (ms)")
    for label, s in (("fake Exchange: event -> streamed", out["fake_notification_delay"]),
                     ("mailfiler: delivered -> tracked", out["mailfiler_tracked"])):  # fmt: skip
        if s.get("n"):  # type: ignore[union-attr]
            print(f"  {label:<44} {s['median']:>9.1f} {s['p90']:>9.1f} {s['p99']:>9.1f} {s['max']:>9.1f}")  # type: ignore[index]
    print(f"  EWS requests per delivery: {out['requests_per_delivery']}; missed {out['missed']}; db {out['db']}")
    if out["problems"]:
        print(f"  problems: {out['problems']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
