#!/usr/bin/env python3
"""Track by tag on IMAP (issue 20): tag-to-tracked latency, and what an idle tag pass costs
on a large mailbox.

    .venv/bin/python bench/imap_tags.py                  # 60 tags, a 100,000-message folder
    .venv/bin/python bench/imap_tags.py --tags 100 --big 20000 --json

What is measured
  server    A throw-away Dovecot on loopback (the test suite's fixture code,
            tests/servers/dovecot.py), one user per part.
  latency   The real daemon (``python -m mailfiler --log-format json run``, fresh SQLite
            store) with ``track_tags: {}`` on an IMAP mailbox whose folder ``Projekt`` holds
            --tags messages that nothing tracks (unknown senders: auto-tracking skips them).
            A second IMAP client (plain imaplib, this process) sets the keyword ``CRM`` on
            one message at a time (``UID STORE +FLAGS (CRM)``); latency runs from the STORE's
            tagged OK to the daemon's ``tracked`` JSON log line for that Message-ID (written
            after the commit).  The next tag is set once that one is tracked, after a pause of
            100-300 ms.  Five warm-up tags are not counted.
  idle pass A folder ``Big`` of --big small messages written straight into the Maildir (then
            indexed by one doveadm call), 100 of them tagged ``CRM`` with doveadm, plus the
            user's INBOX and 8 more folders.  mailfiler's tag pass
            (``ImapSource.tag_changes``, no daemon) is timed and its bytes on the wire
            counted (received from the server, and sent), the median of --passes passes:
            * CONDSTORE, idle: cursors from a first pass, nothing changed since (what the
              daemon does every ``interval`` and on every push);
            * CONDSTORE, one tag set: the same after one more message got the keyword;
            * without CONDSTORE (``tag_condstore=False``: the keyword search in every folder
              at every pass, the fallback for servers without it), idle;
            * first pass (no cursors): the keyword search everywhere;
            * for comparison, a plain flag fetch of the big folder, ``UID FETCH 1:* (FLAGS)``
              (what a fallback that fetched every message's flags would cost per pass).
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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
from latency import LogReader, summary  # noqa: E402

from mailfiler.sources.base import TagQuery  # noqa: E402
from mailfiler.sources.imap import ImapSettings, ImapSource  # noqa: E402
from tests.servers.dovecot import DovecotServer, ImapUser, start_dovecot  # noqa: E402

QUERY = TagQuery(frozenset({"CRM", "CRM-untrack"}), ("CRM:",))


def message(n: int, prefix: str = "tag") -> bytes:
    return (
        f"From: Someone <someone{n}@elsewhere.example>\r\nTo: Alice <alice@example.com>\r\n"
        f"Subject: Fråga {n}\r\nDate: Tue, 02 Jan 2024 09:15:00 +0100\r\n"
        f"Message-ID: <{prefix}-{n}@bench.example>\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\nHej {n}!\r\n"
    ).encode()


def write_config(base: Path, user: ImapUser) -> Path:
    cfg = benchconfig.write_config(base, "unused", ["Tracked/Contoso"], writer="bench/imap_tags.py")
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    secret = base / "imap.password"
    secret.write_text(user.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    kw = user.settings_kwargs()
    for mb in data["mailboxes"]:
        mb.pop("maildir", None)
        mb.pop("layout", None)
        mb["imap"] = {"host": kw["host"], "port": kw["port"], "username": kw["username"],
                      "password_file": str(secret), "tls": "none"}  # fmt: skip
        mb["track_tags"] = {}
    cfg.write_text("# written by bench/imap_tags.py\n" + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return cfg


def run_latency(server: DovecotServer, base: Path, n: int, warmup: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    user = server.add_user()
    user.create_folder("Tracked/Contoso")
    user.create_folder("Projekt")
    admin = user.client()
    uids = [admin.append("Projekt", message(k)) for k in range(n + warmup)]
    cfg = write_config(base, user)
    cmd = [sys.executable, "-m", "mailfiler", "--config", str(cfg), "--log-format", "json", "run"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "MAILFILER_CONFIG"):
        env.pop(var, None)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    reader = LogReader(proc.stderr)
    reader.start()
    lat: list[float] = []
    missed = 0
    try:
        reader.wait_watching()
        time.sleep(1.0)  # its first tag pass and auto-tracking's look at Projekt are done
        admin.select("Projekt")
        for k, uid in enumerate(uids):
            mid = f"<tag-{k}@bench.example>"
            typ, _ = admin.imap.uid("STORE", str(uid), "+FLAGS", "(CRM)")
            assert typ == "OK", f"STORE refused: {typ}"
            t0 = time.monotonic()
            if not reader.wait(lambda m=mid: m in reader.tracked, 60):
                missed += 1
                continue
            if k >= warmup:
                lat.append(reader.tracked[mid] - t0)
            time.sleep(rng.uniform(0.1, 0.3))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        reader.join(5)
        admin.close()
    store = sqlite3_count(base / "store.db")
    return {"latency_ms": summary(lat), "missed": missed, "activities": store, "problems": reader.problems[-5:]}


def sqlite3_count(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM activity").fetchone()[0])


# -- the idle pass on a large mailbox ------------------------------------------------------


class Wire:
    """Bytes received and sent on a source's command connection."""

    def __init__(self, source: ImapSource) -> None:
        conn = source._conn  # noqa: SLF001 - the bench counts the bytes on the command connection
        assert conn is not None and conn.client is not None
        protocol = conn.client.protocol
        self.received = self.sent = 0
        receive, write = protocol.data_received, protocol.transport.write

        def data_received(data: bytes) -> None:
            self.received += len(data)
            receive(data)

        def counted_write(data: bytes) -> None:
            self.sent += len(data)
            write(data)

        protocol.data_received = data_received
        protocol.transport.write = counted_write


async def one_pass(source: ImapSource, cursors: dict[str, str | None]) -> tuple[float, int, int, int]:
    """(seconds, bytes received, bytes sent, changes) of one tag pass; cursors advanced."""
    wire = Wire(source)
    t0 = time.perf_counter()
    changes = 0
    async for delta in source.tag_changes(cursors, QUERY):
        changes += len(delta.changes)
        if delta.token is not None:
            cursors[delta.folder] = delta.token
    return time.perf_counter() - t0, wire.received, wire.sent, changes


def med(rows: list[tuple[float, int, int, int]]) -> dict[str, Any]:
    rows = sorted(rows)
    mid = rows[len(rows) // 2]
    return {"ms": round(mid[0] * 1000, 2), "bytes_in": mid[1], "bytes_out": mid[2], "changes": mid[3],
            "ms_min": round(rows[0][0] * 1000, 2), "ms_max": round(rows[-1][0] * 1000, 2)}  # fmt: skip


async def measure_pass(user: ImapUser, big: int, passes: int) -> dict[str, Any]:
    kw = user.settings_kwargs()
    out: dict[str, Any] = {}
    source = ImapSource(ImapSettings(**kw))
    await source.open()
    try:
        cursors: dict[str, str | None] = {}
        out["first_pass"] = med([await one_pass(source, cursors)])
        out["condstore_idle"] = med([await one_pass(source, cursors) for _ in range(passes)])
        rows = []
        for i in range(passes):
            user.server.doveadm("flags", "add", "-u", user.name, "CRM", "mailbox", "Big", "uid", str(200 + i))
            rows.append(await one_pass(source, cursors))
        out["condstore_one_tag"] = med(rows)
        # the flag fetch a fallback could do instead of the keyword search
        async with source.session() as conn:
            await conn.examine("Big")
            wire = Wire(source)
            t0 = time.perf_counter()
            got = await conn.uid_fetch("1:*", "(UID FLAGS)", timeout=300)
            out["flag_fetch_big_folder"] = {"ms": round((time.perf_counter() - t0) * 1000, 2),
                                            "bytes_in": wire.received, "messages": len(got)}  # fmt: skip
    finally:
        await source.close()
    fallback = ImapSource(ImapSettings(**kw, tag_condstore=False))
    await fallback.open()
    try:
        cursors = {}
        await one_pass(fallback, cursors)  # primes what the process has seen
        out["search_idle_no_condstore"] = med([await one_pass(fallback, cursors) for _ in range(passes)])
    finally:
        await fallback.close()
    return out


def run_pass(server: DovecotServer, big: int, passes: int) -> dict[str, Any]:
    user = server.add_user()
    user.create_folder("Tracked/Contoso")
    for i in range(8):
        user.create_folder(f"Archiv/{2017 + i}")
    t0 = time.monotonic()
    user.seed("Big", [message(k, "big") for k in range(big)])
    server.doveadm("mailbox", "status", "-u", user.name, "messages", "Big")  # indexes it
    server.doveadm("flags", "add", "-u", user.name, "CRM", "mailbox", "Big", "uid", "1:100")
    filled = time.monotonic() - t0
    out = asyncio.run(measure_pass(user, big, passes))
    out["folder_messages"] = big
    out["fill_s"] = round(filled, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tags", type=int, default=60, help="tags set while the daemon watches (counted)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--big", type=int, default=100_000, help="messages in the large folder")
    ap.add_argument("--passes", type=int, default=15, help="tag passes per figure (median)")
    ap.add_argument("--seed", type=int, default=4711)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-latency", action="store_true", help="measure the tag passes only")
    args = ap.parse_args()
    benchconfig.compile_bytecode()
    load = os.getloadavg()
    gen = start_dovecot(tls=False)
    server = next(gen)
    try:
        latency: dict[str, Any] = {"latency_ms": {}, "missed": 0}
        if not args.no_latency:
            with tempfile.TemporaryDirectory(prefix="mf-bench-tags-") as tmp:
                latency = run_latency(server, Path(tmp), args.tags, args.warmup, args.seed)
        idle = run_pass(server, args.big, args.passes)
    finally:
        gen.close()
    result = {**benchconfig.run_info("imap_tags", load), "latency": latency, "idle_pass": idle}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    s = latency["latency_ms"]
    print(f"tag-to-tracked over {s.get('n')} tags: median {s.get('median')} ms, p90 {s.get('p90')} ms, "
          f"p99 {s.get('p99')} ms, max {s.get('max')} ms (missed {latency['missed']})")  # fmt: skip
    print(f"tag pass on a mailbox with a {idle['folder_messages']}-message folder (filled in {idle['fill_s']} s):")
    for key in ("condstore_idle", "condstore_one_tag", "search_idle_no_condstore", "first_pass",
                "flag_fetch_big_folder"):  # fmt: skip
        print(f"  {key:26} {json.dumps(idle[key])}")


if __name__ == "__main__":
    main()
