#!/usr/bin/env python3
"""Backfill of one folder through Microsoft Graph (the Graph fake): mailfiler beside a raw batched
``$value`` fetch of the same folder.

    .venv/bin/python bench/graph_backfill.py                  # 10,000 messages, 1 repeat
    .venv/bin/python bench/graph_backfill.py --count 2000 --repeat 3

Setup: the Graph fake (tests/servers/graph/) in this process on loopback HTTPS, one user whose
tracked folder ``Tracked/Contoso`` holds --count ``realistic_message``s (5-20 KB, every 5th with
an attachment: the corpus of bench/backfill.py).  Microsoft 365 cannot be reached from here:
the fake answers in microseconds, so the figures say what each client costs, not what Exchange
Online takes (there, the round trips dominate and batching matters more).

What is measured (messages/s; each repeat runs every variant, interleaved)
  raw batched   A bare httpx client (HTTP/1.1, 4 connections, the mailbox's concurrency limit):
                the folder's message delta (ids, pages of 1,000), then ``POST $batch`` with 20
                ``GET .../messages/{id}/$value`` each, 4 batches in flight; base64-decoded bytes,
                no parsing.
  raw streamed  The same client with 4 plain ``GET .../$value`` in flight (what mailfiler does).
  mailfiler     ``python -m mailfiler --log-format json once --json`` on a fresh SQLite store,
                wall clock (start-up, sign-in, listing, every message tracked and committed),
                and the Graph requests it made.

Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import ssl
import statistics
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
import httpx  # noqa: E402
from graph_latency import graph_requests, write_graph_config  # noqa: E402

from tests.graph.helpers import APP_ID, SECRET, UPN  # noqa: E402
from tests.mailgen import realistic_message  # noqa: E402
from tests.servers.graph import GraphFake  # noqa: E402
from tests.servers.tls import make_tls  # noqa: E402

FOLDER = "Tracked/Contoso"
CONCURRENCY = 4


def _client(graph: GraphFake) -> httpx.AsyncClient:
    assert graph.tls is not None
    ctx = ssl.create_default_context(cafile=str(graph.tls.ca_file))
    token = httpx.post(
        f"{graph.authority}/oauth2/v2.0/token", verify=ctx,
        data={"grant_type": "client_credentials", "client_id": APP_ID, "client_secret": SECRET,
              "scope": "https://graph.microsoft.com/.default"},
    ).json()["access_token"]  # fmt: skip
    return httpx.AsyncClient(
        verify=ctx, timeout=60, limits=httpx.Limits(max_connections=CONCURRENCY),
        headers={"Authorization": f"Bearer {token}", "Prefer": 'IdType="ImmutableId"'},
    )  # fmt: skip


async def _ids(http: httpx.AsyncClient, graph: GraphFake) -> list[str]:
    url: str | None = (
        f"{graph.url}/v1.0/users/{UPN}/mailFolders/{graph.folder(UPN, FOLDER).id}/messages/delta?$select=id"
    )
    ids: list[str] = []
    while url:
        page = (await http.get(url, headers={"Prefer": 'IdType="ImmutableId", odata.maxpagesize=1000'})).json()
        ids += [item["id"] for item in page["value"]]
        url = page.get("@odata.nextLink")
    return ids


async def raw_batched(graph: GraphFake) -> tuple[int, int]:
    async with _client(graph) as http:
        ids = await _ids(http, graph)
        folder = graph.folder(UPN, FOLDER).id
        chunks = [ids[i : i + 20] for i in range(0, len(ids), 20)]
        total = 0
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(chunk: list[str]) -> int:
            body = {"requests": [
                {"id": str(n), "method": "GET", "url": f"users/{UPN}/mailFolders/{folder}/messages/{sid}/$value",
                 "headers": {"Prefer": 'IdType="ImmutableId"'}} for n, sid in enumerate(chunk)]}  # fmt: skip
            async with gate:
                answer = (await http.post(f"{graph.url}/v1.0/$batch", json=body)).json()
            return sum(len(base64.b64decode(r["body"])) for r in answer["responses"] if r["status"] == 200)

        for got in await asyncio.gather(*(one(c) for c in chunks)):
            total += got
        return len(ids), total


async def raw_streamed(graph: GraphFake) -> tuple[int, int]:
    async with _client(graph) as http:
        ids = await _ids(http, graph)
        folder = graph.folder(UPN, FOLDER).id
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(sid: str) -> int:
            async with gate:
                r = await http.get(f"{graph.url}/v1.0/users/{UPN}/mailFolders/{folder}/messages/{sid}/$value")
            return len(r.content)

        return len(ids), sum(await asyncio.gather(*(one(s) for s in ids)))


def mailfiler_once(graph: GraphFake, base: Path) -> dict[str, Any]:
    base.mkdir()
    cfg = write_graph_config(base, graph, [FOLDER], None)
    env = {k: v for k, v in os.environ.items() if k not in ("MAILFILER_CONFIG", "NOTIFY_SOCKET")}
    before = graph_requests(graph)
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "once", "--json"],
        capture_output=True, text=True, env=env, timeout=3600, check=False,
    )  # fmt: skip
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"mailfiler once failed: {res.stderr[-2000:]}")
    after = graph_requests(graph)
    return {"wall_s": wall, "result": json.loads(res.stdout), "graph_requests": after - before}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    benchconfig.compile_bytecode()
    base = Path(tempfile.mkdtemp(prefix="mailfiler-graph-backfill-"))
    (base / "tls").mkdir()
    rates: dict[str, list[float]] = {"raw batched": [], "raw streamed": [], "mailfiler": []}
    requests: list[int] = []
    nbytes = 0
    try:
        with GraphFake(make_tls(base / "tls")) as graph:
            graph.add_user(UPN, "Adele Vance", [FOLDER])
            graph.identity.register_app(APP_ID, secret=SECRET)
            for i in range(args.count):
                raw = realistic_message(i)
                nbytes += len(raw)
                graph.deliver(UPN, FOLDER, raw)
            graph_requests(graph)  # start counting
            asyncio.run(raw_streamed(graph))  # warm-up
            for rep in range(args.repeat):
                for name, fn in (("raw batched", raw_batched), ("raw streamed", raw_streamed)):
                    t0 = time.monotonic()
                    n, got = asyncio.run(fn(graph))
                    assert n == args.count and got == nbytes, (name, n, got, nbytes)
                    rates[name].append(n / (time.monotonic() - t0))
                run = mailfiler_once(graph, base / f"mailfiler-{rep}")
                new = sum(r["new"] for r in run["result"]["alice"])
                assert new == args.count, run["result"]
                rates["mailfiler"].append(args.count / run["wall_s"])
                requests.append(run["graph_requests"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    med = {k: round(statistics.median(v), 1) for k, v in rates.items()}
    out = {
        **benchconfig.run_info("graph_backfill", load_before),
        "count": args.count,
        "mbytes": round(nbytes / 1e6, 1),
        "messages_per_s": med,
        "mailfiler_vs_raw_batched": round(med["mailfiler"] / med["raw batched"], 2),
        "mailfiler_vs_raw_streamed": round(med["mailfiler"] / med["raw streamed"], 2),
        "mailfiler_graph_requests": requests,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.count} messages ({out['mbytes']} MB) in one folder; {os.cpu_count()} CPUs,"
          f" load average before {load_before[0]:.2f}; median of {args.repeat}")  # fmt: skip
    for name, rate in med.items():
        print(f"  {name:<14} {rate:>9.1f} messages/s")
    ratios = (out["mailfiler_vs_raw_batched"], out["mailfiler_vs_raw_streamed"])
    print(f"  mailfiler / raw batched: {ratios[0]}; / raw streamed: {ratios[1]}")
    print(f"  mailfiler's Graph requests: {requests} ($batch of 20, delta pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
