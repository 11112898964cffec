#!/usr/bin/env python3
"""Resident memory of one daemon watching 100 IMAP mailboxes with 5 tracked folders each.

    .venv/bin/python bench/imap_memory.py                  # 100 mailboxes, 5 folders each
    .venv/bin/python bench/imap_memory.py --mailboxes 20 --json

Setup: a throw-away Dovecot on loopback started by this script (the test suite's fixture
code, tests/servers/dovecot.py, with Dovecot's process limits raised: every IMAP connection
is a process of its own, and the default limit is 100), --mailboxes users, each with five
tracked folders (one of them with a non-ASCII name) holding --messages messages each, written
straight into the server's storage.

What is measured (VmRSS and VmHWM from /proc/PID/status of ``mailfiler run``)
  baseline   The same daemon on a config with one of those mailboxes: start-up, imports,
             store, one mailbox's connections.
  mailfiler  The daemon on a config with all of them, sampled when every mailbox has logged
             ``watching`` (backfill done, listeners up), after --settle seconds of idling, and
             after one APPEND into each mailbox has been tracked.  Also: the daemon's open
             sockets (its IMAP connections) and threads, and its CPU time (user + system,
             /proc/PID/stat) over the idle phase, mostly the watchers' sweeps, and the CPU
             time of Dovecot's processes (its process group) over the same phase: what
             answering the sweeps costs the server.

Target: under 200 MB resident for 100 mailboxes.  Not a test: it prints numbers.
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
from latency import LogReader  # noqa: E402

from tests.mailgen import (  # noqa: E402
    drop_into_maildir,
    maildirpp_folder_dir,
    make_maildir_folder,
    message_id_for,
    realistic_message,
)
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot  # noqa: E402

TARGET_MB = 200.0
FOLDERS: list[tuple[str, str | None]] = [
    ("Tracked/Contoso", "account:contoso"),
    ("Tracked/Fabrikam", "account:fabrikam"),
    ("Cases/CAS-01001", "case:CAS-01001"),
    ("Tracked/Unfiled", None),
    ("Kunder/Åkesson AB", "account:contoso"),
]
RECORDS = [
    {"entity": "account", "key": "contoso", "name": "Contoso Ltd", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam Inc", "domains": ["fabrikam.com"]},
    {"entity": "case", "key": "CAS-01001", "name": "Contoso invoice dispute", "parent": "account:contoso"},
]
#: every IMAP connection is a Dovecot process; the defaults allow 100 of them
DOVECOT_LIMITS = "default_process_limit = 1000\ndefault_client_limit = 5000\n"


def raise_limits(server: DovecotServer) -> None:
    original = server.write_config

    def write_config() -> None:
        original()
        server.conf.write_text(server.conf.read_text() + "# bench/imap_memory.py\n" + DOVECOT_LIMITS)

    server.write_config = write_config  # type: ignore[method-assign]
    server.restart()


def make_users(server: DovecotServer, n: int, messages: int) -> list[ImapUser]:
    """``n`` users with the five folders and ``messages`` messages in each, written as
    Maildir files (Dovecot indexes them at the first look)."""
    users = []
    uid, gid = server._mail_owner()  # noqa: SLF001 - the owner Dovecot runs mail as
    k = 0
    for u in range(n):
        user = server.add_user(f"mem{u:03d}")
        root = user.home / "Maildir"
        dirs = [make_maildir_folder(root)]
        for folder, _ in FOLDERS:
            dirs.append(make_maildir_folder(maildirpp_folder_dir(root, folder)))
        for d in dirs[1:]:
            for _ in range(messages):
                drop_into_maildir(d, realistic_message(k, seed=u), fsync=False)
                k += 1
        if server.as_root:
            for dirpath, dirnames, filenames in os.walk(user.home):
                for name in [*dirnames, *filenames]:
                    os.chown(os.path.join(dirpath, name), uid, gid)
            os.chown(user.home, uid, gid)
        users.append(user)
    return users


def write_config(base: Path, users: list[ImapUser]) -> Path:
    secret = base / "imap.password"
    secret.write_text(users[0].password + "\n", encoding="utf-8")  # the fixture gives every user the same
    secret.chmod(0o600)
    mailboxes = []
    for user in users:
        kw = user.settings_kwargs()
        mailboxes.append(
            {
                "name": user.name,
                "owner": f"{user.name}@example.com",
                "imap": {
                    "host": kw["host"],
                    "port": kw["port"],
                    "username": kw["username"],
                    "password_file": str(secret),
                    "tls": "none",
                },
                "tracked_folders": [{"folder": f, **({"regarding": r} if r else {})} for f, r in FOLDERS],
            }
        )
    data = {"database": "sqlite:///store.db", "state_dir": "state", "records": RECORDS, "mailboxes": mailboxes}
    cfg = base / "mailfiler.yaml"
    cfg.write_text("# written by bench/imap_memory.py\n" + yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return cfg


def proc_status(pid: int) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                fields[key] = int(value.split()[0])
    sockets = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            sockets += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return {
        "rss_mb": round(fields.get("VmRSS", 0) / 1024, 1),
        "hwm_mb": round(fields.get("VmHWM", 0) / 1024, 1),
        "anon_mb": round(fields.get("RssAnon", 0) / 1024, 1),
        "file_mb": round(fields.get("RssFile", 0) / 1024, 1),
        "threads": fields.get("Threads", 0),
        "sockets": sockets,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU time so far of every live process in process group ``pgid`` (the test
    Dovecot's master and its IMAP processes, one per connection)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_daemon(base: Path, users: list[ImapUser], settle: float, *, appends: bool) -> dict[str, Any]:
    base.mkdir(parents=True, exist_ok=True)
    cfg = write_config(base, users)
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
        if not reader.wait(lambda: reader.events.get("watching", 0) >= n or proc.poll() is not None, 300):
            raise RuntimeError(f"only {reader.events.get('watching', 0)} of {n} mailboxes watching")
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}): {reader.problems[-5:]}")
        out["all_watching_s"] = round(time.monotonic() - t0, 2)
        out["at_watching"] = proc_status(proc.pid)
        # idle cost: mostly the watchers' sweeps (a LIST-STATUS per mailbox every 2 s)
        server = users[0].server.process
        pgid = server.pid if server is not None else None
        cpu0, t_idle = cpu_seconds(proc.pid), time.monotonic()
        dovecot0 = group_cpu_seconds(pgid) if pgid else 0.0
        time.sleep(settle)
        idle_s = time.monotonic() - t_idle
        out["idle_cpu_pct"] = round(100 * (cpu_seconds(proc.pid) - cpu0) / idle_s, 1)
        # what answering those sweeps costs the server
        out["dovecot_idle_cpu_pct"] = round(100 * (group_cpu_seconds(pgid) - dovecot0) / idle_s, 1) if pgid else None
        out["after_settle"] = proc_status(proc.pid)
        if appends:
            mids = []
            for k, user in enumerate(users):
                mid = message_id_for(900_000 + k)
                with user.client() as admin:
                    admin.append(FOLDERS[k % len(FOLDERS)][0], realistic_message(900_000 + k).replace(b"\n", b"\r\n"))
                mids.append(mid)
            t1 = time.monotonic()
            if not reader.wait(lambda: all(m in reader.tracked for m in mids), 120):
                raise RuntimeError(f"{sum(m in reader.tracked for m in mids)} of {len(mids)} APPENDs tracked")
            out["appends_tracked_s"] = round(time.monotonic() - t1, 2)
            out["after_appends"] = proc_status(proc.pid)
        out["tracked"] = len(reader.tracked)
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
    ap.add_argument("--mailboxes", type=int, default=100, help="IMAP mailboxes (Dovecot users), default 100")
    ap.add_argument("--messages", type=int, default=2, help="messages already in each folder (default 2)")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds of idling before the second sample")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    servers = start_dovecot(tls=False)
    server = next(servers)
    work = Path(tempfile.mkdtemp(prefix="mailfiler-imap-memory-"))
    out: dict[str, Any] = {
        **benchconfig.run_info("imap_memory", load_before),
        "target_mb": TARGET_MB,
    }
    try:
        raise_limits(server)
        t0 = time.monotonic()
        users = make_users(server, args.mailboxes, args.messages)
        out["setup_s"] = round(time.monotonic() - t0, 1)
        out["baseline_one_mailbox"] = run_daemon(work / "one", users[:1], args.settle, appends=False)
        out["mailfiler"] = run_daemon(work / "all", users, args.settle, appends=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        servers.close()
    mf, one = out["mailfiler"], out["baseline_one_mailbox"]
    samples = [mf[k] for k in ("at_watching", "after_settle", "after_appends") if k in mf]
    peak = max(s["hwm_mb"] for s in samples)
    out["peak_rss_mb"] = peak
    out["per_extra_mailbox_mb"] = round(
        (mf["after_settle"]["rss_mb"] - one["after_settle"]["rss_mb"]) / max(1, args.mailboxes - 1), 3
    )
    out["target_met"] = peak < TARGET_MB
    out["wall_s"] = round(time.monotonic() - t_start, 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"one daemon, {args.mailboxes} IMAP mailboxes x {len(FOLDERS)} tracked folders"
        f" ({args.messages} messages in each folder at start); {os.cpu_count()} CPUs,"
        f" load average before {load_before[0]:.2f}"
    )
    print(f"  {'':<46} {'RSS':>8} {'peak':>8} {'anon':>8} {'sockets':>8} {'threads':>8}  (MB)")
    rows = [("baseline: 1 mailbox, after settle", one["after_settle"])]
    rows += [
        (f"{args.mailboxes} mailboxes, all watching ({mf['all_watching_s']} s)", mf["at_watching"]),
        (f"{args.mailboxes} mailboxes, after {args.settle:g} s idle", mf["after_settle"]),
        (f"{args.mailboxes} mailboxes, after 1 APPEND each tracked", mf.get("after_appends")),
    ]
    for label, s in rows:
        if s:
            print(
                f"  {label:<46} {s['rss_mb']:>8.1f} {s['hwm_mb']:>8.1f} {s['anon_mb']:>8.1f}"
                f" {s['sockets']:>8} {s['threads']:>8}"
            )
    print(f"  daemon CPU while idle: {mf['idle_cpu_pct']} % of one core (baseline {one['idle_cpu_pct']} %)")
    print(
        f"  Dovecot CPU meanwhile (its processes, answering the sweeps): {mf['dovecot_idle_cpu_pct']} % of one core"
        f" (baseline {one['dovecot_idle_cpu_pct']} %)"
    )
    print(
        f"  per extra mailbox: {out['per_extra_mailbox_mb'] * 1024:.0f} KB;"
        f" {mf['tracked']} messages tracked; errors: {mf['errors'] or 'none'}; exit code {mf['exit_code']}"
    )
    verdict = "MET" if out["target_met"] else "NOT MET"
    print(f"target: peak resident < {TARGET_MB:.0f} MB: {verdict} ({peak:.1f} MB)")
    print(f"wall time {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
