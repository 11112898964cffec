"""Concurrent writers tracking the same Message-IDs end with one activity each.

Threads get their own connection (peewee keeps one per thread), so on
PostgreSQL the two writers really are two sessions. On SQLite the write
transactions are IMMEDIATE and serialise; the multi-process test runs two
writer processes against one database file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from mailfiler.service.runtime import MailboxRuntime, sync_config
from mailfiler.store import models as m
from mailfiler.tracking import txsql
from mailfiler.tracking.parse import ParsedMessage, parse_message
from mailfiler.tracking.pipeline import Outcome, Tracker
from tests.mailgen import realistic_message
from tests.store.helpers import Store, mailbox_config

REPO = Path(__file__).resolve().parents[2]


def _config(store: Store, tmp_path: Path):
    return store.config(
        records=[{"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]}],
        mailboxes=[
            mailbox_config("anna", "anna@ourco.se", tmp_path / "md/anna", {"INBOX": None}),
            mailbox_config("erik", "erik@ourco.se", tmp_path / "md/erik", {"INBOX": "account:contoso"}),
        ],
    )


def _run_threads(store: Store, targets: dict[str, object]) -> dict[str, object]:
    """Run each callable in its own thread (started together); return results or raise the first error."""
    barrier = threading.Barrier(len(targets), timeout=10)
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def run(name: str, fn) -> None:
        try:
            barrier.wait()
            results[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
        finally:
            store.db.close()  # this thread's connection

    threads = [threading.Thread(target=run, args=(n, fn), name=f"writer-{n}") for n, fn in targets.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), f"{t.name} hangs"
    if errors:
        raise errors[0]
    return results


def _track_all(tracker: Tracker, rt: MailboxRuntime, messages: list[ParsedMessage]) -> list[Outcome]:
    return [tracker.track(rt.ctx, rt.folders["INBOX"], f"{rt.name}-{i}", msg) for i, msg in enumerate(messages)]


def _assert_one_activity_each(n: int, mailboxes: int = 2) -> None:
    assert m.Activity.select().count() == n
    per_activity = Counter(loc.activity_id for loc in m.Location.select())
    assert sorted(per_activity.values()) == [mailboxes] * n
    # parties were not doubled by the losing writer
    keys = [(p.activity_id, p.role, p.address, p.record_id) for p in m.ActivityParty.select()]
    assert len(keys) == len(set(keys))
    blobs = [a.blob_id for a in m.Attachment.select()]
    assert m.Blob.select().count() == len(set(blobs))


def test_two_threads_track_the_same_messages(store: Store, tmp_path: Path) -> None:
    config = _config(store, tmp_path)
    rts = sync_config(store.db, config)
    tracker = store.tracker(config)
    messages = [parse_message(realistic_message(i, with_attachment_every=3)) for i in range(20)]
    results = _run_threads(
        store,
        {name: (lambda rt=rts[name]: _track_all(tracker, rt, messages)) for name in ("anna", "erik")},
    )
    _assert_one_activity_each(20)
    events = Counter(o.event for outcomes in results.values() for o in outcomes)
    assert events["tracked"] == 20
    assert events["tracked"] + events["located"] + events["relinked"] == 40


def test_integrity_error_is_retried_and_finds_the_other_writers_row(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic on both backends: our lookup ran before the other writer
    committed (it returns None), so the insert hits the unique Message-ID and
    the retry must find the other writer's row."""
    config = _config(store, tmp_path)
    rts = sync_config(store.db, config)
    tracker = store.tracker(config)
    msg = parse_message(realistic_message(4))
    first = tracker.track(rts["erik"].ctx, rts["erik"].folders["INBOX"], "e1", msg)

    original = txsql.lookup
    stale = {"left": 1}

    def lookup(*args, **kwargs) -> txsql.Seen:
        seen = original(*args, **kwargs)
        if stale["left"]:
            # the lookup saw the store before the other writer committed
            stale["left"] -= 1
            return dataclasses.replace(seen, activity_id=None)
        return seen

    attempts = []
    track_tx = Tracker._track_tx

    def counting_track_tx(self, *args, **kwargs):
        attempts.append(1)
        return track_tx(self, *args, **kwargs)

    monkeypatch.setattr(txsql, "lookup", lookup)
    monkeypatch.setattr(Tracker, "_track_tx", counting_track_tx)
    second = tracker.track(rts["anna"].ctx, rts["anna"].folders["INBOX"], "a1", msg)
    assert len(attempts) == 2
    assert second.event == "located"
    assert second.activity_id == first.activity_id
    monkeypatch.undo()
    _assert_one_activity_each(1)
    # the rolled-back attempt left no cursor bump behind
    assert (
        m.FolderCursor.get(m.FolderCursor.folder == "INBOX", m.FolderCursor.mailbox == rts["anna"].ctx.row).processed
        == 1
    )


@pytest.mark.postgres
@pytest.mark.parametrize("store", ["postgres"], indirect=True)
def test_postgres_race_between_two_sessions(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sessions look the Message-ID up (absent) before either inserts; the
    loser's insert waits on the winner's unique index entry, fails with
    IntegrityError, and the retry records a second location."""
    config = _config(store, tmp_path)
    rts = sync_config(store.db, config)
    tracker = store.tracker(config)
    msg = parse_message(realistic_message(7))
    both_looked = threading.Barrier(2, timeout=10)
    create = Tracker._create_activity
    track_tx = Tracker._track_tx
    attempts: list[str] = []

    def create_after_both_looked(self, *args, **kwargs):
        both_looked.wait()
        return create(self, *args, **kwargs)

    def counting_track_tx(self, mailbox, *args, **kwargs):
        attempts.append(mailbox.row.name)
        return track_tx(self, mailbox, *args, **kwargs)

    monkeypatch.setattr(Tracker, "_create_activity", create_after_both_looked)
    monkeypatch.setattr(Tracker, "_track_tx", counting_track_tx)
    results = _run_threads(
        store,
        {
            name: (lambda rt=rts[name]: tracker.track(rt.ctx, rt.folders["INBOX"], "1", msg))
            for name in ("anna", "erik")
        },
    )
    monkeypatch.undo()
    assert len(attempts) == 3  # one writer needed the retry
    assert sorted(o.event for o in results.values()) in (["located", "tracked"], ["relinked", "tracked"])
    assert len({o.activity_id for o in results.values()}) == 1
    _assert_one_activity_each(1)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_two_processes_on_one_sqlite_file(store: Store, tmp_path: Path) -> None:
    config = _config(store, tmp_path)
    sync_config(store.db, config)
    count = 20
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.store._writer", config.model_dump_json(), name, str(count)],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("anna", "erik")
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline() == "ready\n", p.stderr.read() if p.stderr else ""
        for p in procs:  # both are connected and waiting: let them go at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            outputs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    events = Counter(e for out in outputs for e in out)
    assert events["tracked"] == count
    assert sum(events.values()) == 2 * count
    _assert_one_activity_each(count)
