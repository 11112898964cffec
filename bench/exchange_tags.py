#!/usr/bin/env python3
"""Track by tag on Exchange (issue 20): Outlook categories through EWS or Microsoft Graph,
against the fakes (tests/servers/ews, tests/servers/graph; not a real Exchange).

    .venv/bin/python bench/exchange_tags.py --backend ews          # 60 tags
    .venv/bin/python bench/exchange_tags.py --backend graph --tags 80 --json

What is measured
  latency   The real daemon (``python -m mailfiler --log-format json run``, fresh SQLite
            store) with ``track_tags: {interval: 60}`` on a mailbox whose folder ``Projekt``
            (not tracked; watched by auto-tracking, as every folder is by default) holds
            --tags + 5 messages that nothing tracks (unknown senders).  This process acts as
            Outlook through the fake's own API and sets the category ``CRM`` on one message
            at a time (EWS: an UpdateItem as Exchange records it, a new ChangeKey, a
            ModifiedEvent on the stream; Graph: a category change that message delta
            shows); latency runs from that change to the daemon's ``tracked`` JSON log line
            for the message (written after the commit).  The next one is set once that one
            is tracked, after 100-300 ms.  Five warm-up tags are not counted.  EWS is pushed
            (the all-folders stream wakes the tag pass); Graph is polled (poll 0.1-0.4 s, the
            tests' pace; the default is 2-60 s).
  idle pass ``tag_changes`` of the backend's Source, no daemon, on a mailbox of INBOX, the 4
            tracked folders, ``Projekt`` and 8 ``Archive/20xx`` folders, one of them with
            --big messages, 100 of them categorised: a first pass (no cursors), then
            --passes idle passes (cursors from the pass before, nothing changed), then one
            category set before each pass; requests the fake served per pass (token
            requests apart) and the time, median.  First without a watcher (``mailfiler
            once``), then with the daemon's watcher running in this process (EWS: the
            all-folders stream; Graph: every folder polled), where a pass walks only the
            folders the watcher saw change.
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
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
from benchconfig import FOLDERS  # noqa: E402
from ews_common import users, write_ews_config  # noqa: E402
from graph_latency import graph_requests, spawn, stop, write_graph_config  # noqa: E402
from latency import summary  # noqa: E402

from mailfiler.sources.base import Source, TagQuery  # noqa: E402
from tests.graph.helpers import UPN  # noqa: E402
from tests.graph.helpers import settings as graph_settings  # noqa: E402
from tests.graph.helpers import tenant as graph_tenant  # noqa: E402
from tests.servers.ews import EwsServer  # noqa: E402
from tests.servers.graph import GraphFake  # noqa: E402
from tests.servers.tls import make_tls  # noqa: E402

MAILBOX = "alice@example.com"
QUERY = TagQuery(frozenset({"CRM", "CRM-untrack"}), ("CRM:",), frozenset({"Untrack"}))
TRACKED = [f for f, _ in FOLDERS]
ARCHIVES = [f"Archive/{2017 + i}" for i in range(8)]


def message(n: int, prefix: str = "tag") -> bytes:
    return (
        f"From: Someone <someone{n}@elsewhere.example>\r\nTo: Alice <alice@example.com>\r\n"
        f"Subject: Fråga {n}\r\nDate: Tue, 02 Jan 2024 09:15:00 +0100\r\n"
        f"Message-ID: <{prefix}-{n}@bench.example>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\nHej {n}!\r\n"
    ).encode()


class Box:
    """One backend's fake mailbox, acted on as Outlook."""

    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend = backend
        if backend == "ews":
            self.ews = EwsServer(users([MAILBOX], [*TRACKED, "Projekt", *ARCHIVES]))
            self.ews.__enter__()
        else:
            (tmp / "tls").mkdir(parents=True, exist_ok=True)
            self.graph = GraphFake(make_tls(tmp / "tls"))
            self.graph.__enter__()
            graph_tenant(self.graph, [*TRACKED, "Projekt", *ARCHIVES])

    def close(self) -> None:
        if self.backend == "ews":
            self.ews.__exit__(None, None, None)
        else:
            self.graph.__exit__(None, None, None)

    def deliver(self, folder: str, data: bytes) -> Any:
        if self.backend == "ews":
            return self.ews.deliver(MAILBOX, data, folder)
        return self.graph.deliver(UPN, folder, data)

    def tag(self, ref: Any, *names: str) -> None:
        if self.backend == "ews":
            self.ews.set_categories(ref, list(names))
        else:
            self.graph.set_categories(UPN, ref, list(names))

    def requests(self) -> int:
        return len(self.ews.requests) if self.backend == "ews" else graph_requests(self.graph)

    def config(self, base: Path) -> Path:
        if self.backend == "ews":
            cfg = write_ews_config(base, self.ews.ews_url, [MAILBOX], TRACKED, writer="bench/exchange_tags.py")
        else:
            cfg = write_graph_config(base, self.graph, TRACKED, (0.1, 0.4))
        data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        for mb in data["mailboxes"]:
            mb.pop("auto_track", None)  # every folder watched, as by default
            mb["track_tags"] = {"interval": 60}
        cfg.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
        return cfg

    def source(self) -> Source:
        if self.backend == "ews":
            from mailfiler.sources.ews import EwsSettings, EwsSource
            from mailfiler.util.secrets import SecretProvider

            secret = SecretProvider("bench", password_command=["printf", "pw-user"])
            return EwsSource(EwsSettings(url=self.ews.ews_url, username=MAILBOX, secret=secret, auth="basic",
                                         mailbox=MAILBOX, version="2016", tag_events=True))  # fmt: skip
        from mailfiler.sources.graph.source import GraphSource

        return GraphSource(graph_settings(self.graph, tag_events=True))


def run_latency(box: Box, base: Path, n: int, warmup: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    refs = [box.deliver("Projekt", message(k)) for k in range(n + warmup)]
    proc, reader = spawn(box.config(base))
    lat: list[float] = []
    missed = 0
    before = 0
    try:
        reader.wait_watching(proc)
        time.sleep(1.0)  # its first tag pass is done
        before = box.requests()
        for k, ref in enumerate(refs):
            mid = f"<tag-{k}@bench.example>"
            box.tag(ref, "CRM")
            t0 = time.monotonic()
            if not reader.wait(lambda m=mid: m in reader.tracked, 60):
                missed += 1
                continue
            if k >= warmup:
                lat.append(reader.tracked[mid] - t0)
            time.sleep(rng.uniform(0.1, 0.3))
        used = box.requests() - before
    finally:
        rc = stop(proc, reader)
    with sqlite3.connect(f"file:{base / 'store.db'}?mode=ro", uri=True) as con:
        activities = con.execute("select count(*) from activity").fetchone()[0]
    return {"latency_ms": summary(lat), "missed": missed, "activities": activities, "exit_code": rc,
            "requests_per_tag": round(used / max(1, n + warmup), 1), "problems": reader.problems[-5:]}  # fmt: skip


async def one_pass(source: Source, box: Box, cursors: dict[str, str | None]) -> tuple[float, int, int]:
    before = box.requests()
    t0 = time.perf_counter()
    changes = 0
    async for delta in source.tag_changes(cursors, QUERY):
        changes += len(delta.changes)
        if delta.token is not None:
            cursors[delta.folder] = delta.token
    return time.perf_counter() - t0, box.requests() - before, changes


def med(rows: list[tuple[float, int, int]]) -> dict[str, Any]:
    rows = sorted(rows)
    mid = rows[len(rows) // 2]
    return {"ms": round(mid[0] * 1000, 1), "requests": mid[1], "changes": mid[2],
            "ms_min": round(rows[0][0] * 1000, 1), "ms_max": round(rows[-1][0] * 1000, 1)}  # fmt: skip


async def measure_pass(box: Box, big: int, passes: int) -> dict[str, Any]:
    refs = [box.deliver(ARCHIVES[0], message(k, "big")) for k in range(big)]
    for ref in refs[:100]:
        box.tag(ref, "CRM")
    source = box.source()
    await source.open()
    try:
        cursors: dict[str, str | None] = {}
        out = {"first_pass": med([await one_pass(source, box, cursors)])}
        out["idle"] = med([await one_pass(source, box, cursors) for _ in range(passes)])
        rows = []
        for i in range(passes):
            box.tag(refs[200 + i], "CRM")
            rows.append(await one_pass(source, box, cursors))
        out["one_tag_set"] = med(rows)
        out["folders"] = len(cursors)
        out.update(await watched_passes(source, box, cursors, refs, passes))
    finally:
        await source.close()
    return out


async def watched_passes(
    source: Source, box: Box, cursors: dict[str, str | None], refs: list[Any], passes: int
) -> dict[str, Any]:
    """The same with the daemon's watcher running (EWS: the all-folders stream; Graph: every
    folder polled), as in the daemon: the pass walks only what the watcher saw change."""
    stop = asyncio.Event()
    folders = await source.list_folders()

    async def watch() -> None:
        async for _ in source.watch(folders if box.backend == "graph" else ["INBOX"], stop):
            pass

    task = asyncio.create_task(watch())
    out: dict[str, Any] = {}
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            if box.backend == "ews" and source.tag_dirty.live:  # type: ignore[attr-defined]
                break
            if box.backend == "graph" and len(source.tag_watched.live) >= len(folders):  # type: ignore[attr-defined]
                break
        await asyncio.sleep(0.5)
        await one_pass(source, box, cursors)  # the first after the watcher started: every folder
        out["idle_watched"] = med([await one_pass(source, box, cursors) for _ in range(passes)])
        rows = []
        for i in range(passes):
            box.tag(refs[400 + i], "CRM")
            await asyncio.sleep(1.0 if box.backend == "ews" else 3.0)  # the watcher hears of it
            rows.append(await one_pass(source, box, cursors))
        out["one_tag_set_watched"] = med(rows)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("ews", "graph"), required=True)
    ap.add_argument("--tags", type=int, default=60, help="categories set while the daemon watches (counted)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--big", type=int, default=2000, help="messages in the large folder")
    ap.add_argument("--passes", type=int, default=15, help="tag passes per figure (median)")
    ap.add_argument("--seed", type=int, default=4711)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    benchconfig.compile_bytecode()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mf-bench-xtags-") as tmp:
        box = Box(args.backend, Path(tmp))
        try:
            base = Path(tmp) / "run"
            base.mkdir()
            latency = run_latency(box, base, args.tags, args.warmup, args.seed)
        finally:
            box.close()
        box = Box(args.backend, Path(tmp) / "pass")
        try:
            idle = asyncio.run(measure_pass(box, args.big, args.passes))
        finally:
            box.close()
    result = {**benchconfig.run_info(f"exchange_tags_{args.backend}", load), "latency": latency, "pass": idle}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    s = latency["latency_ms"]
    print(f"{args.backend}: tag-to-tracked over {s.get('n')} tags: median {s.get('median')} ms, p90 {s.get('p90')} "
          f"ms, p99 {s.get('p99')} ms, max {s.get('max')} ms (missed {latency['missed']}, "
          f"{latency['requests_per_tag']} requests a tag, activities {latency['activities']})")  # fmt: skip
    print(f"tag passes over {idle['folders']} folders, one of {args.big} messages:")
    for key in ("first_pass", "idle", "one_tag_set", "idle_watched", "one_tag_set_watched"):
        print(f"  {key:12} {json.dumps(idle[key])}")


if __name__ == "__main__":
    main()
