"""The IMAP cursor token under SIGKILL: ``mailfiler once`` kills itself just before and
just after chosen commits (``MAILFILER_CRASH_AT``), in a first backfill (a full listing)
and in a catch-up from a stored token.  After every kill the token in the store covers
exactly the committed messages: every UID up to it is committed, none after it is needed
to explain it (mbsync's rule: the state never runs ahead of the journal).  The runs
converge on every message tracked once, and the token then covers the whole folder."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from tests.daemonproc import RECORDS, cli, crash_plan, describe, present_locations, query
from tests.mailgen import realistic_message
from tests.servers.dovecot import ImapUser

pytestmark = [pytest.mark.slow, pytest.mark.dovecot, pytest.mark.timeout(280)]

FOLDER = "Tracked/Contoso"
FIRST, MORE = 120, 30


def write_config(base: Path, user: ImapUser) -> Path:
    secret = base / "imap.password"
    secret.write_text(user.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    kw = user.settings_kwargs()
    config = {
        "database": f"sqlite:///{base / 'state' / 'mailfiler.db'}",
        "state_dir": str(base / "state"),
        "records": RECORDS,
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
                    "timeout": 30,
                },
                "tracked_folders": [{"folder": FOLDER, "regarding": "account:contoso"}],
                # the Inbox is empty and not what this test is about
                "auto_track": {"policy": "none", "folders": []},
            }
        ],
    }
    path = base / "mailfiler.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def committed_uids(db: Path) -> list[int]:
    return sorted(int(sid.split(":")[1]) for folder, sid in present_locations(db) if folder == FOLDER)


def token(db: Path) -> dict | None:
    rows = query(db, "SELECT token FROM folder_cursor WHERE folder = ?", (FOLDER,), before_migration=True)
    return json.loads(rows[0][0]) if rows and rows[0][0] else None


def check_token(db: Path, server_uids: list[int], committed: int) -> None:
    uids = committed_uids(db)
    assert len(uids) == committed, f"{len(uids)} committed, expected {committed}"
    assert uids == server_uids[:committed], "messages are committed in UID order"
    tok = token(db)
    if tok is None:
        assert committed == 0, "a committed message always writes its token"
        return
    covered = [u for u in server_uids if u <= tok["uid"]]
    missing = sorted(set(covered) - set(uids))
    assert not missing, f"the token says UID {tok['uid']} is done, but {missing[:5]} are not committed"
    assert tok["uid"] == (uids[-1] if uids else 0), f"the token {tok} lags behind the last commit {uids[-1:]}"


def crash_chain(config: Path, db: Path, server_uids: list[int], done: int, positions: list[int]) -> int:
    """Kill ``once`` just before and just after the commit holding each position (a
    scan commits COMMIT_BATCH messages at a time: see daemonproc.crash_plan)."""
    order = [(FOLDER, str(uid)) for uid in server_uids]
    for position in positions:
        for point in ("before_commit", "after_commit"):
            if position <= done:
                break  # committed with an earlier position's batch
            k, before, after = crash_plan(order, done, position)
            committed = before if point == "before_commit" else after
            spec = f"{point}:{k}"
            res = cli(config, "once", env={"MAILFILER_CRASH_AT": spec}, timeout=120)
            assert res.returncode == -signal.SIGKILL, f"MAILFILER_CRASH_AT={spec}: " + describe(res)
            check_token(db, server_uids, committed)
            done = committed
    return done


def test_a_killed_backfill_and_catch_up_never_leave_the_token_ahead(imap_user: ImapUser, tmp_path: Path) -> None:
    user = imap_user
    user.seed(FOLDER, [realistic_message(i, with_attachment_every=0) for i in range(FIRST)])
    with user.client() as admin:
        uids = admin.uids(FOLDER)  # Dovecot gives the seeded files their UIDs now
    assert len(uids) == FIRST
    config = write_config(tmp_path, user)
    db = tmp_path / "state" / "mailfiler.db"

    # a first backfill: a full listing, each commit carrying its message's token
    done = crash_chain(config, db, uids, 0, [1, 2, 3, 60, FIRST - 1, FIRST])
    assert done == FIRST
    res = cli(config, "once", "--json", timeout=120)
    assert res.returncode == 0, describe(res)
    check_token(db, uids, FIRST)
    tok = token(db)
    assert tok is not None and tok["exists"] == FIRST and tok["uid"] == uids[-1]

    # mail that lands while mailfiler is away: the catch-up from the token is killed too
    user.seed(FOLDER, [realistic_message(1000 + i, with_attachment_every=0) for i in range(MORE)])
    with user.client() as admin:
        uids = admin.uids(FOLDER)
    assert len(uids) == FIRST + MORE
    done = crash_chain(config, db, uids, FIRST, [FIRST + 1, FIRST + 2, FIRST + 15, FIRST + MORE])
    assert done == FIRST + MORE
    res = cli(config, "once", "--json", timeout=120)
    assert res.returncode == 0, describe(res)
    check_token(db, uids, FIRST + MORE)
    assert query(db, "SELECT COUNT(*) FROM activity") == [(FIRST + MORE,)]
    assert query(db, "SELECT COUNT(*) FROM location") == [(FIRST + MORE,)]
    assert query(db, "SELECT COUNT(*) FROM shunt") == [(0,)]
    with user.client() as admin:
        assert "\\Seen" not in repr(admin.snapshot())
