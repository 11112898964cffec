#!/usr/bin/env python3
"""Catch-up cost over IMAP: a restart from the stored cursor token against a full diff.

    .venv/bin/python bench/imap_catchup.py                      # 2,000 and 10,000 messages, 3 server modes
    .venv/bin/python bench/imap_catchup.py --sizes 2000 --json

For each server mode (a throw-away Dovecot on loopback: ``qresync`` as it is; ``condstore``
without QRESYNC; ``plain`` without CONDSTORE, QRESYNC and ESEARCH) and folder size, the
folder is filled straight into the server's storage and recorded in a fresh SQLite store as
auto-tracking records a folder it first sees (no message is read: the same rows and token a
backfill leaves, without tracking 10,000 messages first; the catch-up code is the same for
tracked and watched folders).  Then, each on a new connection as after a restart:

  token       ``MailboxWorker.scan_folder`` with the stored token, nothing changed
  token+1/-1  the same after one new message and one expunge (the new one is judged)
  full diff   the same scan with the token forgotten: UID SEARCH ALL + the store diff
  watcher     the push watcher's own baseline of the folder (EXAMINE + UID SEARCH ALL),
              which every daemon start also pays
  start       a whole start as the daemon does it: login, LIST, the push watcher
              (NOTIFY or IDLE listeners, STATUS, its baseline) and the backfill from the
              token together, until the watcher's first rescan is handled

Figures: IMAP commands sent (by verb), and milliseconds (median of --repeat), for the scan
only (the login is the same for all).  Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mailfiler.config.schema import Config  # noqa: E402
from mailfiler.service.runtime import build_services  # noqa: E402
from mailfiler.service.worker import MailboxWorker  # noqa: E402
from mailfiler.sources import imapconn  # noqa: E402
from mailfiler.sources.imap import ImapSettings, ImapSource  # noqa: E402
from mailfiler.sources.imapwatch import FolderDiffer  # noqa: E402
from mailfiler.store import db as storedb  # noqa: E402
from mailfiler.store import models as m  # noqa: E402
from mailfiler.store.migrations import migrate  # noqa: E402
from tests.mailgen import realistic_message  # noqa: E402
from tests.servers.dovecot import start_dovecot  # noqa: E402

MODES = {"qresync": set(), "condstore": {"QRESYNC"}, "plain": {"QRESYNC", "CONDSTORE", "ESEARCH"}}
FOLDER = "INBOX"
SENT: list[str] = []


def count_commands() -> None:
    original = imapconn.ImapConnection.execute

    async def execute(self, command, what=None, timeout=None):  # type: ignore[no-untyped-def]
        SENT.append(f"{command.prefix or ''}{command.name}".strip())
        return await original(self, command, what, timeout)

    imapconn.ImapConnection.execute = execute  # type: ignore[method-assign]


def verbs() -> str:
    return ", ".join(f"{n} {v}" for v, n in Counter(SENT).items()) or "none"


async def measure(user, size: int, repeat: int, workdir: Path) -> dict:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{workdir / f'store-{user.name}.db'}"
    db = storedb.connect(url)
    migrate(db)
    config = Config(
        database=url,
        state_dir=workdir / "state",
        mailboxes=[{"name": "alice", "owner": "alice@example.com", "maildir": workdir / "unused"}],  # type: ignore[list-item]
    )
    services = build_services(db, config)
    rt = services.mailboxes["alice"]
    settings = ImapSettings(**user.settings_kwargs(), timeout=60)
    out: dict = {"size": size}

    async def restart() -> MailboxWorker:
        if isinstance(rt.source, ImapSource):
            await rt.source.close()
        rt.source = ImapSource(settings)
        await rt.source.open()
        worker = MailboxWorker(rt, services)
        await worker.discover(at_start=True)
        return worker

    async def scan(name: str, prepare=None) -> None:  # type: ignore[no-untyped-def]
        times, sent = [], ""
        for _ in range(repeat):
            if prepare is not None:
                prepare()
            worker = await restart()
            SENT.clear()
            t0 = time.perf_counter()
            await worker.scan_folder(FOLDER)
            times.append((time.perf_counter() - t0) * 1000)
            sent = verbs()
        out[name] = {"ms": round(statistics.median(times), 1), "commands": sent}

    worker = await restart()
    t0 = time.perf_counter()
    await worker.scan_folder(FOLDER)  # the first look: a baseline and a token
    out["first look ms"] = round((time.perf_counter() - t0) * 1000, 1)
    assert m.FolderCursor.get(m.FolderCursor.folder == FOLDER).token
    await scan("token")

    def forget() -> None:
        m.FolderCursor.update(token=None).execute()

    await scan("full diff", forget)

    n = [0]

    def one_in_one_out() -> None:
        with user.client() as admin:
            uids = admin.uids(FOLDER)
            admin.expunge(FOLDER, uids[n[0]])
            admin.append(FOLDER, realistic_message(10_000_000 + n[0], with_attachment_every=0).replace(b"\n", b"\r\n"))
        n[0] += 1

    await scan("token+1/-1", one_in_one_out)

    # a whole start as the daemon does it: log in, discover, start the push watcher
    # and the backfill together, then handle the watcher's first rescan of every folder
    times, sent = [], ""
    for _ in range(repeat):
        if isinstance(rt.source, ImapSource):
            await rt.source.close()
        SENT.clear()
        t0 = time.perf_counter()
        rt.source = ImapSource(settings)
        await rt.source.open()
        worker = MailboxWorker(rt, services)
        await worker.discover(at_start=True)
        stop = asyncio.Event()
        first: asyncio.Queue = asyncio.Queue()

        async def pump(stop: asyncio.Event, first: asyncio.Queue) -> None:
            async for batch in rt.source.watch([*rt.folders, *rt.watched], stop):
                first.put_nowait(batch)

        task = asyncio.create_task(pump(stop, first))
        for folder in [*rt.folders, *rt.watched]:
            await worker.scan_folder(folder)
        await worker.handle(await asyncio.wait_for(first.get(), 60))
        times.append((time.perf_counter() - t0) * 1000)
        sent = verbs()
        stop.set()
        await asyncio.wait_for(task, 10)
    out["daemon start"] = {"ms": round(statistics.median(times), 1), "commands": sent}

    times = []
    for _ in range(repeat):
        assert isinstance(rt.source, ImapSource)
        differ = FolderDiffer(rt.source)
        SENT.clear()
        t0 = time.perf_counter()
        await differ.baseline(FOLDER)
        times.append((time.perf_counter() - t0) * 1000)
    out["watcher baseline"] = {"ms": round(statistics.median(times), 1), "commands": verbs()}
    await rt.source.close()
    db.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    count_commands()
    results = []
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="mf-bench-catchup-") as tmp:
        for mode in args.modes.split(","):
            gen = start_dovecot(tls=False, drop=MODES[mode])
            server = next(gen)
            try:
                for size in (int(s) for s in args.sizes.split(",")):
                    user = server.add_user()
                    user.seed(FOLDER, [realistic_message(i, with_attachment_every=0) for i in range(size)])
                    with user.client() as admin:
                        assert len(admin.uids(FOLDER)) == size
                    res = asyncio.run(measure(user, size, args.repeat, Path(tmp)))
                    res["mode"] = mode
                    results.append(res)
                    if not args.json:
                        print(f"{mode:9} {size:6} messages")
                        for key in ("token", "token+1/-1", "full diff", "watcher baseline", "daemon start"):
                            print(f"  {key:17} {res[key]['ms']:8.1f} ms   {res[key]['commands']}")
                    server.remove_user_mail(user.name)
            finally:
                gen.close()
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
