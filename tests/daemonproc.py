"""Subprocess helpers for the crash-safety, bad-input and shunt CLI tests.

The real ``mailfiler`` runs as ``[sys.executable, "-m", "mailfiler", ...]``: the CLI through
:func:`cli`, the daemon through :class:`DaemonProc` (a context manager that always kills it).
Results are read straight from the SQLite store with the standard ``sqlite3`` module, so a
check never depends on the code under test; every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

from mailfiler.service.worker import COMMIT_BATCH

if TYPE_CHECKING:
    from tests.servers.dovecot import ImapUser

T = TypeVar("T")

#: records every test world knows (folders below point at them)
RECORDS: list[dict[str, Any]] = [
    {"entity": "account", "key": "contoso", "name": "Contoso Ltd", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam Inc", "domains": ["fabrikam.com"]},
    {"entity": "case", "key": "CAS-01001", "name": "Contoso invoice dispute", "parent": "account:contoso"},
]
MAILBOX = "alice"
OWNER = "alice@example.com"
SYNTHETIC_SUFFIX = "@synthetic.mailfiler.invalid>"


# --------------------------------------------------------------------------- config


@dataclass
class World:
    """One test's files: config, Maildir root, state dir and SQLite store."""

    base: Path
    maildir: Path
    folders: list[tuple[str, str | None]]
    limits: dict[str, int] | None = None
    #: more settings for the mailbox (auto_track, never_track...)
    mailbox_extra: dict[str, Any] = field(default_factory=dict)
    config: Path = field(init=False)
    state_dir: Path = field(init=False)
    db: Path = field(init=False)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.config = self.base / "mailfiler.yaml"
        self.state_dir = self.base / "state"
        self.db = self.state_dir / "mailfiler.db"
        self.write_config()

    def write_config(self, *, limits: dict[str, int] | None = None) -> None:
        if limits is not None:
            self.limits = limits
        data: dict[str, Any] = {
            "database": f"sqlite:///{self.db}",
            "state_dir": str(self.state_dir),
            "records": RECORDS,
            "mailboxes": [
                {
                    "name": MAILBOX,
                    "owner": OWNER,
                    "maildir": str(self.maildir),
                    "layout": "maildir++",
                    "tracked_folders": [{"folder": f, **({"regarding": r} if r else {})} for f, r in self.folders],
                    **self.mailbox_extra,
                }
            ],
        }
        if self.limits:
            data["limits"] = dict(self.limits)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


class ImapWorld(World):
    """A test world whose mailbox is ``user``'s IMAP account (its password in a file);
    it tracks ``folders`` (default :data:`FOLDERS`)."""

    def __init__(
        self,
        base: Path,
        user: ImapUser,
        folders: list[tuple[str, str | None]] | None = None,
        *,
        limits: dict[str, int] | None = None,
    ) -> None:
        secret = base / "imap.password"
        base.mkdir(parents=True, exist_ok=True)
        secret.write_text(user.password + "\n", encoding="utf-8")
        secret.chmod(0o600)
        kw = user.settings_kwargs()
        imap = {
            "host": kw["host"],
            "port": kw["port"],
            "username": kw["username"],
            "password_file": str(secret),
            "tls": "none",
            "timeout": 30,
        }
        super().__init__(base, base / "unused-maildir", FOLDERS if folders is None else folders, limits, {"imap": imap})

    def write_config(self, *, limits: dict[str, int] | None = None) -> None:
        super().write_config(limits=limits)
        data = yaml.safe_load(self.config.read_text(encoding="utf-8"))
        for mb in data["mailboxes"]:
            mb.pop("maildir", None)  # an IMAP mailbox has no Maildir of its own
            mb.pop("layout", None)
        self.config.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


# --------------------------------------------------------------------------- processes


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MAILFILER_CRASH_AT", "MAILFILER_CONFIG", "NOTIFY_SOCKET")}
    env.update(extra or {})
    return env


def mailfiler_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mailfiler", "--config", str(config), *args]


def cli(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 180, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run one ``mailfiler`` command to completion; output captured as text.
    ``prefix``: a command that runs it (tests/seccomp_exec.py ... --)."""
    return subprocess.run(
        [*prefix, *mailfiler_cmd(config, *args)],
        capture_output=True,
        text=True,
        env=_env(env),
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def cli_json(config: Path, *args: str, expect_rc: int = 0) -> Any:
    res = cli(config, *args, "--json")
    assert res.returncode == expect_rc, describe(res)
    return json.loads(res.stdout)


def describe(res: subprocess.CompletedProcess[str]) -> str:
    return f"{res.args!r} exited {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}"


class DaemonProc:
    """``mailfiler --log-format json run`` with its log in a file; killed on exit."""

    def __init__(
        self, config: Path, log: Path, *, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
    ) -> None:
        self.config = config
        self.log = log
        self.env = env
        #: a command that runs the daemon (tests/seccomp_exec.py ... --)
        self.prefix = list(prefix)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_start = 0

    def start(self) -> DaemonProc:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.prefix, *mailfiler_cmd(self.config, "--log-format", "json", "run", "--no-progress")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=_env(self.env),
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int:
        """SIGKILL (no goodbye) and reap; the return code (-9 when it was running)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM: the daemon finishes the message in flight and exits."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the daemon did not stop within {timeout} s of SIGTERM") from None

    def events(self, *, this_run: bool = True) -> list[dict[str, Any]]:
        """The JSON log lines written so far (of this start only, by default)."""
        if not self.log.exists():
            return []
        with open(self.log, "rb") as fh:
            if this_run:
                fh.seek(self.log_start)
            data = fh.read()
        out = []
        for line in data.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def log_tail(self, n: int = 40) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-n:])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- waiting


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    state: Callable[[], object] | None = None,
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\nstate: {state()}" if state else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


# --------------------------------------------------------------------------- the store


@contextlib.contextmanager
def open_db(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def query(path: Path, sql: str, params: Sequence[Any] = (), *, before_migration: bool = False) -> list[tuple[Any, ...]]:
    """Rows of one SELECT.  ``before_migration=True`` (for polls while a daemon starts):
    no rows, rather than an error, while the store does not exist or has no tables yet."""
    if before_migration and not path.exists():
        return []
    if not path.exists():
        raise FileNotFoundError(path)
    with open_db(path) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if before_migration and "no such table" in str(exc):
                return []
            raise


def scalar(path: Path, sql: str, params: Sequence[Any] = (), *, before_migration: bool = False) -> Any:
    rows = query(path, sql, params, before_migration=before_migration)
    return rows[0][0] if rows else None


def integrity_problems(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` and ``foreign_key_check``; empty when the file is sound."""
    with open_db(path) as conn:
        problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        problems += [f"foreign key: {r!r}" for r in conn.execute("PRAGMA foreign_key_check").fetchall()]
    return problems


def present_locations(path: Path) -> set[tuple[str, str]]:
    """(folder, source_id) of every location whose message is still there (none before the
    first daemon has created the store)."""
    rows = query(path, "SELECT folder, source_id FROM location WHERE gone_at IS NULL", before_migration=True)
    return {(f, s) for f, s in rows}


def shunts(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(folder, source_id) -> the shunt row (none before the store exists)."""
    rows = query(
        path,
        "SELECT folder, source_id, reason, detail, raw_path, attempts, resolved_at, size FROM shunt ORDER BY id",
        before_migration=True,
    )
    return {
        (r[0], r[1]): {
            "reason": r[2],
            "detail": r[3],
            "raw_path": r[4],
            "attempts": r[5],
            "resolved_at": r[6],
            "size": r[7],
        }
        for r in rows
    }


def snapshot(path: Path) -> dict[str, Any]:
    """What a run left in the store, without row ids and timestamps, for comparing runs."""
    with open_db(path) as conn:
        refs = {rid: f"{e}:{k}" for rid, e, k in conn.execute("SELECT id, entity, key FROM record")}
        acts: dict[int, dict[str, Any]] = {}
        for aid, mid, synthetic, subject, direction, regarding, correlation, defects, sent_at, size in conn.execute(
            "SELECT id, message_id, synthetic_id, subject, direction, regarding_id, correlation, parse_defects,"
            " sent_at, size FROM activity"
        ):
            acts[aid] = {
                "message_id": mid,
                "synthetic": bool(synthetic),
                "subject": subject,
                "direction": direction,
                "regarding": refs.get(regarding),
                "correlation": correlation,
                "defects": defects,
                "sent_at": sent_at,
                "size": size,
                "parties": [],
                "attachments": [],
                "locations": [],
            }
        for aid, role, address, name, record in conn.execute(
            "SELECT activity_id, role, address, display_name, record_id FROM activity_party"
        ):
            acts[aid]["parties"].append((role, address, name, refs.get(record)))
        for aid, pos, filename, ctype, size, blob in conn.execute(
            "SELECT activity_id, position, filename, content_type, size, blob_id FROM attachment"
        ):
            acts[aid]["attachments"].append((pos, filename, ctype, size, blob))
        for aid, folder, sid, gone in conn.execute("SELECT activity_id, folder, source_id, gone_at FROM location"):
            acts[aid]["locations"].append((folder, sid, gone is not None))
        cursors = {
            folder: (processed, state)
            for folder, processed, state in conn.execute("SELECT folder, processed, state FROM folder_cursor")
        }
        n_shunts = conn.execute("SELECT COUNT(*) FROM shunt WHERE resolved_at IS NULL").fetchone()[0]
    by_mid: dict[str, dict[str, Any]] = {}
    for a in acts.values():
        for key in ("parties", "attachments", "locations"):
            a[key] = sorted(a[key], key=repr)
        assert a["message_id"] not in by_mid
        by_mid[a["message_id"]] = a
    return {"activities": by_mid, "cursors": cursors, "pending_shunts": n_shunts}


# --------------------------------------------------------------------------- files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stored_blobs(db: Path, state_dir: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every blob row: its size and its bytes, from the row (up to blobs.INLINE_MAX) or
    from its file under ``state_dir/blobs`` (None: neither holds them)."""
    files = {p.name: p for p in (state_dir / "blobs").rglob("*") if p.is_file() and not p.name.startswith(".")}
    out: dict[str, tuple[int, bytes | None]] = {}
    for sha, size, data in query(db, "SELECT sha256, size, data FROM blob"):
        if data is not None:
            out[sha] = (size, bytes(data))
        else:
            out[sha] = (size, files[sha].read_bytes() if sha in files else None)
    return out


def assert_blobs_intact(db: Path, state_dir: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every blob row has its bytes (in the row or its file), of its size and its SHA-256."""
    blobs = stored_blobs(db, state_dir)
    for sha, (size, data) in blobs.items():
        assert data is not None, f"blob {sha} has a row but neither data nor a file"
        assert len(data) == size, f"blob {sha}: {len(data)} bytes, its row says {size}"
        assert hashlib.sha256(data).hexdigest() == sha, f"blob {sha} is corrupt"
    return blobs


def tree_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- crash-test checks


def assert_same_as(reference: dict[str, Any], got: dict[str, Any]) -> None:
    """Two :func:`snapshot` s agree: the run that was killed ends where the
    uninterrupted one did."""
    ref_acts, got_acts = reference["activities"], got["activities"]
    assert set(got_acts) == set(ref_acts), (
        f"missing: {sorted(set(ref_acts) - set(got_acts))[:5]} extra: {sorted(set(got_acts) - set(ref_acts))[:5]}"
    )
    # the headline: message id -> regarding and locations
    assert {k: (a["regarding"], a["locations"]) for k, a in got_acts.items()} == {
        k: (a["regarding"], a["locations"]) for k, a in ref_acts.items()
    }
    diffs = [k for k in ref_acts if ref_acts[k] != got_acts[k]]
    assert not diffs, f"{len(diffs)} activities differ, e.g. {diffs[0]}:\n{ref_acts[diffs[0]]}\n{got_acts[diffs[0]]}"
    assert got["cursors"] == reference["cursors"]
    assert got["pending_shunts"] == reference["pending_shunts"] == 0


def commit_ends(order: Sequence[tuple[str, str]], done: int, batch: int = COMMIT_BATCH) -> list[int]:
    """The committed count after each commit of a ``mailfiler once`` that resumes after
    ``done`` messages (``order``: the (folder, source id) an uninterrupted run commits,
    in its order).  A scan commits a tracked folder's messages ``batch`` at a time
    (``worker.COMMIT_BATCH``), so a run's commits end every ``batch`` messages from where
    it resumed, and at the end of each folder."""
    ends: list[int] = []
    start = done
    for i in range(done, len(order)):
        last_of_folder = i + 1 == len(order) or order[i + 1][0] != order[i][0]
        if last_of_folder or i + 1 - start == batch:
            ends.append(i + 1)
            start = i + 1
    return ends


def crash_plan(order: Sequence[tuple[str, str]], done: int, position: int) -> tuple[int, int, int]:
    """(k, committed if killed just before the k-th commit, committed if killed just
    after it): the k-th commit of a run resuming after ``done`` is the one that holds
    message ``position`` (1-based, in ``order``)."""
    ends = commit_ends(order, done)
    k = next(n for n, end in enumerate(ends, 1) if end >= position)
    return k, [done, *ends][k - 1], ends[k - 1]


def committed_count(world: World) -> int:
    """Messages committed so far (their present locations)."""
    return len(present_locations(world.db))


def quick_check(world: World) -> None:
    """After a kill: the SQLite file is sound and nothing was shunted."""
    if not world.db.exists():  # killed before it opened the store
        return
    with open_db(world.db) as conn:
        assert [r[0] for r in conn.execute("PRAGMA quick_check")] == ["ok"]
    shunted = scalar(world.db, "SELECT COUNT(*) FROM shunt", before_migration=True)
    assert not shunted, "a crash must never shunt a message"


def kill_at_commit_points(world: World, order: Sequence[tuple[str, str]], positions: Sequence[int], total: int) -> None:
    """Run ``once`` killed just before, then just after, the commit that holds each
    message position (1-based, in ``order``; a scan commits COMMIT_BATCH messages at a
    time, see crash_plan), resuming each time from what the last kill left: every kill
    leaves exactly the batches before it, a sound store and no shunt.  The crash tests
    of every backend share it."""
    done = runs = 0
    for position in positions:
        for point in ("before_commit", "after_commit"):
            if position <= done:
                break  # committed with an earlier position's batch
            k, before, after = crash_plan(order, done, position)
            committed = before if point == "before_commit" else after
            spec = f"{point}:{k}"
            res = cli(world.config, "once", env={"MAILFILER_CRASH_AT": spec}, timeout=240)
            runs += 1
            assert res.returncode == -signal.SIGKILL, f"MAILFILER_CRASH_AT={spec}: " + describe(res)
            got = committed_count(world)
            assert got == committed, f"MAILFILER_CRASH_AT={spec} (position {position}): {got} messages committed"
            quick_check(world)
            done = committed
    assert done == total and runs >= 16


# --------------------------------------------------------------------------- the crash corpus

#: the crash tests' corpus (Maildir and IMAP): three tracked folders, two with a regarding
FOLDERS: list[tuple[str, str | None]] = [
    ("Tracked/Contoso", "account:contoso"),
    ("Tracked/Unfiled", None),
    ("Cases/CAS-01001", "case:CAS-01001"),
]
N_MESSAGES = 2000
#: messages whose Message-ID header is removed
NO_MESSAGE_ID = frozenset({7, 400, 1001, 1602, 1998})
#: a second copy of message i lands in this folder too (i's own folder is FOLDERS[i % 3])
ALSO_IN = {10: "Tracked/Contoso", 20: "Tracked/Unfiled", 7: "Cases/CAS-01001"}
MESSAGE_ID_LINE = re.compile(rb"^Message-ID: [^\n]*\n", re.MULTILINE)
