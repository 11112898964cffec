#!/usr/bin/env python3
"""Drop-to-tracked latency through Microsoft Graph (the Graph fake) with delta polling, beside a
bare delta poller seeing the same deliveries; and Graph requests per hour of an idle mailbox.

    .venv/bin/python bench/graph_latency.py                  # 200 deliveries, then 240 s idle
    .venv/bin/python bench/graph_latency.py --drops 300 --idle 0 --json

What is measured (one run, the same deliveries for both)
  server    The Graph fake (tests/servers/graph/) in this process, on loopback HTTPS: one user,
            the four tracked folders of bench/benchconfig.py.  Microsoft 365 cannot be reached
            from here: the figures say what mailfiler adds, not what Exchange Online takes.
  mailfiler The real daemon (``python -m mailfiler --log-format json run``) configured with
            ``graph:`` (app-only, a client secret), ``poll: {min, max}`` as given (default
            0.25 s / 1 s).  Latency: from ``GraphFake.deliver`` returning (the message is in
            the folder) to the daemon's ``tracked`` JSON log line for its Message-ID.
  baseline  A bare httpx client in a thread of this process polling the same folders' message
            delta links at the pace mailfiler keeps while mail arrives (``poll.min``, or longer
            with many folders: at most 8 requests a second), one request per folder per round.
            Latency: from the same delivery to the delta round that shows the new id.  This
            is the fake's own delay plus the polling delay: the floor for polling at that pace.
  idle      Afterwards the daemon is left alone for ``--idle`` seconds with the default poll
            settings (2 s stretching to 60 s) in a second run; Graph requests (the fake's
            request log, token requests apart) in the second half of that time, per hour.

Deliveries go round-robin over the folders, one every 100-200 ms by default; five warm-up
deliveries (waited for) are not counted.  Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import benchconfig  # noqa: E402
import httpx  # noqa: E402
import yaml  # noqa: E402
from benchconfig import FOLDERS  # noqa: E402
from latency import LogReader, Pace, paced_drops, summary  # noqa: E402

from mailfiler.sources.graph.watch import MAX_POLL_RATE  # noqa: E402
from tests.graph.helpers import APP_ID, SECRET, UPN  # noqa: E402
from tests.mailgen import message_id_for, realistic_message  # noqa: E402
from tests.servers.graph import GraphFake  # noqa: E402
from tests.servers.tls import make_tls  # noqa: E402


def write_graph_config(base: Path, graph: GraphFake, folders: list[str], poll: tuple[float, float] | None) -> Path:
    cfg = benchconfig.write_config(base, "unused", folders, writer="bench/graph_latency.py")
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    secret = base / "graph.secret"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    secret.chmod(0o600)
    assert graph.tls is not None
    for mb in data["mailboxes"]:
        mb.pop("maildir", None)
        mb.pop("layout", None)
        # only the tracked folders are polled (auto-tracking would watch every other folder too,
        # and the watcher's pace slows with the folder count: see MAX_POLL_RATE)
        mb["auto_track"] = {"policy": "none", "folders": []}
        mb["graph"] = {
            "tenant": graph.tenant.id,
            "client_id": APP_ID,
            "authority": graph.url,
            "graph_url": f"{graph.url}/v1.0",
            "user": UPN,
            "password_file": str(secret),
            "ca_file": str(graph.tls.ca_file),
            **({"poll": {"min": poll[0], "max": poll[1]}} if poll else {}),
        }
    cfg.write_text("# written by bench/graph_latency.py\n" + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return cfg


class BarePoller:
    """Polls each folder's message delta every ``interval`` s with a plain httpx client;
    ``seen[immutable id]``: when a delta round first showed it."""

    def __init__(self, graph: GraphFake, folders: list[str], interval: float) -> None:
        assert graph.tls is not None
        self.graph, self.folders, self.interval = graph, folders, interval
        self.seen: dict[str, float] = {}
        self.requests = 0
        self._stop = threading.Event()
        token = httpx.post(
            f"{graph.authority}/oauth2/v2.0/token",
            verify=ssl.create_default_context(cafile=str(graph.tls.ca_file)),
            data={"grant_type": "client_credentials", "client_id": APP_ID, "client_secret": SECRET,
                  "scope": "https://graph.microsoft.com/.default"},
        ).json()["access_token"]  # fmt: skip
        self.http = httpx.Client(
            verify=ssl.create_default_context(cafile=str(graph.tls.ca_file)),
            headers={"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'},
            timeout=10,
        )
        self.links = {f: self._round(f"{graph.url}/v1.0/users/{UPN}/mailFolders/{graph.folder(UPN, f).id}"
                                     "/messages/delta?$select=id", record=False) for f in folders}  # fmt: skip
        self._thread = threading.Thread(target=self._run, name="bare-poller", daemon=True)

    def _round(self, url: str, *, record: bool = True) -> str:
        while True:
            page = self.http.get(url).json()
            self.requests += 1
            now = time.monotonic()
            for item in page["value"]:
                if record and "@removed" not in item:
                    self.seen.setdefault(item["id"], now)
            if "@odata.deltaLink" in page:
                return str(page["@odata.deltaLink"])
            url = page["@odata.nextLink"]

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            for folder in self.folders:
                self.links[folder] = self._round(self.links[folder])
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.http.close()


def spawn(cfg: Path) -> tuple[subprocess.Popen[bytes], LogReader]:
    cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "run"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MAILFILER_CONFIG"):
        env.pop(var, None)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    reader = LogReader(proc.stderr)
    reader.start()
    return proc, reader


def stop(proc: subprocess.Popen[bytes], reader: LogReader) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    reader.join(5)
    return rc


_COUNTS: dict[int, list[int]] = {}


def graph_requests(graph: GraphFake) -> int:
    """Graph requests the fake has served (its request log is bounded: count as they come)."""
    if id(graph) not in _COUNTS:
        counts = _COUNTS[id(graph)] = [0, 0]
        record = graph.server.record

        def counting(request: Any) -> None:
            counts[0 if request.path.startswith("/v1.0/") else 1] += 1
            record(request)

        graph.server.record = counting  # type: ignore[method-assign]
    return _COUNTS[id(graph)][0]


def token_requests(graph: GraphFake) -> int:
    graph_requests(graph)
    return _COUNTS[id(graph)][1]


def run_latency(graph: GraphFake, base: Path, n: int, warmup: int, pace: Pace, poll: tuple[float, float],
                seed: int) -> dict[str, Any]:  # fmt: skip
    folders = [f for f, _ in FOLDERS]
    cfg = write_graph_config(base, graph, folders, poll)
    # the pace mailfiler's watcher keeps while mail arrives: poll.min, or longer for many folders
    interval = max(poll[0], len(folders) / MAX_POLL_RATE)
    bare = BarePoller(graph, folders, interval)
    graph_requests(graph)  # start counting
    bare.start()
    t_spawn = time.monotonic()
    proc, reader = spawn(cfg)
    drops: list[tuple[str, str, float]] = []  # message id, immutable id, delivered at

    def deliver(k: int) -> str:
        folder = folders[k % len(folders)]
        msg = graph.deliver(UPN, folder, realistic_message(k, seed=seed))
        drops.append((message_id_for(k, seed=seed), msg.immutable_id, time.monotonic()))
        return drops[-1][0]

    result: dict[str, Any] = {"bare_interval_s": interval}
    try:
        reader.wait_watching(proc)
        result["startup_s"] = round(time.monotonic() - t_spawn, 3)
        reader.warm_up(deliver, warmup)
        requests_before = graph_requests(graph) - bare.requests
        t0 = time.monotonic()
        paced_drops(n, pace, lambda k: deliver(warmup + k))
        wanted = {d[0] for d in drops}
        reader.wait(lambda: wanted <= reader.tracked.keys(), 30)
        phase = time.monotonic() - t0
        result["busy_requests_per_s"] = round((graph_requests(graph) - bare.requests - requests_before) / phase, 1)
    finally:
        bare.stop()
        rc = stop(proc, reader)
    measured = drops[warmup:]
    daemon_lat = {mid: reader.tracked[mid] - t for mid, _, t in measured if mid in reader.tracked}
    bare_lat = {mid: bare.seen[iid] - t for mid, iid, t in measured if iid in bare.seen}
    gaps = [daemon_lat[m] - bare_lat[m] for m in daemon_lat if m in bare_lat]
    with sqlite3.connect(f"file:{base / 'store.db'}?mode=ro", uri=True) as con:
        activities = con.execute("select count(*) from activity").fetchone()[0]
    result.update(
        {
            "bare_delta_poll": summary(list(bare_lat.values())),
            "mailfiler_tracked": summary(list(daemon_lat.values())),
            "mailfiler_minus_bare_same_delivery": summary(gaps),
            "missed": {"mailfiler": n - len(daemon_lat), "bare": n - len(bare_lat)},
            "db": {"expected": warmup + n, "activities": activities},
            "exit_code": rc,
            "problems": reader.problems[:10],
        }
    )
    return result


def run_webhook(graph: GraphFake, base: Path, n: int, warmup: int, pace: Pace, seed: int) -> dict[str, Any]:
    """The same deliveries with change notifications (polling 30-60 s apart: the safety net only).
    Baseline: the fake's own notification delay (delivered -> its POST answered)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    graph.subscriptions.allow_http = True  # a reverse proxy's job in production
    folders = [f for f, _ in FOLDERS]
    cfg = write_graph_config(base, graph, folders, (30.0, 60.0))
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    data["mailboxes"][0]["graph"]["webhook"] = {"url": f"http://127.0.0.1:{port}/graph", "listen_port": port}
    cfg.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    proc, reader = spawn(cfg)
    drops: list[tuple[str, float, float]] = []  # message id, delivered at (monotonic, wall)

    def deliver(k: int) -> str:
        graph.deliver(UPN, folders[k % len(folders)], realistic_message(100_000 + k, seed=seed))
        drops.append((message_id_for(100_000 + k, seed=seed), time.monotonic(), time.time()))
        return drops[-1][0]

    try:
        reader.wait_watching(proc)
        deadline = time.monotonic() + 20
        while len(graph.subscriptions.items) < len(folders) and time.monotonic() < deadline:
            time.sleep(0.05)
        first = len(graph.subscriptions.deliveries)
        reader.warm_up(deliver, warmup)
        paced_drops(n, pace, lambda k: deliver(warmup + k))
        wanted = {d[0] for d in drops}
        reader.wait(lambda: wanted <= reader.tracked.keys(), 60)
        time.sleep(0.5)
    finally:
        rc = stop(proc, reader)
    created = [d for d in list(graph.subscriptions.deliveries)[first:] if d.change_type == "created"]
    measured = drops[warmup:]
    fake = [created[warmup + i].at - wall for i, (_, _, wall) in enumerate(measured) if warmup + i < len(created)]
    daemon_lat = [reader.tracked[m] - t for m, t, _ in measured if m in reader.tracked]
    return {
        "fake_notification": summary(fake),
        "mailfiler_tracked": summary(daemon_lat),
        "missed": n - len(daemon_lat),
        "subscriptions": len(folders),
        "exit_code": rc,
    }


def run_idle(graph: GraphFake, base: Path, seconds: float) -> dict[str, Any]:
    """The default poll settings, nothing arriving: Graph requests per hour in the second half."""
    folders = [f for f, _ in FOLDERS]
    cfg = write_graph_config(base, graph, folders, None)
    proc, reader = spawn(cfg)
    try:
        reader.wait_watching(proc)
        time.sleep(seconds / 2)
        before = graph_requests(graph)
        tokens_before = token_requests(graph)
        time.sleep(seconds / 2)
        count = graph_requests(graph) - before
        tokens = token_requests(graph) - tokens_before
    finally:
        rc = stop(proc, reader)
    per_hour = count * 3600 / (seconds / 2)
    return {
        "idle_s": seconds,
        "graph_requests_in_second_half": count,
        "token_requests_in_second_half": tokens,
        "requests_per_hour": round(per_hour),
        "steady_state_per_hour": round(len(folders) * 3600 / 60),
        "graph_limit_per_hour": 60_000,
        "exit_code": rc,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--drops", type=int, default=200, help="measured deliveries (default 200)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pace-ms", type=float, nargs=2, default=(100.0, 200.0), metavar=("LO", "HI"))
    ap.add_argument("--poll", type=float, nargs=2, default=(0.25, 1.0), metavar=("MIN", "MAX"))
    ap.add_argument("--idle", type=float, default=240.0, help="seconds of the idle run (0: skip)")
    ap.add_argument("--webhook", action="store_true", help="also the same deliveries with change notifications")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    t_start = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="mailfiler-graph-latency-"))
    (base / "tls").mkdir()
    out: dict[str, Any] = {}
    try:
        with GraphFake(make_tls(base / "tls")) as graph:
            graph.add_user(UPN, "Adele Vance", [f for f, _ in FOLDERS])
            graph.identity.register_app(APP_ID, secret=SECRET)
            (base / "latency").mkdir()
            out = run_latency(graph, base / "latency", args.drops, args.warmup, Pace(*args.pace_ms),
                              tuple(args.poll), args.seed)  # fmt: skip
            if args.webhook:
                (base / "webhook").mkdir()
                out["webhook"] = run_webhook(graph, base / "webhook", args.drops, args.warmup, Pace(*args.pace_ms),
                                             args.seed)  # fmt: skip
            if args.idle > 0:
                (base / "idle").mkdir()
                out["idle"] = run_idle(graph, base / "idle", args.idle)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out.update({**benchconfig.run_info("graph_latency", load_before), "drops": args.drops,
                "poll": list(args.poll), "wall_s": round(time.monotonic() - t_start, 1)})  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    lo, hi = args.pace_ms
    print(
        f"{args.drops} deliveries over {len(FOLDERS)} tracked folders, one every {lo:g}-{hi:g} ms; poll"
        f" {args.poll[0]:g}-{args.poll[1]:g} s; {os.cpu_count()} CPUs, load average before {load_before[0]:.2f}"
    )
    print(f"  {'':<46} {'median':>9} {'p90':>9} {'p99':>9} {'max':>9}  (ms)")
    for label, key in (
        (f"baseline: bare delta poll every {out['bare_interval_s']:g} s", "bare_delta_poll"),
        ("mailfiler daemon: delivered -> tracked", "mailfiler_tracked"),
        ("mailfiler minus baseline, same delivery", "mailfiler_minus_bare_same_delivery"),
    ):
        s = out[key]
        if s.get("n"):
            print(f"  {label:<46} {s['median']:>9.1f} {s['p90']:>9.1f} {s['p99']:>9.1f} {s['max']:>9.1f}")
    b, m = out["bare_delta_poll"], out["mailfiler_tracked"]
    if b.get("n") and m.get("n"):
        print(f"  ratio of medians: {m['median'] / b['median']:.2f}x the bare poller")
    db = out["db"]
    print(f"  store: {db['activities']} activities for {db['expected']} deliveries; missed {out['missed']}")
    print(f"  Graph requests per second while mail arrives: {out['busy_requests_per_s']}")
    if "webhook" in out:
        w = out["webhook"]
        for label, key in (
            ("webhooks: the fake's notification delay", "fake_notification"),
            ("webhooks: mailfiler delivered -> tracked", "mailfiler_tracked"),
        ):
            if w[key].get("n"):
                x = w[key]
                print(f"  {label:<46} {x['median']:>9.1f} {x['p90']:>9.1f} {x['p99']:>9.1f} {x['max']:>9.1f}")
        print(f"  webhooks (polling 30-60 s apart): missed {w['missed']}, {w['subscriptions']} subscriptions")
    if "idle" in out:
        i = out["idle"]
        print(
            f"  idle mailbox (default poll 2-60 s, {len(FOLDERS)} folders): {i['graph_requests_in_second_half']}"
            f" Graph requests in the last {i['idle_s'] / 2:g} s = {i['requests_per_hour']}/hour"
            f" (steady state {i['steady_state_per_hour']}/hour; Graph allows {i['graph_limit_per_hour']}/hour)"
        )
    if out["problems"]:
        print(f"  problems: {out['problems']}")
    print(f"wall time {out['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
