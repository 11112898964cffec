#!/usr/bin/env python3
"""Backfill of a 10,000-item Exchange folder (the fake Exchange) beside a raw exchangelib read.

    .venv/bin/python bench/ews_backfill.py                # 10,000 messages
    .venv/bin/python bench/ews_backfill.py --messages 2000 --json

What is measured (one run, the same folder)
  raw       exchangelib alone in this process: SyncFolderItems of the folder's ids (pages of
            512), then GetItem of every id with MimeContent only, 100 ids per request (the
            batched read a hand-written exporter would do).  Messages per second.
  mailfiler ``mailfiler once`` (a subprocess, fresh SQLite store) tracking that folder under
            impersonation: listing, fetching, parsing, correlating, committing and setting
            the Outlook category on every message.  Messages per second, and its ratio to raw
            (target: at least 50 %).
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchconfig
from ews_common import users, write_ews_config
from exchangelib import IMPERSONATION, Account, Build, Configuration, Credentials, Version
from exchangelib.protocol import FailFast, close_connections

from tests.mailgen import realistic_message
from tests.servers.ews import EwsServer

MAILBOX = "alice@example.com"
FOLDER = "Tracked/Contoso"
TARGET = 0.5


def raw_read(url: str) -> tuple[float, int]:
    config = Configuration(service_endpoint=url, credentials=Credentials("svc", "pw-svc"), auth_type="NTLM",
                           version=Version(build=Build(15, 1, 2507, 6)), retry_policy=FailFast())  # fmt: skip
    account = Account(MAILBOX, config=config, autodiscover=False, access_type=IMPERSONATION)
    folder = account.msg_folder_root / "Tracked" / "Contoso"
    t0 = time.monotonic()
    ids = [
        item.id for kind, item in folder.sync_items(only_fields=["id"], max_changes_returned=512) if kind == "create"
    ]
    n = sum(
        len(i.mime_content) > 0
        for i in account.fetch(ids=[(i, None) for i in ids], only_fields=["mime_content"], chunk_size=100)
    )
    elapsed = time.monotonic() - t0
    close_connections()
    return elapsed, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    base = Path(tempfile.mkdtemp(prefix="mailfiler-ews-backfill-"))
    out: dict[str, object] = {**benchconfig.run_info("ews_backfill", load_before), "messages": args.messages}
    with EwsServer(users([MAILBOX], [FOLDER])) as server:
        size = 0
        for k in range(args.messages):
            data = realistic_message(k, seed=11).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            size += len(data)
            server.deliver(MAILBOX, data, FOLDER)
        out["bytes"] = size
        raw_s, raw_n = raw_read(server.ews_url)
        cfg = write_ews_config(base, server.ews_url, [MAILBOX], [FOLDER], writer="bench/ews_backfill.py")
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "MAILFILER_CONFIG")}
        before = len(server.requests)
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "mailfiler", "--config", str(cfg), "once"],
                             capture_output=True, text=True, env=env, timeout=3600)  # fmt: skip
        mf_s = time.monotonic() - t0
        requests = len(server.requests) - before
        ops = server.operations()[before:]
    with sqlite3.connect(f"file:{base / 'store.db'}?mode=ro", uri=True) as con:
        activities = con.execute("select count(*) from activity").fetchone()[0]
    out.update(
        {
            "raw_s": round(raw_s, 2), "raw_msgs_per_s": round(raw_n / raw_s, 1),
            "mailfiler_s": round(mf_s, 2), "mailfiler_msgs_per_s": round(activities / mf_s, 1),
            "ratio": round(raw_s / mf_s, 3), "target": TARGET, "activities": activities,
            "exit_code": res.returncode, "requests": requests,
            "operations": {op: ops.count(op) for op in sorted(set(ops))},
        }
    )  # fmt: skip
    out["target_met"] = out["ratio"] >= TARGET  # type: ignore[operator]
    if res.returncode != 0:
        out["stderr"] = res.stderr[-2000:]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.messages} messages ({size / 1e6:.1f} MB) in one folder; load average before {load_before[0]:.2f}")
    print(f"  raw exchangelib (SyncFolderItems + GetItem x100): {raw_s:7.2f} s  {out['raw_msgs_per_s']:>8} msg/s")
    print(f"  mailfiler once (tracked, committed, categorised): {mf_s:7.2f} s  {out['mailfiler_msgs_per_s']:>8} msg/s")
    print(f"  ratio {out['ratio']} (target >= {TARGET}: {'MET' if out['target_met'] else 'NOT MET'});"
          f" {activities} activities; {requests} EWS requests {out['operations']}")  # fmt: skip
    if res.returncode != 0:
        print(res.stderr[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
