#!/usr/bin/env python3
"""Drop-to-tracked latency over IMAP, beside a bare aioimaplib IDLE client seeing the same APPENDs.

    .venv/bin/python bench/imap_latency.py                 # 200 APPENDs, human-readable figures
    .venv/bin/python bench/imap_latency.py --drops 500 --json

What is measured (one run, the same APPENDs for both)
  server    A throw-away Dovecot on loopback, started by this script with the test suite's
            fixture code (tests/servers/dovecot.py): one user, the four tracked folders of
            bench/benchconfig.py.
  mailfiler The real daemon (``python -m mailfiler --log-format json run``) configured with
            ``imap:`` for that user, fresh SQLite store.  Latency: from the moment the APPEND's
            tagged OK is back (a plain imaplib client in this process) to the arrival of the
            daemon's ``tracked`` JSON log line for that Message-ID on its stderr pipe (the line
            is written after the commit).  The daemon uses its own strategy (NOTIFY on Dovecot:
            one listener connection for every folder).
  baseline  A bare aioimaplib client in a thread of this process: one connection per tracked
            folder, each SELECTed and IDLEing, the way the aioimaplib docs show.  Latency: from
            the same APPEND's OK to the ``EXISTS`` push that counts the new message on that
            folder's connection.  This is the server's own push delay (Dovecot batches its
            notifications: ~0.5 s).
  baseline, NOTIFY  The same with RFC 5465 NOTIFY, the daemon's own strategy on Dovecot: one
            more bare aioimaplib connection (NOTIFY registered in aioimaplib's command table,
            as ../shared/reference/libs.md shows) that IDLEs on INBOX with ``NOTIFY SET ...
            (personal (MessageNew MessageExpunge))``; latency to the ``STATUS`` push that
            counts the new message.  This is the floor for the daemon on this server.

APPENDs go round-robin over the folders, one every 100-200 ms by default; five warm-up APPENDs
(waited for) are not counted.  At the end the store is checked (one activity per APPEND) and the
daemon is stopped with SIGTERM.  Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import benchconfig  # noqa: E402
import yaml  # noqa: E402
from aioimaplib import aioimaplib  # noqa: E402
from benchconfig import FOLDERS  # noqa: E402
from latency import LogReader, Pace, paced_drops, summary  # noqa: E402

from tests.mailgen import message_id_for, realistic_message  # noqa: E402
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot  # noqa: E402

TARGET_GAP_S = 0.3


def write_imap_config(base: Path, user: ImapUser, folders: list[str], *, writer: str) -> Path:
    """bench/benchconfig.py's mailbox, on ``user``'s IMAP account instead of a Maildir."""
    cfg = benchconfig.write_config(base, "unused", folders, writer=writer)
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    secret = base / "imap.password"
    secret.write_text(user.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    kw = user.settings_kwargs()
    for mb in data["mailboxes"]:
        mb.pop("maildir", None)
        mb.pop("layout", None)
        mb["imap"] = {
            "host": kw["host"],
            "port": kw["port"],
            "username": kw["username"],
            "password_file": str(secret),
            "tls": "none",
        }
    cfg.write_text(f"# written by {writer}\n" + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return cfg


# -- baseline: bare aioimaplib IDLE, one connection per folder ------------------------------


# RFC 5465 NOTIFY is not in aioimaplib's command table (libs.md section 2)
aioimaplib.Commands.setdefault(
    "NOTIFY", aioimaplib.Cmd("NOTIFY", (aioimaplib.AUTH, aioimaplib.SELECTED), aioimaplib.Exec.is_sync)
)
STATUS_PUSH = re.compile(rb'^STATUS ("?)(.+?)\1 \((.*)\)$')


class BareIdle:
    """One aioimaplib connection per folder, SELECTed and IDLEing, and one NOTIFY connection,
    in a thread of their own.  ``seen[folder][n]`` / ``notified[folder][n]``: when the push
    saying the folder holds ``n`` messages (or more) first arrived on the folder's IDLE
    connection / on the NOTIFY connection."""

    def __init__(self, user: ImapUser, folders: list[str]) -> None:
        self.user = user
        self.folders = folders
        self.seen: dict[str, dict[int, float]] = {f: {} for f in folders}
        self.notified: dict[str, dict[int, float]] = {f: {} for f in folders}
        self.cond = threading.Condition()
        self.ready = threading.Event()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="bare-idle", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(30):
            raise RuntimeError(f"the bare IDLE clients did not start: {self.errors}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def wait_for(self, folder: str, count: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: count in self.seen[folder] and count in self.notified[folder], timeout)

    def _record(self, table: dict[str, dict[int, float]], folder: str, count: int, at: float) -> None:
        # two APPENDs may be told in one push: the count jumps past the first
        with self.cond:
            seen = table[folder]
            for n in range(count, 0, -1):
                if n in seen:
                    break
                seen[n] = at
            self.cond.notify_all()

    async def _main(self) -> None:
        started: list[asyncio.Event] = []
        tasks = []
        for folder in [*self.folders, None]:
            ev = asyncio.Event()
            started.append(ev)
            tasks.append(asyncio.create_task(self._idle(folder, ev)))
        await asyncio.wait([asyncio.create_task(e.wait()) for e in started], timeout=20)
        self.ready.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _idle(self, folder: str | None, started: asyncio.Event) -> None:
        """IDLE on ``folder``; None: IDLE on INBOX with NOTIFY for every folder."""
        client = aioimaplib.IMAP4(host="127.0.0.1", port=self.user.server.port, timeout=30)
        try:
            await client.wait_hello_from_server()
            await client.login(self.user.name, self.user.password)
            await client.select(folder or "INBOX")
            if folder is None:
                protocol = client.protocol
                command = aioimaplib.Command(
                    "NOTIFY",
                    protocol.new_tag(),
                    "SET",
                    "(selected (MessageNew MessageExpunge))",
                    "(personal (MessageNew MessageExpunge))",
                    loop=protocol.loop,
                )
                response = await protocol.execute(command)
                if response.result != "OK":
                    raise RuntimeError(f"NOTIFY SET: {response}")
            while not self._stop.is_set():
                idle = await client.idle_start(timeout=25)
                started.set()
                while client.has_pending_idle() and not self._stop.is_set():
                    try:
                        lines = await client.wait_server_push(timeout=0.5)
                    except TimeoutError:
                        continue
                    now = time.monotonic()
                    if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                        break
                    for line in lines if isinstance(lines, list) else []:
                        self._push(folder, bytes(line), now)
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(idle, 5)
            await client.logout()
        except Exception as exc:  # noqa: BLE001 - reported with the figures
            self.errors.append(f"{folder}: {type(exc).__name__}: {exc}")
            started.set()

    def _push(self, folder: str | None, line: bytes, at: float) -> None:
        parts = line.split()
        if folder is not None:
            if len(parts) == 2 and parts[1] == b"EXISTS" and parts[0].isdigit():
                self._record(self.seen, folder, int(parts[0]), at)
            return
        match = STATUS_PUSH.match(line)
        if match is None:
            return
        name, items = match.group(2).decode("utf-8", "replace"), match.group(3).split()
        if name in self.notified and b"MESSAGES" in items:
            self._record(self.notified, name, int(items[items.index(b"MESSAGES") + 1]), at)


# -- the run ----------------------------------------------------------------------------------


def run(server: DovecotServer, base: Path, n: int, warmup: int, pace: Pace, seed: int) -> dict[str, object]:
    user = server.add_user()
    folders = [f for f, _ in FOLDERS]
    for folder in folders:
        user.create_folder(folder)
    cfg = write_imap_config(base, user, folders, writer="bench/imap_latency.py")
    bare = BareIdle(user, folders)
    bare.start()
    cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "run"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MAILFILER_CONFIG"):
        env.pop(var, None)
    t_spawn = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    reader = LogReader(proc.stderr)
    reader.start()
    admin = user.client()
    counts = dict.fromkeys(folders, 0)
    # (message id, folder, its count in the folder after the APPEND, time the APPEND's OK came back)
    drops: list[tuple[str, str, int, float]] = []

    def append(k: int) -> str:
        folder = folders[k % len(folders)]
        data = realistic_message(k, seed=seed).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        admin.append(folder, data)
        t = time.monotonic()
        counts[folder] += 1
        drops.append((message_id_for(k, seed=seed), folder, counts[folder], t))
        return drops[-1][0]

    result: dict[str, object] = {}
    try:
        reader.wait_watching(proc)
        result["startup_s"] = round(time.monotonic() - t_spawn, 3)
        reader.warm_up(append, warmup)
        t0 = time.monotonic()
        paced_drops(n, pace, lambda k: append(warmup + k))
        result["append_phase_s"] = round(time.monotonic() - t0, 3)
        wanted = {d[0] for d in drops}
        reader.wait(lambda: wanted <= reader.tracked.keys(), 30)
        for _, folder, count, _ in drops:
            bare.wait_for(folder, count, 5)
    finally:
        admin.close()
        bare.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        reader.join(5)
    measured = drops[warmup:]
    daemon_lat = {mid: reader.tracked[mid] - t for mid, _, _, t in measured if mid in reader.tracked}
    bare_lat = {mid: bare.seen[f][c] - t for mid, f, c, t in measured if c in bare.seen[f]}
    notify_lat = {mid: bare.notified[f][c] - t for mid, f, c, t in measured if c in bare.notified[f]}
    notify_gaps = [daemon_lat[mid] - notify_lat[mid] for mid in daemon_lat if mid in notify_lat]
    both = [mid for mid in daemon_lat if mid in bare_lat]
    gaps = [daemon_lat[mid] - bare_lat[mid] for mid in both]
    with sqlite3.connect(f"file:{base / 'store.db'}?mode=ro", uri=True) as con:
        activities = con.execute("select count(*) from activity").fetchone()[0]
        locations = con.execute("select count(*) from location where gone_at is null").fetchone()[0]
        shunted = con.execute("select count(*) from shunt").fetchone()[0]
    slow = {
        name: sum(1 for v in values if v > 1.0)
        for name, values in (
            ("bare_idle", bare_lat.values()),
            ("bare_notify", notify_lat.values()),
            ("mailfiler", daemon_lat.values()),
        )
    }
    per_folder = {
        f: summary([daemon_lat[mid] for mid, g, _, _ in measured if g == f and mid in daemon_lat]) for f in folders
    }
    result.update(
        {
            "bare_idle_push": summary(list(bare_lat.values())),
            "mailfiler_tracked": summary(list(daemon_lat.values())),
            "mailfiler_minus_bare_same_append": summary(gaps),
            "bare_notify_push": summary(list(notify_lat.values())),
            "mailfiler_minus_bare_notify_same_append": summary(notify_gaps),
            "mailfiler_per_folder": per_folder,
            "over_1s": slow,
            "missed": {"mailfiler": n - len(daemon_lat), "bare": n - len(bare_lat), "notify": n - len(notify_lat)},
            "bare_errors": bare.errors,
            "db": {"expected": warmup + n, "activities": activities, "locations": locations, "shunted": shunted},
            "exit_code": rc,
            "clean_stop": reader.stopped,
            "problems": reader.problems[:10],
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--drops", type=int, default=200, help="measured APPENDs (default 200)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up APPENDs, not counted (default 5)")
    ap.add_argument("--pace-ms", type=float, nargs=2, default=(100.0, 200.0), metavar=("LO", "HI"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    t_start = time.monotonic()
    servers = start_dovecot(tls=False)
    server = next(servers)
    base = Path(tempfile.mkdtemp(prefix="mailfiler-imap-latency-"))
    try:
        out = run(server, base, args.drops, args.warmup, Pace(*args.pace_ms), args.seed)
    finally:
        servers.close()  # stops Dovecot and removes its directory
    shutil.rmtree(base, ignore_errors=True)
    bare, mf, gap = out["bare_idle_push"], out["mailfiler_tracked"], out["mailfiler_minus_bare_same_append"]
    assert isinstance(bare, dict) and isinstance(mf, dict) and isinstance(gap, dict)
    out.update(
        {
            **benchconfig.run_info("imap_latency", load_before),
            "drops": args.drops,
            "pace_ms": list(args.pace_ms),
            "target_median_gap_s": TARGET_GAP_S,
            "median_gap_s": round((mf["median"] - bare["median"]) / 1000, 4) if mf.get("n") and bare.get("n") else None,
            "wall_s": round(time.monotonic() - t_start, 1),
        }
    )
    out["target_met"] = out["median_gap_s"] is not None and out["median_gap_s"] <= TARGET_GAP_S
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    lo, hi = args.pace_ms
    print(
        f"{args.drops} APPENDs over {len(FOLDERS)} tracked folders, one every {lo:g}-{hi:g} ms;"
        f" {os.cpu_count()} CPUs, load average before {load_before[0]:.2f}"
    )
    print(f"  {'':<44} {'median':>9} {'p90':>9} {'p99':>9} {'max':>9}  (ms)")
    notify, notify_gap = out["bare_notify_push"], out["mailfiler_minus_bare_notify_same_append"]
    assert isinstance(notify, dict) and isinstance(notify_gap, dict)
    for label, s in (
        ("baseline: bare aioimaplib IDLE push", bare),
        ("baseline: bare aioimaplib NOTIFY push", notify),
        ("mailfiler daemon: APPEND OK -> tracked", mf),
        ("mailfiler minus IDLE baseline, same APPEND", gap),
        ("mailfiler minus NOTIFY baseline, same APPEND", notify_gap),
    ):
        if s.get("n"):
            print(f"  {label:<44} {s['median']:>9.1f} {s['p90']:>9.1f} {s['p99']:>9.1f} {s['max']:>9.1f}")
    print(
        f"  ratio of medians: {mf['median'] / bare['median']:.2f}x the bare IDLE push delay,"
        f" {mf['median'] / notify['median']:.2f}x the bare NOTIFY push delay"
    )
    print(f"  APPENDs seen later than 1 s: {out['over_1s']}")
    db = out["db"]
    print(
        f"  store: {db['activities']} activities, {db['locations']} locations, {db['shunted']} shunted"  # type: ignore[index]
        f" for {db['expected']} APPENDs; missed {out['missed']}; exit code {out['exit_code']}"  # type: ignore[index]
    )
    if out["bare_errors"] or out["problems"]:
        print(f"  problems: {out['bare_errors']} {out['problems']}")
    verdict = "MET" if out["target_met"] else "NOT MET"
    print(f"target: median within {TARGET_GAP_S} s of the bare push delay: {verdict} (gap {out['median_gap_s']} s)")
    print(f"wall time {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
