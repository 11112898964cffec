#!/usr/bin/env python3
"""Memory and connections of one daemon watching 100 Exchange mailboxes x 5 tracked folders
under impersonation (the fake Exchange).

    .venv/bin/python bench/ews_memory.py                  # 100 mailboxes, 5 folders each
    .venv/bin/python bench/ews_memory.py --mailboxes 20 --json

What is measured
  One ``mailfiler run`` (fresh SQLite store) whose config has N ``ews:`` mailboxes, one service
  account impersonating each, five tracked folders each (a few messages in each, tracked at
  start).  Once every mailbox is watching and a delivery to the last mailbox is tracked:
  VmRSS and VmHWM from /proc/PID/status, the daemon's TCP connections to the server (its
  sockets matched in /proc/net/tcp), the fake's open streaming connections of the service
  account (Exchange allows 3), and its subscriptions (one per mailbox).  Target: < 200 MB.
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchconfig
from ews_common import users, write_ews_config
from latency import LogReader

from tests.mailgen import message_id_for, realistic_message
from tests.servers.ews import EwsServer

FOLDERS = ["Tracked/Contoso", "Tracked/Fabrikam", "Cases/CAS-01001", "Tracked/Unfiled", "Tracked/Contoso/Archive"]
TARGET_MB = 200


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def tcp_connections(pid: int, port: int) -> int:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            remote_port = int(parts[2].split(":")[1], 16)
            if parts[9] in inodes and remote_port == port and parts[3] == "01":  # ESTABLISHED
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mailboxes", type=int, default=100)
    ap.add_argument("--per-folder", type=int, default=3, help="messages in each folder at start")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    base = Path(tempfile.mkdtemp(prefix="mailfiler-ews-memory-"))
    mailboxes = [f"user{n:03d}@example.com" for n in range(args.mailboxes)]
    out: dict[str, object] = {**benchconfig.run_info("ews_memory", load_before), "mailboxes": args.mailboxes,
                              "folders_each": len(FOLDERS)}  # fmt: skip
    import benchconfig as bc

    regarding = dict(bc.FOLDERS)
    regarding["Tracked/Contoso/Archive"] = "account:contoso"
    bc.FOLDERS = tuple(regarding.items())  # the fifth folder, for write_config
    with EwsServer(users(mailboxes, FOLDERS)) as server:
        k = 0
        for address in mailboxes:
            for folder in FOLDERS:
                for _ in range(args.per_folder):
                    server.deliver(address, realistic_message(k, seed=3), folder)
                    k += 1
        cfg = write_ews_config(base, server.ews_url, mailboxes, FOLDERS, writer="bench/ews_memory.py")
        cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "run"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MAILFILER_CONFIG"):
            env.pop(var, None)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        reader = LogReader(proc.stderr)
        reader.start()
        try:
            ok = reader.wait(lambda: reader.events.get("watching", 0) >= args.mailboxes or proc.poll() is not None, 900)
            out["all_watching"] = ok
            out["startup_s"] = round(time.monotonic() - t0, 1)
            out["tracked_at_start"] = len(reader.tracked)
            time.sleep(2.0)  # the stream groups settle
            probe = realistic_message(10**6, seed=5)
            server.deliver(mailboxes[-1], probe, FOLDERS[0])
            mid = message_id_for(10**6, seed=5)
            t1 = time.monotonic()
            out["probe_tracked"] = reader.wait(lambda: mid in reader.tracked, 60)
            out["probe_latency_s"] = round(time.monotonic() - t1, 3)
            out["rss_mb"] = round(status_kb(proc.pid, "VmRSS") / 1024, 1)
            out["hwm_mb"] = round(status_kb(proc.pid, "VmHWM") / 1024, 1)
            out["threads"] = status_kb(proc.pid, "Threads")
            out["tcp_connections"] = tcp_connections(proc.pid, server.port)
            out["streams_open"] = dict(server.hub.open_streams)
            out["subscriptions"] = len(server.subscriptions())
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                out["exit_code"] = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out["exit_code"] = proc.wait()
            reader.join(5)
        out["problems"] = reader.problems[:10]
    out["target_met"] = bool(out.get("rss_mb")) and out["rss_mb"] < TARGET_MB  # type: ignore[operator]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for key, value in out.items():
        print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
