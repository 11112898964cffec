#!/usr/bin/env python3
"""Resident memory of one daemon watching 100 Microsoft 365 mailboxes (the Graph fake) with 5
tracked folders each, signed in app-only with one app registration.

    .venv/bin/python bench/graph_memory.py                 # 100 mailboxes, 5 folders each
    .venv/bin/python bench/graph_memory.py --mailboxes 20 --json

Setup: the Graph fake in this process on loopback HTTPS, --mailboxes users with five tracked
folders each (one non-ASCII) holding --messages messages each; one app (a client secret) for
all of them, as an organisation registers one.

What is measured (VmRSS and VmHWM from /proc/PID/status of ``mailfiler run``), as
bench/imap_memory.py does for IMAP
  baseline   The same daemon on a config with one of those mailboxes.
  mailfiler  All of them: when every mailbox has logged ``watching``, after --settle seconds
             idle (the daemon's CPU time over it: the delta polls), and after one message
             delivered into each mailbox has been tracked.  Also its sockets and threads.

Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import benchconfig  # noqa: E402
import yaml  # noqa: E402
from graph_latency import graph_requests  # noqa: E402
from imap_memory import cpu_seconds, proc_status  # noqa: E402
from latency import LogReader  # noqa: E402

from tests.graph.helpers import APP_ID, SECRET  # noqa: E402
from tests.mailgen import message_id_for, realistic_message  # noqa: E402
from tests.servers.graph import GraphFake  # noqa: E402
from tests.servers.tls import make_tls  # noqa: E402

FOLDERS: list[tuple[str, str | None]] = [
    ("Tracked/Contoso", "account:contoso"),
    ("Tracked/Fabrikam", "account:fabrikam"),
    ("Cases/CAS-01001", "case:CAS-01001"),
    ("Kunder/Åkesson AB", None),
    ("Tracked/Unfiled", None),
]
RECORDS = [
    {"entity": "account", "key": "contoso", "name": "Contoso Ltd", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam Inc", "domains": ["fabrikam.com"]},
    {"entity": "case", "key": "CAS-01001", "name": "Contoso invoice dispute", "parent": "account:contoso"},
]


def upn(k: int) -> str:
    return f"user{k:03d}@contoso.onmicrosoft.com"


def write_config(base: Path, graph: GraphFake, users: list[str]) -> Path:
    assert graph.tls is not None
    secret = base / "graph.secret"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    secret.chmod(0o600)
    mailboxes = [
        {
            "name": u.split("@")[0],
            "owner": u,
            "graph": {
                "tenant": graph.tenant.id,
                "client_id": APP_ID,
                "authority": graph.url,
                "graph_url": f"{graph.url}/v1.0",
                "user": u,
                "password_file": str(secret),
                "ca_file": str(graph.tls.ca_file),
            },
            "auto_track": {"policy": "none", "folders": []},
            "tracked_folders": [{"folder": f, **({"regarding": r} if r else {})} for f, r in FOLDERS],
        }
        for u in users
    ]
    data = {"database": "sqlite:///store.db", "state_dir": "state", "records": RECORDS, "mailboxes": mailboxes}
    cfg = base / "mailfiler.yaml"
    cfg.write_text("# written by bench/graph_memory.py\n" + yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return cfg


def run_daemon(base: Path, graph: GraphFake, users: list[str], settle: float, *, deliveries: bool) -> dict[str, Any]:
    base.mkdir(parents=True, exist_ok=True)
    cfg = write_config(base, graph, users)
    cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "run", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MAILFILER_CONFIG")}
    env["PYTHONUNBUFFERED"] = "1"
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    reader = LogReader(proc.stderr)
    reader.start()
    out: dict[str, Any] = {"mailboxes": len(users), "folders": len(users) * len(FOLDERS)}
    try:
        n = len(users)
        if not reader.wait(lambda: reader.events.get("watching", 0) >= n or proc.poll() is not None, 600):
            raise RuntimeError(f"only {reader.events.get('watching', 0)} of {n} mailboxes watching")
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}): {reader.problems[-5:]}")
        out["all_watching_s"] = round(time.monotonic() - t0, 2)
        out["at_watching"] = proc_status(proc.pid)
        cpu0, t_idle, req0 = cpu_seconds(proc.pid), time.monotonic(), graph_requests(graph)
        time.sleep(settle)
        idle_s = time.monotonic() - t_idle
        out["idle_cpu_pct"] = round(100 * (cpu_seconds(proc.pid) - cpu0) / idle_s, 1)
        out["idle_requests_per_s"] = round((graph_requests(graph) - req0) / idle_s, 1)
        out["after_settle"] = proc_status(proc.pid)
        if deliveries:
            mids = []
            for k, u in enumerate(users):
                graph.deliver(u, FOLDERS[k % len(FOLDERS)][0], realistic_message(900_000 + k))
                mids.append(message_id_for(900_000 + k))
            t1 = time.monotonic()
            if not reader.wait(lambda: all(m in reader.tracked for m in mids), 180):
                raise RuntimeError(f"{sum(m in reader.tracked for m in mids)} of {len(mids)} deliveries tracked")
            out["deliveries_tracked_s"] = round(time.monotonic() - t1, 2)
            out["after_deliveries"] = proc_status(proc.pid)
        out["errors"] = [p for p in reader.problems if '"level": "error"' in p][:5]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out["exit_code"] = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out["exit_code"] = proc.wait()
        reader.join(5)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mailboxes", type=int, default=100)
    ap.add_argument("--messages", type=int, default=2, help="messages per folder before the start")
    ap.add_argument("--settle", type=float, default=20.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    base = Path(tempfile.mkdtemp(prefix="mailfiler-graph-memory-"))
    (base / "tls").mkdir()
    try:
        with GraphFake(make_tls(base / "tls")) as graph:
            graph.identity.register_app(APP_ID, secret=SECRET)
            users = [upn(k) for k in range(args.mailboxes)]
            for k, u in enumerate(users):
                graph.add_user(u, f"User {k}", [f for f, _ in FOLDERS])
                for j, (folder, _) in enumerate(FOLDERS):
                    for m in range(args.messages):
                        graph.deliver(u, folder, realistic_message(k * 1000 + j * 10 + m))
            graph_requests(graph)  # start counting
            baseline = run_daemon(base / "one", graph, users[:1], 5.0, deliveries=False)
            full = run_daemon(base / "all", graph, users, args.settle, deliveries=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = {**benchconfig.run_info("graph_memory", load_before), "baseline": baseline, "mailfiler": full}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    b, f = baseline, full
    print(
        f"{args.mailboxes} Graph mailboxes x {len(FOLDERS)} tracked folders; load average before {load_before[0]:.2f}"
    )
    print(f"  baseline (1 mailbox) at watching: {b['at_watching']}")
    for key in ("at_watching", "after_settle", "after_deliveries"):
        print(f"  all, {key:<18}: {f.get(key)}")
    print(
        f"  all watching after {f['all_watching_s']} s; idle: {f['idle_cpu_pct']} % CPU,"
        f" {f['idle_requests_per_s']} Graph requests/s; deliveries tracked in {f.get('deliveries_tracked_s')} s"
    )
    per = (f["after_deliveries"]["rss_mb"] - b["at_watching"]["rss_mb"]) / max(1, args.mailboxes - 1)
    print(f"  per extra mailbox: {per:.2f} MB; errors {f['errors']}; exit code {f['exit_code']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
