#!/usr/bin/env python3
"""Backfill of one IMAP folder: mailfiler beside a raw batched aioimaplib UID FETCH of the same folder.

    .venv/bin/python bench/imap_backfill.py                   # 10,000 messages, 1 repeat
    .venv/bin/python bench/imap_backfill.py --count 2000 --repeat 3
    .venv/bin/python bench/imap_backfill.py --count 2000 --inprocess   # + where the scan's time goes

Setup: a throw-away Dovecot on loopback started by this script (the test suite's fixture
code, tests/servers/dovecot.py); one user whose tracked folder ``Tracked/Contoso`` holds
--count ``realistic_message``s (5-20 KB, every 5th with a PDF-ish attachment: the corpus of
bench/backfill.py), written straight into the server's storage.  A first full fetch warms
Dovecot's index and the page cache before anything is timed.

What is measured (messages/s; each repeat runs every variant, interleaved)
  raw batched   A bare aioimaplib client: LOGIN, SELECT, UID SEARCH ALL, then
                ``UID FETCH <400 UIDs> (BODY.PEEK[])`` batch after batch (400: aioimaplib 2.0.3
                recurses once per response line, see libs.md).  Bytes only, no parsing.
  raw + parse   The same bodies parsed as bench/backfill.py's baseline does
                (``email.message_from_bytes(policy=default)``, headers, parts): what a client
                that does nothing but read and parse costs.
  raw fixed     The raw batched client with mailfiler's fixes to aioimaplib's protocol handler
                (imapfixes.Client: upstream rescans a FETCH's lines on every line, and formats
                every read for a debug log): how much of "raw batched" is aioimaplib's own cost.
  raw 1-by-1    The bare client fetching as mailfiler's worker did before it read ahead, one
                message at a time: ``UID FETCH n (UID RFC822.SIZE)`` then
                ``UID FETCH n (UID BODY.PEEK[])``.  (The worker now reads ahead in batches
                of 400 UIDs / 16 MB, the next batch while it tracks the current one.)
  mailfiler     ``python -m mailfiler --log-format json once --json`` on a fresh SQLite store,
                wall clock (start-up, login, listing, every message tracked and committed), and
                "inside": from the first to the last ``tracked`` log line's own timestamp.
  in-process    (--inprocess) ``MailboxWorker.scan_folder`` in this process with the time spent
                in the ImapSource calls, in ``parse_message`` (in this process: the parse
                helpers' share is not in it), in ``track_batch`` (the commits) and in
                ``Tracker.track`` (inside a batch not written in bulk) summed up, and this
                process's CPU time per message.

Target: mailfiler at least 50 % of the raw batched rate.  Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import benchconfig  # noqa: E402
from aioimaplib import aioimaplib  # noqa: E402
from backfill import baseline_parse, count_activities, store_sizes, ts_to_epoch  # noqa: E402
from imap_latency import write_imap_config  # noqa: E402

from mailfiler.sources import imapfixes  # noqa: E402
from tests.mailgen import realistic_message  # noqa: E402
from tests.servers.dovecot import ImapUser, start_dovecot  # noqa: E402

TARGET_RATIO = 0.50
FOLDER = "Tracked/Contoso"
BATCH = 400


# -- the raw client ---------------------------------------------------------------------------


async def _login(user: ImapUser, fixed: bool = False) -> aioimaplib.IMAP4:
    # fixed: aioimaplib with mailfiler's protocol fixes (imapfixes.Client: no per-line
    # recursion, no quadratic FETCH completeness check, no repr of every read)
    cls = imapfixes.Client if fixed else aioimaplib.IMAP4
    client = cls(host="127.0.0.1", port=user.server.port, timeout=120)
    await client.wait_hello_from_server()
    await client.login(user.name, user.password)
    await client.select(FOLDER)  # aioimaplib's examine() leaves the state AUTH: SEARCH is refused
    return client


async def _uids(client: aioimaplib.IMAP4) -> list[int]:
    response = await client.uid_search("ALL")
    numbers: list[int] = []
    for line in response.lines[:-1]:  # aioimaplib strips "* SEARCH": b"1 2 3 ..."
        words = bytes(line).split()
        if words[:1] == [b"SEARCH"]:
            words = words[1:]
        numbers.extend(int(w) for w in words if w.isdigit())
    return sorted(numbers)


def _bodies(lines: list) -> list[bytes]:
    # aioimaplib splits each FETCH response around its literal: the literal is a bytearray
    return [bytes(x) for x in lines if isinstance(x, bytearray)]


async def raw_batched(user: ImapUser, keep: bool, fixed: bool = False) -> tuple[float, int, int, list[bytes]]:
    """(seconds, messages, bytes, the bodies if ``keep``) of a batched BODY.PEEK[] fetch."""
    t0 = time.perf_counter()
    client = await _login(user, fixed)
    uids = await _uids(client)
    n = size = 0
    kept: list[bytes] = []
    for start in range(0, len(uids), BATCH):
        batch = uids[start : start + BATCH]
        response = await client.uid("fetch", f"{batch[0]}:{batch[-1]}", "(BODY.PEEK[])")
        bodies = _bodies(response.lines)
        n += len(bodies)
        size += sum(len(b) for b in bodies)
        if keep:
            kept.extend(bodies)
    elapsed = time.perf_counter() - t0
    await client.logout()
    return elapsed, n, size, kept


async def raw_one_by_one(user: ImapUser) -> tuple[float, int]:
    t0 = time.perf_counter()
    client = await _login(user)
    n = 0
    for uid in await _uids(client):
        await client.uid("fetch", str(uid), "(UID RFC822.SIZE)")
        response = await client.uid("fetch", str(uid), "(UID BODY.PEEK[])")
        n += len(_bodies(response.lines))
    elapsed = time.perf_counter() - t0
    await client.logout()
    return elapsed, n


# -- mailfiler ----------------------------------------------------------------------------------


def run_cli(work: Path, user: ImapUser, code: Path | None = None) -> dict[str, Any]:
    """``mailfiler once`` on a fresh store; ``code``: another tree's ``daemon`` to run instead (--base)."""
    base = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    cfg = write_imap_config(base, user, [FOLDER], writer="bench/imap_backfill.py")
    cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "once", "--json"]
    env = {k: v for k, v in os.environ.items() if k not in ("MAILFILER_CONFIG", "MAILFILER_CRASH_AT")}
    if code is not None:
        env["PYTHONPATH"] = str(code)
    with open(base / "stderr.log", "wb") as err:
        cpu0 = _children_cpu()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env, check=False)
        elapsed = time.perf_counter() - t0
        # user + system time of mailfiler and its parse helpers (waited for): on a loaded
        # machine the CPU a message costs moves far less than the wall clock does
        cpu = _children_cpu() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"mailfiler once failed ({proc.returncode}): {(base / 'stderr.log').read_text()[-2000:]}")
    results = [r for rs in json.loads(proc.stdout).values() for r in rs]
    # (time, messages): a ``tracked`` line per message, or a backfill batch's summary line
    stamps: list[tuple[float, int]] = []
    with open(base / "stderr.log", encoding="utf-8") as fh:
        for line in fh:
            if '"tracked"' in line or '"batch-committed"' in line:
                rec = json.loads(line)
                if rec.get("event") == "tracked":
                    stamps.append((ts_to_epoch(rec["ts"]), 1))
                elif rec.get("event") == "batch-committed":
                    stamps.append((ts_to_epoch(rec["ts"]), int(rec.get("tracked", 0))))
    span = stamps[-1][0] - stamps[0][0] if len(stamps) > 1 else 0.0
    after_first = sum(n for _, n in stamps[1:])
    out = {
        "seconds": elapsed,
        "cpu_s": cpu,
        "inside_msgs_per_s": after_first / span if span > 0 else None,
        "outside_scan_s": elapsed - span,
        "new": sum(r["new"] for r in results),
        "shunted": sum(r["shunted"] for r in results),
        "activities": count_activities(base),
        **store_sizes(base),
    }
    shutil.rmtree(base, ignore_errors=True)
    return out


class Timers:
    """Wall time summed per name, around sync and async callables patched in place."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def _add(self, name: str, dt: float) -> None:
        self.total[name] = self.total.get(name, 0.0) + dt
        self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        original = getattr(owner, attr)
        if asyncio.iscoroutinefunction(original):

            @functools.wraps(original)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self._add(name, time.perf_counter() - t0)

            setattr(owner, attr, timed_async)
        else:

            @functools.wraps(original)
            def timed(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self._add(name, time.perf_counter() - t0)

            setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def undo(self) -> None:
        for fn in reversed(self._undo):
            fn()


def run_inprocess(work: Path, user: ImapUser) -> dict[str, Any]:
    import logging

    from mailfiler.config.loader import load_config
    from mailfiler.service import backfill as backfill_module
    from mailfiler.service.runtime import build_services, open_store
    from mailfiler.service.worker import MailboxWorker
    from mailfiler.sources.imap import ImapSource
    from mailfiler.tracking import offloop as offloop_module
    from mailfiler.tracking.pipeline import Tracker

    base = Path(tempfile.mkdtemp(prefix="inproc-", dir=work))
    cfg = write_imap_config(base, user, [FOLDER], writer="bench/imap_backfill.py")
    logging.getLogger().setLevel(logging.WARNING)
    timers = Timers()
    # the read-ahead (sizes_of, fetch_batch) runs in a task beside parsing and tracking:
    # its time overlaps theirs
    for attr in ("list_messages", "size", "fetch", "sizes_of", "fetch_batch"):
        if hasattr(ImapSource, attr):
            timers.wrap(ImapSource, attr, f"imap.{attr}")
    # every parse of the worker goes through offloop.parse_off_loop (inline or in a thread)
    timers.wrap(offloop_module, "parse_message", "parse_message")
    timers.wrap(backfill_module, "track_batch", "track_batch")  # a commit of up to 50 messages
    timers.wrap(Tracker, "track", "Tracker.track")  # inside a batch, when not written in bulk

    helpers: dict[str, int] = {}

    async def scan() -> tuple[float, float, int]:
        loaded = load_config(cfg)
        db = open_store(loaded.config)
        services = build_services(db, loaded.config)
        new = 0
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            for rt in services.mailboxes.values():
                await rt.source.open()
                worker = MailboxWorker(rt, services)
                for folder in rt.folders:
                    new += (await worker.scan_folder(folder)).new
                await rt.source.close()
            helpers.update(workers=services.parser.workers, parsed=services.parser.parsed)
            return time.perf_counter() - t0, time.process_time() - c0, new
        finally:
            await services.parser.close()
            db.close()

    try:
        seconds, cpu, new = asyncio.run(scan())
    finally:
        timers.undo()
    shutil.rmtree(base, ignore_errors=True)
    return {
        "seconds": seconds,
        "new": new,
        # the daemon process's CPU (all its threads; not the parse helpers')
        "daemon_cpu_ms_per_msg": round(cpu / max(new, 1) * 1000, 3),
        "parse_helpers": helpers,
        "parts_s": {k: round(v, 3) for k, v in sorted(timers.total.items())},
        "calls": timers.calls,
    }


# -- main ---------------------------------------------------------------------------------------


def rate(count: int, seconds: list[float]) -> dict[str, Any]:
    rates = [count / s for s in seconds]
    return {
        "runs_s": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "median_msgs_per_s": round(statistics.median(rates), 1),
    }


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000, help="messages in the folder (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="realistic_message seed (default 0)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each variant (default 1)")
    ap.add_argument("--inprocess", action="store_true", help="also one in-process scan with a time breakdown")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    ap.add_argument("--quick", action="store_true", help="leave out the slow references (raw + parse, raw 1-by-1)")
    ap.add_argument(
        "--base",
        type=Path,
        help="also run the mailfiler of another tree's daemon/ (PYTHONPATH) in each repeat, paired, alternating order",
    )
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    load_before = os.getloadavg()
    benchconfig.compile_bytecode(*([args.base] if args.base is not None else []))
    servers = start_dovecot(tls=False)
    server = next(servers)
    work = Path(tempfile.mkdtemp(prefix="mailfiler-imap-backfill-"))
    out: dict[str, Any] = {
        **benchconfig.run_info("imap_backfill", load_before),
        "count": args.count,
        "repeat": args.repeat,
        "target_ratio": TARGET_RATIO,
    }
    try:
        user = server.add_user()
        t0 = time.monotonic()
        messages = [realistic_message(i, seed=args.seed) for i in range(args.count)]
        user.seed(FOLDER, messages)
        out["corpus"] = {
            "bytes": sum(len(m) for m in messages),
            "with_attachment": sum(1 for i in range(args.count) if i % 5 == 4),
        }
        del messages
        # Dovecot indexes the new files at the first look; the page cache warms up
        warm_s, warm_n, _, _ = asyncio.run(raw_batched(user, keep=False))
        out["warmup"] = {"seconds": round(warm_s, 2), "messages": warm_n, "setup_s": round(time.monotonic() - t0, 1)}
        if warm_n != args.count:
            raise SystemExit(f"the server holds {warm_n} messages, expected {args.count}")

        batched: list[float] = []
        parsed: list[float] = []
        one_by_one: list[float] = []
        fixed: list[float] = []
        cli_runs: list[dict[str, Any]] = []
        base_runs: list[dict[str, Any]] = []
        raw_cpu: list[float] = []
        for r in range(args.repeat):
            cpu0 = _self_cpu()
            seconds, n, size, bodies = asyncio.run(raw_batched(user, keep=True))
            raw_cpu.append(_self_cpu() - cpu0)
            batched.append(seconds)
            out["wire_bytes"] = size
            if not args.quick:
                t0 = time.perf_counter()
                for body in bodies:
                    baseline_parse(body)
                parsed.append(seconds + time.perf_counter() - t0)
            del bodies
            if not args.quick:
                one_by_one.append(asyncio.run(raw_one_by_one(user))[0])
            fixed.append(asyncio.run(raw_batched(user, keep=False, fixed=True))[0])
            if args.base is not None and r % 2 == 0:  # paired, in alternating order
                base_runs.append(run_cli(work, user, args.base))
            cli_runs.append(run_cli(work, user))
            if args.base is not None and r % 2 == 1:
                base_runs.append(run_cli(work, user, args.base))
            if not args.json and base_runs:
                print(f"run {r + 1}: base mailfiler {args.count / base_runs[-1]['seconds']:.0f}/s", flush=True)
            if not args.json:
                c = cli_runs[-1]
                slow = "" if args.quick else f" raw + parse {n / parsed[-1]:.0f}/s,"
                slow += "" if args.quick else f" raw 1-by-1 {n / one_by_one[-1]:.0f}/s,"
                print(
                    f"run {r + 1}: raw batched {n / batched[-1]:.0f}/s,{slow}"
                    f" mailfiler {args.count / c['seconds']:.0f}/s"
                    f" (inside {c['inside_msgs_per_s'] or 0:.0f}/s)",
                    flush=True,
                )
        out["raw_batched"] = rate(args.count, batched)
        if not args.quick:
            out["raw_batched_plus_parse"] = rate(args.count, parsed)
            out["raw_one_by_one"] = rate(args.count, one_by_one)
        out["raw_batched_fixed"] = rate(args.count, fixed)
        out["mailfiler_once"] = rate(args.count, [c["seconds"] for c in cli_runs])
        out["mailfiler_once"]["last_run"] = cli_runs[-1]
        if base_runs:
            out["mailfiler_base"] = rate(args.count, [c["seconds"] for c in base_runs])
            out["mailfiler_base"]["ratio_vs_raw_batched"] = round(
                out["mailfiler_base"]["median_msgs_per_s"] / out["raw_batched"]["median_msgs_per_s"], 4
            )
            out["mailfiler_vs_base"] = round(
                out["mailfiler_once"]["median_msgs_per_s"] / out["mailfiler_base"]["median_msgs_per_s"], 4
            )
            base_inside = [c["inside_msgs_per_s"] for c in base_runs if c["inside_msgs_per_s"]]
            out["mailfiler_base_inside"] = round(statistics.median(base_inside), 1) if base_inside else None
            # per pair (the two runs of one repeat, back to back): drift between repeats cancels out
            pairs = list(zip(cli_runs, base_runs, strict=True))
            out["paired_vs_base"] = {
                "rate_median": round(statistics.median(b["seconds"] / c["seconds"] for c, b in pairs), 4),
                "cpu_median": round(statistics.median(c["cpu_s"] / b["cpu_s"] for c, b in pairs), 4),
                "base_cpu_ms_per_msg": round(statistics.median(b["cpu_s"] for b in base_runs) / args.count * 1e3, 3),
            }
        out["cpu_ms_per_msg"] = {
            "raw_batched": round(statistics.median(raw_cpu) / args.count * 1e3, 3),
            "mailfiler_once": round(statistics.median(c["cpu_s"] for c in cli_runs) / args.count * 1e3, 3),
        }
        inside = [c["inside_msgs_per_s"] for c in cli_runs if c["inside_msgs_per_s"]]
        out["mailfiler_inside"] = {"median_msgs_per_s": round(statistics.median(inside), 1) if inside else None}
        raw_rate = out["raw_batched"]["median_msgs_per_s"]
        for key in ("raw_batched_plus_parse", "raw_one_by_one", "raw_batched_fixed", "mailfiler_once"):
            if key not in out:
                continue
            out[key]["ratio_vs_raw_batched"] = round(out[key]["median_msgs_per_s"] / raw_rate, 4)
        if inside:
            out["mailfiler_inside"]["ratio_vs_raw_batched"] = round(statistics.median(inside) / raw_rate, 4)
        if args.inprocess:
            out["inprocess"] = run_inprocess(work, user)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        servers.close()
    out["target_met"] = out["mailfiler_once"]["ratio_vs_raw_batched"] >= TARGET_RATIO
    out["wall_s"] = round(time.monotonic() - t_start, 1)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0

    c = out["corpus"]
    print(
        f"backfill of {args.count} messages ({c['bytes'] / 1e6:.1f} MB, {c['with_attachment']} with an attachment)"
        f" from one IMAP folder on a local Dovecot; median of {args.repeat} run(s); {os.cpu_count()} CPUs,"
        f" load average before {load_before[0]:.2f}"
    )
    for key, label in (
        ("raw_batched", "raw batched UID FETCH BODY.PEEK[] (400/batch)"),
        ("raw_batched_plus_parse", "raw batched + stdlib parse"),
        ("raw_one_by_one", "raw 1-by-1 (RFC822.SIZE, then BODY.PEEK[])"),
        ("raw_batched_fixed", "raw batched, mailfiler's aioimaplib fixes"),
        ("mailfiler_once", "mailfiler once (CLI, wall clock)"),
        ("mailfiler_base", "mailfiler once, --base tree"),
    ):
        if key not in out:
            continue
        v = out[key]
        ratio = f"  = {v['ratio_vs_raw_batched']:.1%} of raw batched" if "ratio_vs_raw_batched" in v else ""
        print(f"  {label:<46} {v['median_msgs_per_s']:>8.0f} msgs/s  ({v['median_s']:.2f} s){ratio}")
    v = out["mailfiler_inside"]
    if v["median_msgs_per_s"]:
        print(
            f"  {'mailfiler once, inside the scan':<46} {v['median_msgs_per_s']:>8.0f} msgs/s"
            f"  = {v['ratio_vs_raw_batched']:.1%} of raw batched"
        )
    last = out["mailfiler_once"]["last_run"]
    print(
        f"  store after one run: {last['activities']} activities (tracked {last['new']}, shunted {last['shunted']});"
        f" SQLite {last['db_bytes'] / 1e6:.1f} MB (attachments in {last['blob_rows']} rows:"
        f" {last['blob_row_bytes'] / 1e6:.1f} MB); attachment files {last['blob_bytes'] / 1e6:.1f} MB"
        f" in {last['blob_files']} files"
    )
    if "inprocess" in out:
        ip = out["inprocess"]
        h = ip["parse_helpers"]
        print(
            f"  in-process scan_folder: {ip['new'] / ip['seconds']:.0f} msgs/s ({ip['seconds']:.2f} s);"
            f" daemon CPU {ip['daemon_cpu_ms_per_msg']:.3f} ms/msg; {h['parsed']} parsed by"
            f" {h['workers']} helper process(es); time inside:"
        )
        for name, secs in ip["parts_s"].items():
            print(f"    {name:<28} {secs:>8.2f} s  {secs / ip['seconds']:>6.1%}  ({ip['calls'][name]} calls)")
    cpu = out["cpu_ms_per_msg"]
    print(
        f"  CPU per message (user + system; Dovecot's not counted): raw batched {cpu['raw_batched']:.3f} ms,"
        f" mailfiler once {cpu['mailfiler_once']:.3f} ms (its parse helpers included)"
    )
    if "mailfiler_vs_base" in out:
        vs, inside = out["mailfiler_vs_base"], out["mailfiler_base_inside"]
        print(f"  this tree / base tree: {vs:.3f} (base tree inside the scan: {inside}/s)")
        pv = out["paired_vs_base"]
        print(
            f"  per pair, median: rate this/base {pv['rate_median']:.3f}, CPU this/base {pv['cpu_median']:.3f}"
            f" (base tree {pv['base_cpu_ms_per_msg']:.3f} ms/msg)"
        )
    verdict = "MET" if out["target_met"] else "NOT MET"
    print(f"target: mailfiler once >= {TARGET_RATIO:.0%} of the raw batched rate: {verdict}")
    print(f"wall time {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
