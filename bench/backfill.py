#!/usr/bin/env python3
"""Backfill throughput: mailfiler against a bare stdlib parse of the same Maildir.

    .venv/bin/python bench/backfill.py                 # 10,000 messages, 3 repeats (~6 min on 2 cores)
    .venv/bin/python bench/backfill.py --count 2000    # same measurement, ~75 s
    .venv/bin/python bench/backfill.py --count 2000 --repeat 1 --profile   # + profile of one in-process scan

What is measured (messages/s, median over --repeat runs, the variants interleaved)
  baseline    Read every message file of the tracked folders and parse it with the stdlib
              (``email.message_from_bytes(policy=default)``), reading the headers mailfiler
              reads (Message-ID, From/To/Cc/Bcc addresses, Subject, Date, In-Reply-To,
              References), walking the parts, getting the text/HTML bodies with ``get_content()``
              and the attachments with ``get_payload(decode=True)``.  No store.
  cli         ``python -m mailfiler --config CFG --log-format json once`` on a fresh SQLite store
              and state dir, wall clock: interpreter start-up, imports, migrations, config sync,
              the scan, and one JSON log line per message (to a file, as under journald).
  cli inside  The same run, from the first to the last ``tracked`` log line's own timestamp:
              the scan alone, at no extra cost.
  in-process  (--inprocess N) ``build_services`` + ``MailboxWorker.scan_folder`` for every
              tracked folder in this process on a fresh store; only the scans are timed.

The generated Maildir (realistic_message: ~5-20 KB, every 5th with a PDF-ish attachment,
spread over the tracked folders, 80 % already seen in cur/, 20 % in new/) is cached under
--cache-dir, keyed by count, seed and folder count.  Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import cProfile
import email
import email.policy
import io
import json
import logging
import os
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import benchconfig  # noqa: E402
from benchconfig import FOLDERS as ALL_FOLDERS  # noqa: E402

from mailfiler.config.loader import load_config  # noqa: E402
from mailfiler.service.logsetup import PlainFormatter  # noqa: E402
from mailfiler.service.runtime import build_services, open_store  # noqa: E402
from mailfiler.service.worker import MailboxWorker  # noqa: E402
from tests.mailgen import (  # noqa: E402
    drop_into_maildir,
    maildirpp_folder_dir,
    make_maildir_folder,
    realistic_message,
)

TARGET_RATIO = 0.40


# -- corpus ------------------------------------------------------------------------------


def corpus(cache_dir: Path, count: int, seed: int, n_folders: int, *, quiet: bool) -> tuple[Path, dict]:
    """The cached Maildir (generated on first use) and its description."""
    root = cache_dir / f"mailfiler-bench-backfill-n{count}-s{seed}-f{n_folders}"
    marker = root / "corpus.json"
    if marker.exists():
        return root / "Maildir", json.loads(marker.read_text())
    if root.exists():
        shutil.rmtree(root)  # an interrupted generation
    t0 = time.monotonic()
    maildir = root / "Maildir"
    make_maildir_folder(maildir)
    dirs = []
    for folder, _ in ALL_FOLDERS[:n_folders]:
        d = make_maildir_folder(maildirpp_folder_dir(maildir, folder))
        (d / "maildirfolder").touch()
        dirs.append(d)
    total = attachments = 0
    for i in range(count):
        data = realistic_message(i, seed=seed)
        total += len(data)
        attachments += i % 5 == 4
        # 80 % already read by a client (cur/...:2,S), 20 % still new/
        drop_into_maildir(dirs[i % n_folders], data, flags=None if i % 5 == 0 else "S", fsync=False)
    info = {
        "count": count,
        "seed": seed,
        "folders": [f for f, _ in ALL_FOLDERS[:n_folders]],
        "bytes": total,
        "with_attachment": attachments,
        "generated_s": round(time.monotonic() - t0, 1),
    }
    marker.write_text(json.dumps(info))
    if not quiet:
        print(f"generated {count} messages ({total / 1e6:.1f} MB) in {info['generated_s']} s under {root}")
    return maildir, info


def message_files(maildir: Path, folders: list[str]) -> list[Path]:
    files = []
    for folder in folders:
        base = maildirpp_folder_dir(maildir, folder)
        for sub in ("new", "cur"):
            with os.scandir(base / sub) as it:
                files.extend(Path(e.path) for e in it if not e.name.startswith("."))
    return sorted(files)


def write_config(base: Path, maildir: Path, folders: list[str]) -> Path:
    return benchconfig.write_config(base, maildir, folders, writer="bench/backfill.py")


# -- baseline ------------------------------------------------------------------------------


def baseline_parse(raw: bytes) -> tuple[int, int]:
    """Roughly what mailfiler's parser does, without its guards: (body chars, attachment bytes)."""
    msg: EmailMessage = email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[assignment]
    for name in ("message-id", "subject", "date", "in-reply-to", "references"):
        str(msg.get(name, ""))
    for name in ("from", "to", "cc", "bcc"):
        for header in msg.get_all(name) or []:
            for addr in getattr(header, "addresses", ()):
                _ = (addr.display_name, addr.addr_spec)
    body = 0
    att = 0
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = part.get_filename()
        if ctype in ("text/plain", "text/html") and disposition != "attachment" and not filename:
            body += len(part.get_content())
        else:
            att += len(part.get_payload(decode=True) or b"")
    return body, att


def run_baseline(files: list[Path]) -> float:
    t0 = time.perf_counter()
    for path in files:
        baseline_parse(path.read_bytes())
    return time.perf_counter() - t0


# -- mailfiler ---------------------------------------------------------------------------------


def dir_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under path."""
    total = n = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            total += os.path.getsize(os.path.join(dirpath, name))
            n += 1
    return total, n


def store_sizes(base: Path) -> dict[str, int]:
    """The store's size on disk; attachments in blob files and (up to blobs.INLINE_MAX) in rows."""
    db = sum(p.stat().st_size for p in base.glob("store.db*"))
    blobs, n_blobs = dir_size(base / "state" / "blobs") if (base / "state" / "blobs").exists() else (0, 0)
    with contextlib.closing(sqlite3.connect(base / "store.db")) as conn:
        n_rows, row_bytes = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blob WHERE data IS NOT NULL"
        ).fetchone()
    return {
        "db_bytes": db,
        "blob_bytes": blobs,
        "blob_files": n_blobs,
        "blob_rows": n_rows,
        "blob_row_bytes": row_bytes,
    }


def ts_to_epoch(ts: str) -> float:
    """'2024-01-02T03:04:05.678Z' (the JSON log's ts) -> seconds since the epoch."""
    whole, frac = ts.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + int(frac) / 1000


def count_activities(base: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{base / 'store.db'}?mode=ro", uri=True) as con:
        return int(con.execute("select count(*) from activity").fetchone()[0])


def run_cli(work: Path, maildir: Path, folders: list[str]) -> dict:
    base = Path(tempfile.mkdtemp(prefix="cli-", dir=work))
    cfg = write_config(base, maildir, folders)
    cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "once", "--json"]
    with open(base / "stderr.log", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, check=False)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"mailfiler once failed ({proc.returncode}): {(base / 'stderr.log').read_text()[-2000:]}")
    summary = json.loads(proc.stdout)
    results = [r for rs in summary.values() for r in rs]
    # messages/s from inside the scan: the `tracked` lines' own timestamps (UTC, 1 ms resolution)
    stamps = []
    with open(base / "stderr.log", encoding="utf-8") as fh:
        for line in fh:
            if '"tracked"' in line:
                rec = json.loads(line)
                if rec.get("event") == "tracked":
                    stamps.append(ts_to_epoch(rec["ts"]))
    inside = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else None
    out = {
        "seconds": elapsed,
        "inside_msgs_per_s": inside,
        "outside_scan_s": elapsed - (stamps[-1] - stamps[0]) if len(stamps) > 1 else None,
        "new": sum(r["new"] for r in results),
        "shunted": sum(r["shunted"] for r in results),
        "activities": count_activities(base),
        **store_sizes(base),
    }
    shutil.rmtree(base, ignore_errors=True)
    return out


class Profiler:
    """cProfile (deterministic; inflates many-small-call code such as peewee's SQL building) or
    pyinstrument (sampling; closer to real proportions) around the in-process scan."""

    def __init__(self, kind: str) -> None:
        if kind == "auto":
            try:
                import pyinstrument  # noqa: F401
            except ImportError:
                kind = "cprofile"
            else:
                kind = "pyinstrument"
        self.kind = kind
        self._prof: object = None

    def start(self) -> None:
        if self.kind == "pyinstrument":
            from pyinstrument import Profiler as Pyinstrument

            prof = Pyinstrument(interval=0.001)
            self._prof = prof
            prof.start()
        else:
            cprof = cProfile.Profile()
            self._prof = cprof
            cprof.enable()

    def stop(self) -> None:
        if isinstance(self._prof, cProfile.Profile):
            self._prof.disable()
        else:
            self._prof.stop()  # type: ignore[attr-defined]

    def report(self, top: int) -> str:
        out = Path(tempfile.gettempdir())
        if isinstance(self._prof, cProfile.Profile):
            path = out / "mailfiler-backfill.pstats"
            self._prof.dump_stats(str(path))
            buf = io.StringIO()
            stats = pstats.Stats(self._prof, stream=buf).strip_dirs()
            buf.write(f"== cProfile of one in-process scan (saved to {path}) ==\n-- by own time --\n")
            stats.sort_stats("tottime").print_stats(top)
            buf.write("-- by cumulative time --\n")
            stats.sort_stats("cumulative").print_stats(top)
            return buf.getvalue()
        text = self._prof.output_text(unicode=True, color=False, show_all=False)  # type: ignore[attr-defined]
        path = out / "mailfiler-backfill-profile.txt"
        path.write_text(text, encoding="utf-8")
        return f"== pyinstrument profile of one in-process scan (saved to {path}) ==\n{text}"


async def _scan_all(cfg: Path, profile: Profiler | None) -> dict:
    loaded = load_config(cfg)
    t0 = time.perf_counter()
    db = open_store(loaded.config)
    services = build_services(db, loaded.config)
    setup_s = time.perf_counter() - t0
    new = shunted = 0
    try:
        t0 = time.perf_counter()
        if profile is not None:
            profile.start()
        for rt in services.mailboxes.values():
            await rt.source.open()
            worker = MailboxWorker(rt, services)
            for folder in rt.folders:
                result = await worker.scan_folder(folder)
                new += result.new
                shunted += result.shunted
            await rt.source.close()
        if profile is not None:
            profile.stop()
        scan_s = time.perf_counter() - t0
    finally:
        db.close()
    return {"seconds": scan_s, "setup_s": setup_s, "new": new, "shunted": shunted}


def run_inprocess(work: Path, maildir: Path, folders: list[str], profile: Profiler | None = None) -> dict:
    base = Path(tempfile.mkdtemp(prefix="inproc-", dir=work))
    cfg = write_config(base, maildir, folders)
    # what `mailfiler once` logs (one INFO line per tracked message), formatted but discarded
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - closed below
    handler.setFormatter(PlainFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("peewee").setLevel(logging.WARNING)
    try:
        out = asyncio.run(_scan_all(cfg, profile))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.stream.close()
    out["activities"] = count_activities(base)
    out.update(store_sizes(base))
    shutil.rmtree(base, ignore_errors=True)
    return out


# -- report --------------------------------------------------------------------------------------


def rate(count: int, seconds: list[float]) -> dict:
    rates = [count / s for s in seconds]
    return {
        "runs_s": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "median_msgs_per_s": round(statistics.median(rates), 1),
        "min_msgs_per_s": round(min(rates), 1),
        "max_msgs_per_s": round(max(rates), 1),
    }


def rates_from(count: int, runs: list[dict]) -> dict:
    v = rate(count, [r["seconds"] for r in runs])
    v["last_run"] = runs[-1]
    return v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000, help="messages in the corpus (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="realistic_message seed (default 0)")
    ap.add_argument("--folders", type=int, default=4, choices=range(1, len(ALL_FOLDERS) + 1), help="tracked folders")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the baseline and of `mailfiler once` (default 3)")
    ap.add_argument("--inprocess", type=int, default=0, metavar="N", help="also N in-process scan runs (default 0)")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()), help="corpus cache (default /tmp)")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="auto",
        choices=("auto", "cprofile", "pyinstrument"),
        help="profile one extra in-process scan and print the top costs (auto: pyinstrument if installed)",
    )
    ap.add_argument("--profile-top", type=int, default=30, help="rows of profile output (default 30)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)

    t_start = time.monotonic()
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    maildir, info = corpus(args.cache_dir, args.count, args.seed, args.folders, quiet=args.json)
    folders: list[str] = info["folders"]
    files = message_files(maildir, folders)
    if len(files) != args.count:
        raise SystemExit(f"corpus under {maildir} holds {len(files)} files, expected {args.count}; delete it")
    for path in files:  # warm the page cache so that the first measured run does not pay for disk reads
        path.read_bytes()

    work = Path(tempfile.mkdtemp(prefix="mailfiler-backfill-"))
    base_s: list[float] = []
    cli_runs: list[dict] = []
    inproc_runs: list[dict] = []
    profile_text = ""
    try:
        # interleave the variants so that drift (other load, thermal) hits each alike
        for r in range(max(args.repeat, args.inprocess)):
            line = []
            if r < args.repeat:
                base_s.append(run_baseline(files))
                cli_runs.append(run_cli(work, maildir, folders))
                line.append(f"baseline {args.count / base_s[-1]:.0f}/s")
                line.append(f"cli {args.count / cli_runs[-1]['seconds']:.0f}/s")
                if cli_runs[-1]["inside_msgs_per_s"]:
                    line.append(f"cli inside {cli_runs[-1]['inside_msgs_per_s']:.0f}/s")
            if r < args.inprocess:
                inproc_runs.append(run_inprocess(work, maildir, folders))
                line.append(f"in-process {args.count / inproc_runs[-1]['seconds']:.0f}/s")
            if not args.json:
                print(f"run {r + 1}: " + ", ".join(line), flush=True)
        if args.profile:
            prof = Profiler(args.profile)
            run_inprocess(work, maildir, folders, prof)
            profile_text = prof.report(args.profile_top)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out: dict = {
        **benchconfig.run_info("backfill", load_before),
        "corpus": {**info, "path": str(maildir)},
        "repeat": args.repeat,
        "target_ratio": TARGET_RATIO,
    }
    base_rate = 0.0
    if base_s:
        out["baseline"] = rate(args.count, base_s)
        base_rate = out["baseline"]["median_msgs_per_s"]
    if cli_runs:
        out["cli"] = rates_from(args.count, cli_runs)
        out["cli"]["ratio_vs_baseline"] = round(out["cli"]["median_msgs_per_s"] / base_rate, 3)
        inside = [r["inside_msgs_per_s"] for r in cli_runs if r["inside_msgs_per_s"]]
        if inside:
            out["cli_inside"] = {
                "median_msgs_per_s": round(statistics.median(inside), 1),
                "ratio_vs_baseline": round(statistics.median(inside) / base_rate, 3),
                "outside_scan_s_median": round(statistics.median(r["outside_scan_s"] for r in cli_runs), 2),
            }
    if inproc_runs:
        out["inprocess"] = rates_from(args.count, inproc_runs)
        out["inprocess"]["setup_s_median"] = round(statistics.median(r["setup_s"] for r in inproc_runs), 3)
        if base_rate:
            out["inprocess"]["ratio_vs_baseline"] = round(out["inprocess"]["median_msgs_per_s"] / base_rate, 3)
    out["target_met"] = "cli" in out and out["cli"]["ratio_vs_baseline"] >= TARGET_RATIO
    out["wall_s"] = round(time.monotonic() - t_start, 1)
    if args.json:
        if profile_text:
            out["profile"] = profile_text
        print(json.dumps(out, indent=2))
        return 0

    mb = info["bytes"] / 1e6
    print(
        f"backfill of {args.count} messages ({mb:.1f} MB, {info['with_attachment']} with an attachment) in"
        f" {len(folders)} tracked folder(s); median of {args.repeat} run(s); {os.cpu_count()} CPUs,"
        f" load average before {load_before[0]:.2f}"
    )
    if "baseline" in out:
        b = out["baseline"]
        label = "baseline: stdlib read+parse+walk"
        print(f"  {label:<40} {b['median_msgs_per_s']:>7.0f} msgs/s  ({b['median_s']:.2f} s)")
    if "cli" in out:
        v = out["cli"]
        print(
            f"  {'mailfiler once (CLI, wall clock)':<40} {v['median_msgs_per_s']:>7.0f} msgs/s  ({v['median_s']:.2f} s)"
            f"  = {v['ratio_vs_baseline']:.1%} of baseline"
        )
    if "cli_inside" in out:
        v = out["cli_inside"]
        print(
            f"  {'mailfiler once, inside the scan':<40} {v['median_msgs_per_s']:>7.0f} msgs/s"
            f"  (first to last `tracked` line; {v['outside_scan_s_median']:.2f} s outside)"
            f"  = {v['ratio_vs_baseline']:.1%} of baseline"
        )
    if "inprocess" in out:
        v = out["inprocess"]
        print(
            f"  {'mailfiler scan_folder (in-process)':<40} {v['median_msgs_per_s']:>7.0f} msgs/s"
            f"  ({v['median_s']:.2f} s)"
            f"  = {v.get('ratio_vs_baseline', 0):.1%} of baseline"
            f"  (+{v['setup_s_median']:.2f} s open_store/build_services, untimed)"
        )
    last = (cli_runs or inproc_runs or [None])[-1]
    if last:
        print(
            f"  store after one run: {last['activities']} activities (tracked {last['new']}, shunted"
            f" {last['shunted']}); SQLite {last['db_bytes'] / 1e6:.1f} MB (attachments in {last['blob_rows']} rows:"
            f" {last['blob_row_bytes'] / 1e6:.1f} MB); attachment files {last['blob_bytes'] / 1e6:.1f} MB"
            f" in {last['blob_files']} files"
        )
    if "cli" in out:
        verdict = "MET" if out["target_met"] else "NOT MET"
        print(f"target: mailfiler once >= {TARGET_RATIO:.0%} of baseline msgs/s: {verdict}")
    print(f"wall time {out['wall_s']} s")
    if profile_text:
        print()
        print(profile_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
