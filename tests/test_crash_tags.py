"""Track by tag survives SIGKILL at every commit (real Dovecot, ``mailfiler once``):
the tag cursor is committed with the tracking it covers, so a kill just before or
just after any commit leaves exactly the changes before it tracked, the cursor never
covers a tagged message that is not tracked, and the next run tracks the rest, each
message once.  First the keyword search of a folder without a cursor, then the
CONDSTORE path (CHANGEDSINCE, a cursor with each change)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.daemonproc import cli, describe
from tests.servers.dovecot import ImapUser

pytestmark = [pytest.mark.slow, pytest.mark.dovecot, pytest.mark.timeout(240)]

FOLDER = "Projekt"


def msg(n: int) -> bytes:
    return (
        f"From: <someone{n}@elsewhere.example>\r\nTo: <alice@example.com>\r\nSubject: Fråga {n}\r\n"
        f"Message-ID: <crash-tag-{n}@x.example>\r\nDate: Tue, 02 Jan 2024 09:15:00 +0100\r\n\r\nHej {n}\r\n"
    ).encode()


def world(tmp_path: Path, user: ImapUser) -> Path:
    secret = tmp_path / "imap.password"
    secret.write_text(user.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    kw = user.settings_kwargs()
    config = {
        "database": "sqlite:///store.db",
        "state_dir": "state",
        "mailboxes": [
            {
                "name": "alice",
                "owner": "alice@example.com",
                "imap": {
                    "host": kw["host"],
                    "port": kw["port"],
                    "username": kw["username"],
                    "password_file": str(secret),
                    "tls": "none",
                },
                "tracked_folders": [],
                "auto_track": {"policy": "none", "folders": []},
                "track_tags": {},
            }
        ],
    }
    path = tmp_path / "mailfiler.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def tracked(tmp_path: Path) -> list[str]:
    if not (tmp_path / "store.db").exists():
        return []
    with sqlite3.connect(tmp_path / "store.db") as db:
        rows = db.execute("SELECT message_id FROM activity ORDER BY message_id").fetchall()
    return [r[0] for r in rows]


def cursor_modseq(tmp_path: Path) -> int | None:
    with sqlite3.connect(tmp_path / "store.db") as db:
        row = db.execute("SELECT token FROM tag_cursor WHERE folder = ?", (FOLDER,)).fetchone()
    return None if row is None else json.loads(row[0])["modseq"]


def modseqs(user: ImapUser) -> dict[str, int]:
    """Message-ID -> MODSEQ of every tagged message."""
    out: dict[str, int] = {}
    with user.client() as admin:
        admin.select(FOLDER, readonly=True)
        typ, data = admin.imap.uid("FETCH", "1:*", "(MODSEQ FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        assert typ == "OK"
        for item in data:
            if isinstance(item, tuple) and b"CRM" in item[0]:
                seq = int(re.search(rb"MODSEQ \((\d+)\)", item[0]).group(1))  # type: ignore[union-attr]
                out[re.search(rb"<[^>]+>", item[1]).group(0).decode()] = seq  # type: ignore[union-attr]
    return out


def tag(user: ImapUser, uids: list[int]) -> None:
    with user.client() as admin:
        admin.select(FOLDER)
        for uid in uids:  # one STORE each: each its own MODSEQ
            typ, _ = admin.imap.uid("STORE", str(uid), "+FLAGS", "(CRM)")
            assert typ == "OK"


def kill_at_every_commit(tmp_path: Path, config: Path, user: ImapUser) -> int:
    """Kill ``once`` just before its first commit, then just after it, each run
    resuming from what the last kill left, until a run has nothing left to commit:
    every commit of the pass is killed before and after.  After each kill: nothing
    tracked twice, a kill before a commit loses nothing committed, a kill after it
    keeps it (at most one message more), and the tag cursor covers no tagged message
    that is not tracked.  The kills made."""
    kills, last = 0, len(tracked(tmp_path))
    for _ in range(100):
        for point in ("before_commit", "after_commit"):
            res = cli(config, "once", env={"MAILFILER_CRASH_AT": f"{point}:1"}, timeout=120)
            if res.returncode == 0:
                return kills  # nothing was left to commit
            assert res.returncode == -signal.SIGKILL, f"{point}: " + describe(res)
            kills += 1
            got = tracked(tmp_path)
            assert len(got) == len(set(got)), f"{point}: tracked twice: {got}"
            grown = len(got) - last
            assert grown == 0 if point == "before_commit" else grown in (0, 1), f"{point}: {last} -> {len(got)}"
            last = len(got)
            top = cursor_modseq(tmp_path)
            if top is not None:
                behind = {m for m, seq in modseqs(user).items() if seq <= top} - set(got)
                assert not behind, f"{point}: the cursor {top} covers {behind}, not tracked"
    raise AssertionError("no run ended")


def test_kill_at_every_tag_commit_converges(imap_user: ImapUser, tmp_path: Path) -> None:
    imap_user.create_folder(FOLDER)
    with imap_user.client() as admin:
        uids = [admin.append(FOLDER, msg(n)) for n in range(10)]
    tag(imap_user, uids[:4])
    config = world(tmp_path, imap_user)
    # no cursor yet: the keyword search, each message its own commit, the cursor with the last
    assert kill_at_every_commit(tmp_path, config, imap_user) >= 8
    res = cli(config, "once", timeout=120)
    assert res.returncode == 0, describe(res)
    assert len(tracked(tmp_path)) == 4 and cursor_modseq(tmp_path) is not None
    # a cursor now: CHANGEDSINCE, each change committed with the cursor just below the next
    tag(imap_user, uids[4:])
    assert kill_at_every_commit(tmp_path, config, imap_user) >= 12
    res = cli(config, "once", timeout=120)
    assert res.returncode == 0, describe(res)
    assert tracked(tmp_path) == sorted(f"<crash-tag-{n}@x.example>" for n in range(10))
    assert cursor_modseq(tmp_path) == max(modseqs(imap_user).values())
