#!/usr/bin/env python3
"""Drop-to-tracked latency of the running daemon, against a bare watchfiles baseline.

    .venv/bin/python bench/latency.py                 # 200 drops, human-readable figures
    .venv/bin/python bench/latency.py --drops 500 --json

What is measured
  mailfiler  The real daemon (``python -m mailfiler --log-format json run``) on a temp Maildir
             with four tracked folders and a fresh SQLite store.  Messages are delivered the way
             an MDA does (write tmp/, fsync, rename into new/) at a modest pace.  Latency is the
             time from the rename (taken right after ``os.rename`` returns) to the arrival of the
             daemon's ``tracked`` JSON log line for that Message-ID on its stderr pipe; the
             daemon logs that line after the transaction has committed.  A reader thread
             timestamps every line on arrival.  At the end the count in the store is checked.
  baseline   A bare ``watchfiles.awatch`` with the daemon's own step/debounce/filter settings
             (read from ``MaildirSource``) seeing the same kind of drops in this process:
             rename -> batch yielded to Python.  Plus the bare cost of reading one message
             file and ``email.message_from_bytes(policy=default)`` on it, and (for context)
             mailfiler's own ``parse_message``.

Warm-up drops (waited for one by one) are excluded from the figures.  Not a test: it prints
numbers and exits 0 unless the daemon could not be run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import inspect
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchconfig  # noqa: E402
import watchfiles  # noqa: E402
from benchconfig import FOLDERS  # noqa: E402

from mailfiler.sources.maildir import MaildirSource  # noqa: E402
from mailfiler.tracking.parse import parse_message  # noqa: E402
from tests.mailgen import (  # noqa: E402
    drop_into_maildir,
    maildir_unique_name,
    maildirpp_folder_dir,
    make_maildir_folder,
    message_id_for,
    realistic_message,
)

TARGET_MEDIAN_MS = 100.0


def write_config(base: Path) -> Path:
    return benchconfig.write_config(base, "Maildir", [f for f, _ in FOLDERS], writer="bench/latency.py")


def make_maildir(root: Path) -> list[Path]:
    make_maildir_folder(root)  # INBOX
    dirs = []
    for folder, _ in FOLDERS:
        d = make_maildir_folder(maildirpp_folder_dir(root, folder))
        (d / "maildirfolder").touch()
        dirs.append(d)
    return dirs


def watcher_settings() -> tuple[int, int]:
    """step_ms and debounce_ms exactly as the daemon's MaildirSource uses them."""
    params = inspect.signature(MaildirSource.__init__).parameters
    return int(params["step_ms"].default), int(params["debounce_ms"].default)


# -- statistics ------------------------------------------------------------------------


def summary(values_s: list[float]) -> dict[str, float | int]:
    """median, p90, p99, max (milliseconds) of latencies given in seconds."""
    if not values_s:
        return {"n": 0}
    ms = sorted(v * 1000 for v in values_s)

    def pct(p: float) -> float:
        # nearest-rank percentile
        k = max(0, min(len(ms) - 1, round(p / 100 * len(ms) + 0.5) - 1))
        return ms[k]

    return {
        "n": len(ms),
        "min": round(ms[0], 3),
        "median": round(statistics.median(ms), 3),
        "p90": round(pct(90), 3),
        "p99": round(pct(99), 3),
        "max": round(ms[-1], 3),
        "mean": round(statistics.fmean(ms), 3),
    }


# -- pacing ------------------------------------------------------------------------------


@dataclass
class Pace:
    lo_ms: float
    hi_ms: float
    rng: random.Random = field(default_factory=lambda: random.Random(42))

    def gap(self) -> float:
        return self.rng.uniform(self.lo_ms, self.hi_ms) / 1000


def paced_drops(
    n: int,
    pace: Pace,
    drop: Callable[[int], None],
    *,
    wait_each: Callable[[int], bool] | None = None,
) -> None:
    """Call drop(k) n times, one every pace.gap() seconds (measured from the previous drop
    start), or after the previous one was seen when wait_each is given."""
    next_at = time.monotonic()
    for k in range(n):
        now = time.monotonic()
        if next_at > now:
            time.sleep(next_at - now)
        drop(k)
        if wait_each is not None:
            wait_each(k)
            next_at = time.monotonic() + pace.gap()
        else:
            next_at += pace.gap()


# -- baseline: bare watchfiles -------------------------------------------------------------


class BareWatcher:
    """watchfiles.awatch in a thread with the daemon's settings; records when each file name
    under new/ is first yielded to Python."""

    def __init__(self, root: Path, step_ms: int, debounce_ms: int) -> None:
        self.root = root
        self.step_ms = step_ms
        self.debounce_ms = debounce_ms
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bare-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def wait_for(self, name: str, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: name in self.seen, timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def keep(change: watchfiles.Change, path: str) -> bool:
            # the daemon's filter for message files (it also admits folder directories, which
            # this benchmark never creates or renames)
            return "/new" in path or "/cur" in path

        self._ready.set()
        async for batch in watchfiles.awatch(
            self.root,
            watch_filter=keep,
            step=self.step_ms,
            debounce=self.debounce_ms,
            stop_event=self._stop,
            recursive=True,
            rust_timeout=5_000,
            yield_on_timeout=False,
        ):
            t = time.monotonic()
            with self.cond:
                for kind, path in batch:
                    p = Path(path)
                    if kind == watchfiles.Change.added and p.parent.name == "new":
                        self.seen.setdefault(p.name, t)
                self.cond.notify_all()


@dataclass
class Drop:
    index: int
    folder_dir: Path
    message_id: str
    path: Path | None = None
    t_rename: float = 0.0  # time.monotonic() right after the rename
    wall_rename: float = 0.0  # time.time() at the same moment


def mda_drop(d: Drop, data: bytes, name: str | None = None) -> None:
    d.path = drop_into_maildir(d.folder_dir, data, name=name)  # tmp/ + fsync + rename into new/
    d.t_rename = time.monotonic()
    d.wall_rename = time.time()


def run_baseline(base: Path, n: int, warmup: int, pace: Pace, seed: int, wait: bool) -> dict[str, object]:
    root = base / "Maildir"
    dirs = make_maildir(root)
    step_ms, debounce_ms = watcher_settings()
    watcher = BareWatcher(root, step_ms, debounce_ms)
    watcher.start()
    # the bench uses message numbers far from the daemon run's, so files differ between runs
    drops = [Drop(k, dirs[k % len(dirs)], message_id_for(10_000 + k, seed=seed)) for k in range(warmup + n)]
    names: list[str] = []
    try:
        for k in range(warmup):  # also proves the watches are in place
            names.append(maildir_unique_name())
            mda_drop(drops[k], realistic_message(10_000 + k, seed=seed), names[k])
            watcher.wait_for(names[k], 10)

        def drop(k: int) -> None:
            j = warmup + k
            names.append(maildir_unique_name())
            mda_drop(drops[j], realistic_message(10_000 + j, seed=seed), names[j])

        paced_drops(n, pace, drop, wait_each=(lambda k: watcher.wait_for(names[warmup + k], 10)) if wait else None)
        for name in names[warmup:]:
            watcher.wait_for(name, 5)
    finally:
        watcher.stop()
    lat = [watcher.seen[names[j]] - drops[j].t_rename for j in range(warmup, warmup + n) if names[j] in watcher.seen]

    # bare read + parse of the same files (they are still in new/)
    read_parse: list[float] = []
    mf_parse: list[float] = []
    for d in drops[warmup:]:
        assert d.path is not None
        t0 = time.perf_counter()
        raw = d.path.read_bytes()
        email.message_from_bytes(raw, policy=email.policy.default)
        read_parse.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        parse_message(d.path.read_bytes())
        mf_parse.append(time.perf_counter() - t0)
    return {
        "step_ms": step_ms,
        "debounce_ms": debounce_ms,
        "watcher": summary(lat),
        "missed": n - len(lat),
        "read_parse": summary(read_parse),
        "mailfiler_parse_message": summary(mf_parse),
    }


# -- the daemon ---------------------------------------------------------------------------


class LogReader:
    """Reads the daemon's JSON log lines from its stderr; timestamps each on arrival."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.cond = threading.Condition()
        self.tracked: dict[str, float] = {}  # message_id -> monotonic arrival
        self.tracked_ts: dict[str, str] = {}  # message_id -> the line's own ts (UTC, ms)
        self.events: dict[str, int] = {}
        self.problems: list[str] = []
        self.started = False
        self.stopped = False
        self._thread = threading.Thread(target=self._run, name="log-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        for raw in self.stream:
            t = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                rec = json.loads(line)
            except ValueError:
                with self.cond:
                    self.problems.append(line)
                continue
            event = rec.get("event", "log")
            with self.cond:
                self.events[event] = self.events.get(event, 0) + 1
                if event == "tracked":
                    self.tracked.setdefault(rec["message_id"], t)
                    self.tracked_ts.setdefault(rec["message_id"], rec.get("ts", ""))
                elif event == "started":
                    self.started = True
                elif event == "stopped":
                    self.stopped = True
                if rec.get("level") in ("warning", "error", "critical"):
                    self.problems.append(line)
                self.cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def wait_watching(self, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60) -> None:
        """Until the daemon logs ``watching`` (or *proc* exits); RuntimeError after *timeout*."""

        def ready() -> bool:
            return self.events.get("watching", 0) > 0 or (proc is not None and proc.poll() is not None)

        if not self.wait(ready, timeout):
            rc = f" (rc={proc.poll()})" if proc is not None else ""
            raise RuntimeError(f"the daemon did not start watching{rc}: {self.problems[-5:]}")

    def warm_up(self, drop: Callable[[int], str], count: int, timeout: float = 20) -> None:
        """Drop *count* messages one at a time (``drop(k)`` returns its Message-ID), each
        tracked before the next: not counted, they show the daemon is ready."""
        for k in range(count):
            mid = drop(k)
            if not self.wait(lambda mid=mid: mid in self.tracked, timeout):
                raise RuntimeError(f"warm-up message {mid} was not tracked: {self.problems[-5:]}")


def ts_to_epoch(ts: str) -> float | None:
    """'2024-01-02T03:04:05.678Z' -> seconds since the epoch."""
    import calendar

    try:
        whole, frac = ts.rstrip("Z").split(".")
        return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000
    except ValueError:
        return None


def run_daemon(base: Path, n: int, warmup: int, pace: Pace, seed: int, wait: bool) -> dict[str, object]:
    root = base / "Maildir"
    dirs = make_maildir(root)
    cfg = write_config(base)
    cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "run"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    t_spawn = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    reader = LogReader(proc.stderr)
    reader.start()
    drops = [Drop(k, dirs[k % len(dirs)], message_id_for(k, seed=seed)) for k in range(warmup + n)]
    result: dict[str, object] = {}
    try:
        if not reader.wait(lambda: reader.started or proc.poll() is not None, 60) or not reader.started:
            raise RuntimeError(f"the daemon did not start (rc={proc.poll()}): {reader.problems[-5:]}")
        result["startup_s"] = round(time.monotonic() - t_spawn, 3)

        def warm(k: int) -> str:  # the first drop also proves the watches are in place
            mda_drop(drops[k], realistic_message(k, seed=seed))
            return drops[k].message_id

        reader.warm_up(warm, warmup)

        def drop(k: int) -> None:
            j = warmup + k
            mda_drop(drops[j], realistic_message(j, seed=seed))

        def wait_each(k: int) -> bool:
            mid = drops[warmup + k].message_id
            return reader.wait(lambda: mid in reader.tracked, 10)

        t_first = time.monotonic()
        paced_drops(n, pace, drop, wait_each=wait_each if wait else None)
        result["drop_phase_s"] = round(time.monotonic() - t_first, 3)
        wanted = {d.message_id for d in drops}
        reader.wait(lambda: wanted <= reader.tracked.keys(), 30)
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
    lat = [reader.tracked[d.message_id] - d.t_rename for d in measured if d.message_id in reader.tracked]
    # realistic_message(i) has a PDF-ish attachment when i % 5 == 4: its blob is fsynced before the commit
    lat_att = [
        reader.tracked[d.message_id] - d.t_rename
        for d in measured
        if d.index % 5 == 4 and d.message_id in reader.tracked
    ]
    lat_plain = [
        reader.tracked[d.message_id] - d.t_rename
        for d in measured
        if d.index % 5 != 4 and d.message_id in reader.tracked
    ]
    # cross-check with the daemon's own log timestamp (wall clock, ms resolution)
    lat_ts = []
    for d in measured:
        ts = ts_to_epoch(reader.tracked_ts.get(d.message_id, ""))
        if ts is not None:
            lat_ts.append(max(0.0, ts - d.wall_rename))
    with sqlite3.connect(f"file:{base / 'store.db'}?mode=ro", uri=True) as con:
        activities = con.execute("select count(*) from activity").fetchone()[0]
        locations = con.execute("select count(*) from location where gone_at is null").fetchone()[0]
        shunted = con.execute("select count(*) from shunt").fetchone()[0]
    result.update(
        {
            "tracked": summary(lat),
            "tracked_without_attachment": summary(lat_plain),
            "tracked_with_attachment": summary(lat_att),
            "tracked_by_log_ts": summary(lat_ts),
            "missed": n - len(lat),
            "db": {"expected": warmup + n, "activities": activities, "locations": locations, "shunted": shunted},
            "exit_code": rc,
            "clean_stop": reader.stopped,
            "events": reader.events,
            "problems": reader.problems[:10],
        }
    )
    return result


# -- report ---------------------------------------------------------------------------------


def fmt_row(label: str, s: dict[str, float | int]) -> str:
    if not s.get("n"):
        return f"  {label:<40} (no samples)"
    return (
        f"  {label:<40} n={s['n']:<4} median {s['median']:8.2f}  p90 {s['p90']:8.2f}  "
        f"p99 {s['p99']:8.2f}  max {s['max']:8.2f}  (ms)"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--drops", type=int, default=200, help="measured drops per run (default 200)")
    ap.add_argument("--warmup", type=int, default=5, help="warm-up drops, waited for and not measured (default 5)")
    ap.add_argument(
        "--pace-ms",
        type=float,
        nargs=2,
        default=(50.0, 100.0),
        metavar=("LO", "HI"),
        help="gap between drops, uniform in [LO, HI] ms (default 50 100)",
    )
    ap.add_argument("--wait", action="store_true", help="wait for each drop to be seen before the next one")
    ap.add_argument("--seed", type=int, default=0, help="realistic_message seed (default 0)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    pace = Pace(*args.pace_ms)
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    tmp = Path(tempfile.mkdtemp(prefix="mailfiler-latency-"))
    t0 = time.monotonic()
    try:
        baseline = run_baseline(tmp / "baseline", args.drops, args.warmup, pace, args.seed, args.wait)
        daemon = run_daemon(tmp / "daemon", args.drops, args.warmup, Pace(*args.pace_ms), args.seed, args.wait)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    mf = daemon["tracked"]
    w = baseline["watcher"]
    rp = baseline["read_parse"]
    assert isinstance(mf, dict) and isinstance(w, dict) and isinstance(rp, dict)
    ratios: dict[str, float | None] = {}
    if mf.get("n") and w.get("n"):
        ratios["median_vs_watcher"] = round(mf["median"] / w["median"], 2)
        floor = w["median"] + rp["median"]
        ratios["median_vs_watcher_plus_parse"] = round(mf["median"] / floor, 2)
        ratios["p99_vs_watcher"] = round(mf["p99"] / w["p99"], 2)
    out = {
        **benchconfig.run_info("latency", load_before),
        "drops": args.drops,
        "warmup": args.warmup,
        "pace_ms": list(args.pace_ms),
        "wait_each": args.wait,
        "target_median_ms": TARGET_MEDIAN_MS,
        "target_met": bool(mf.get("n")) and float(mf.get("median", 1e9)) <= TARGET_MEDIAN_MS,
        "baseline": baseline,
        "mailfiler": daemon,
        "ratios": ratios,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    if args.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    db = daemon["db"]
    assert isinstance(db, dict)
    pace_txt = "wait for each" if args.wait else f"one every {args.pace_ms[0]:g}-{args.pace_ms[1]:g} ms"
    print(f"drop-to-tracked latency: {args.drops} drops over {len(FOLDERS)} tracked folders, {pace_txt}")
    print(
        f"  ({os.cpu_count()} CPUs, load average before {load_before[0]:.2f}, Python {out['python']},"
        f" watcher step={baseline['step_ms']} ms debounce={baseline['debounce_ms']} ms,"
        f" {args.warmup} warm-up drops excluded)"
    )
    print("baseline")
    print(fmt_row("bare watchfiles.awatch (rename->yield)", w))
    print(fmt_row("read + message_from_bytes(default)", rp))
    print(fmt_row("mailfiler parse_message (context)", baseline["mailfiler_parse_message"]))  # type: ignore[arg-type]
    print("mailfiler daemon")
    print(fmt_row("rename -> `tracked` log line", mf))
    print(fmt_row("  of which without attachment", daemon["tracked_without_attachment"]))  # type: ignore[arg-type]
    print(fmt_row("  of which with attachment (blob fsync)", daemon["tracked_with_attachment"]))  # type: ignore[arg-type]
    print(fmt_row("rename -> log line's own ts (1 ms res)", daemon["tracked_by_log_ts"]))  # type: ignore[arg-type]
    print(
        f"  startup {daemon['startup_s']} s; missed {daemon['missed']} (baseline missed {baseline['missed']});"
        f" exit code {daemon['exit_code']}, clean stop: {daemon['clean_stop']}"
    )
    print(
        f"  store: {db['activities']} activities, {db['locations']} locations, {db['shunted']} shunted"
        f" (expected {db['expected']})"
    )
    if daemon["problems"]:
        print("  daemon warnings/errors:")
        for line in daemon["problems"]:  # type: ignore[attr-defined]
            print(f"    {line[:200]}")
    if ratios:
        print("ratios (mailfiler / baseline)")
        print(f"  median vs bare watcher:          {ratios['median_vs_watcher']:.2f}x")
        print(f"  median vs watcher + read/parse:  {ratios['median_vs_watcher_plus_parse']:.2f}x")
        print(f"  p99 vs bare watcher:             {ratios['p99_vs_watcher']:.2f}x")
    verdict = "MET" if out["target_met"] else "NOT MET"
    print(f"target: median <= {TARGET_MEDIAN_MS:g} ms: {verdict} (median {mf.get('median')} ms)")
    print(f"wall time {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
