"""End-to-end harness: the real ``mailfiler`` daemon as a subprocess.

* :class:`DaemonProcess` runs ``python -m mailfiler --config CFG --log-format json run``
  and reads its stderr in a background thread, so a test can wait for log events
  (``started``, ``tracked``, ...) and knows *when* each line arrived.
* :class:`E2EEnv` owns one test's temp dir: the config YAML (records inline), the
  Maildirs, the SQLite store; it runs CLI commands (``activities --json``,
  ``status --json``, ``once``) and polls them until a condition holds.

No fixed sleeps decide a result: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mailfiler.backends import registry
from tests.mailgen import drop_into_maildir, fs_folder_dir, maildirpp_folder_dir, make_maildir_folder

T = TypeVar("T")

#: how long a test waits for something the daemon should do "within a fraction of a second"
WAIT = 10.0
#: pause between two polls of the CLI (each poll itself takes ~0.3 s: a Python start-up)
POLL_EVERY = 0.05

RECORDS: list[dict[str, Any]] = [
    {"entity": "account", "key": "contoso", "name": "Contoso Ltd", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam Inc", "domains": ["fabrikam.com"]},
    {"entity": "account", "key": "akesson", "name": "Åkesson AB", "domains": ["akesson.se"]},
    {
        "entity": "contact",
        "key": "bob.smith",
        "name": "Bob Smith",
        "emails": ["bob@contoso.com"],
        "parent": "account:contoso",
    },
    {"entity": "case", "key": "CAS-01001", "name": "Contoso invoice dispute", "parent": "account:contoso"},
]


def wait_for(probe: Callable[[], T], *, timeout: float = WAIT, every: float = POLL_EVERY, what: str = "condition") -> T:
    """Call ``probe`` until it returns something truthy; return that. Fail after ``timeout`` s
    with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}; last value: {last!r}")
        time.sleep(every)


def base_env() -> dict[str, str]:
    env = dict(os.environ)
    # never talk to a real systemd or pick up a config from the caller's environment
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "MAILFILER_CONFIG"):
        env.pop(var, None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# --------------------------------------------------------------------------- the daemon


@dataclass
class LogLine:
    at: float  # time.monotonic() when the line was read
    text: str
    data: dict[str, Any] | None  # the JSON object, or None for a non-JSON line (a traceback)

    @property
    def event(self) -> str | None:
        return self.data.get("event") if self.data else None


class DaemonProcess:
    """``mailfiler run`` in the foreground, its stderr collected line by line."""

    def __init__(self, config: Path, *, cwd: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.cmd = [sys.executable, "-m", "mailfiler", "--config", str(config), "--log-format", "json", *extra_args]
        self.cmd.append("run")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=cwd,
            env=base_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.lines: list[LogLine] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, name=f"stderr-{self.proc.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in self.proc.stderr:
                now = time.monotonic()
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                try:
                    data = json.loads(text)
                except ValueError:
                    data = None
                if not isinstance(data, dict):
                    data = None
                with self._cond:
                    self.lines.append(LogLine(now, text, data))
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def mark(self) -> int:
        """A position in the log; pass it as ``since`` to only look at later lines."""
        with self._cond:
            return len(self.lines)

    def events(self, event: str | None = None, *, since: int = 0, **fields: Any) -> list[LogLine]:
        with self._cond:
            lines = list(self.lines[since:])
        return [ln for ln in lines if ln.data is not None and _matches(ln, event, fields)]

    def wait_event(self, event: str, *, since: int = 0, timeout: float = WAIT, **fields: Any) -> LogLine:
        """The first line at or after ``since`` with this event (and these field values)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            pos = since
            while True:
                for ln in self.lines[pos:]:
                    if ln.data is not None and _matches(ln, event, fields):
                        return ln
                pos = len(self.lines)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = "the daemon exited" if self._eof else f"timed out after {timeout:.1f} s"
        raise AssertionError(f"{why} waiting for event {event!r} {fields or ''}\n--- daemon log ---\n{self.log_tail()}")

    def wait_started(self, timeout: float = WAIT) -> LogLine:
        return self.wait_event("started", timeout=timeout)

    def log_tail(self, n: int = 60) -> str:
        with self._cond:
            return "\n".join(ln.text for ln in self.lines[-n:])

    def problems(self) -> list[LogLine]:
        """Error lines and tracebacks."""
        with self._cond:
            lines = list(self.lines)
        return [
            ln for ln in lines if ln.data is None or ln.data.get("level") in ("error", "critical") or "exc" in ln.data
        ]

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def reload(self, *, timeout: float = WAIT) -> LogLine:
        """SIGHUP; wait for ``reloaded`` (the new config is in force and its mailboxes restarted)."""
        since = self.mark()
        self.signal(signal.SIGHUP)
        return self.wait_event("reloaded", since=since, timeout=timeout)

    def terminate(self, *, timeout: float = 5.0) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until exit). Kills it and fails if it takes longer."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(
                f"daemon did not exit within {timeout} s of SIGTERM\n--- daemon log ---\n{self.log_tail()}"
            ) from None
        elapsed = time.monotonic() - t0
        self._reader.join(5)
        return rc, elapsed

    def close(self) -> None:
        """Kill (if still running), reap, and close the pipe. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()


def _matches(line: LogLine, event: str | None, fields: dict[str, Any]) -> bool:
    assert line.data is not None
    if event is not None and line.data.get("event") != event:
        return False
    return all(line.data.get(k) == v for k, v in fields.items())


# --------------------------------------------------------------------------- one test's world


@dataclass
class MailboxSpec:
    name: str
    owner: str
    maildir: Path
    layout: str = "maildir++"
    create_missing_folders: bool = True
    folders: list[dict[str, Any]] = field(default_factory=list)
    #: more mailbox settings for the config (auto_track, never_track...)
    extra: dict[str, Any] = field(default_factory=dict)

    def folder_dir(self, folder: str) -> Path:
        if self.layout == "fs":
            return fs_folder_dir(self.maildir, folder)
        return maildirpp_folder_dir(self.maildir, folder)

    def as_yaml(self) -> dict[str, Any]:
        # a mailbox of another backend (extra["imap"], extra["memory"]...) has no Maildir of its own
        other = set(registry()) - {"maildir"}
        where = {} if other & set(self.extra) else {"maildir": str(self.maildir), "layout": self.layout}
        return {
            "name": self.name,
            "owner": self.owner,
            **where,
            "create_missing_folders": self.create_missing_folders,
            "tracked_folders": [dict(f) for f in self.folders],
            **self.extra,
        }


class E2EEnv:
    """A temp dir holding a config, Maildirs and a store; daemons started here are
    killed by :meth:`close` whatever happened."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_path = root / "mailfiler.yaml"
        self.db_path = root / "state" / "mailfiler.db"
        self.records: list[dict[str, Any]] = [dict(r) for r in RECORDS]
        self.mailboxes: dict[str, MailboxSpec] = {}
        self.daemons: list[DaemonProcess] = []
        #: log events at level error a test expects (e.g. config-invalid); any other error fails it
        self.expected_errors: set[str] = set()
        #: the config that `activities` and `status` read the store through (None: the daemon's)
        self.reader_config: Path | None = None
        #: the store; relative to the config file (a PostgreSQL URL for the shared-store tests)
        self.database = "sqlite:///state/mailfiler.db"
        #: rule files or folders for the config's `rules:` (relative to the config file)
        self.rules: list[str] = []
        #: more top-level config settings (tracking, correlation...)
        self.extra: dict[str, Any] = {}

    # -- config ----------------------------------------------------------------------

    def add_mailbox(
        self,
        name: str,
        owner: str,
        folders: list[tuple[str, str | None]],
        *,
        layout: str = "maildir++",
        create_missing_folders: bool = True,
    ) -> MailboxSpec:
        maildir = self.root / f"Maildir-{name}"
        make_maildir_folder(maildir)  # INBOX: the mailbox root exists, as with any real MDA
        spec = MailboxSpec(
            name,
            owner,
            maildir,
            layout,
            create_missing_folders,
            [{"folder": f, **({"regarding": r} if r else {})} for f, r in folders],
        )
        self.mailboxes[name] = spec
        return spec

    def config_data(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "state_dir": "state",
            "records": self.records,
            "mailboxes": [mb.as_yaml() for mb in self.mailboxes.values()],
            **({"rules": self.rules} if self.rules else {}),
            **self.extra,
        }

    def write_config(self, text: str | None = None) -> Path:
        """Write the config from the mailbox specs (or ``text`` verbatim), atomically
        (a reload must never read a half-written file)."""
        if text is None:
            text = yaml.safe_dump(self.config_data(), allow_unicode=True, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.config_path)
        return self.config_path

    def set_folder(self, mailbox: str, folder: str, regarding: str | None) -> None:
        """Add a tracked folder, or change its regarding (call write_config() after)."""
        folders = self.mailboxes[mailbox].folders
        entry = {"folder": folder, **({"regarding": regarding} if regarding else {})}
        for i, f in enumerate(folders):
            if f["folder"] == folder:
                folders[i] = entry
                return
        folders.append(entry)

    # -- mail --------------------------------------------------------------------------

    def folder_dir(self, mailbox: str, folder: str) -> Path:
        return self.mailboxes[mailbox].folder_dir(folder)

    def drop(self, mailbox: str, folder: str, data: bytes, **kwargs: Any) -> Path:
        """Deliver like an MDA: tmp/ then rename into new/ (or cur/ with ``flags=``)."""
        return drop_into_maildir(self.folder_dir(mailbox, folder), data, **kwargs)

    # -- the CLI -------------------------------------------------------------------------

    def cli(
        self, *args: str, check: bool = True, timeout: float = 30.0, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mailfiler", "--config", str(config or self.config_path), *args]
        res = subprocess.run(
            cmd,
            cwd=self.root,
            env=base_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
            )
        return res

    def activities(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("activities", "--json", config=self.reader_config).stdout)

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json", config=self.reader_config).stdout)

    def activity(self, message_id: str) -> dict[str, Any] | None:
        found = [a for a in self.activities() if a["message_id"] == message_id]
        assert len(found) <= 1, f"{message_id} is {len(found)} activities: {found}"
        return found[0] if found else None

    def wait_activities(
        self, pred: Callable[[list[dict[str, Any]]], bool], *, timeout: float = WAIT, what: str = "activities"
    ) -> list[dict[str, Any]]:
        """Poll ``activities --json`` until ``pred(activities)`` holds; return them."""
        seen: list[list[dict[str, Any]]] = []

        def probe() -> list[dict[str, Any]] | None:
            acts = self.activities()
            seen[:] = [acts]
            return acts if pred(acts) else None

        try:
            return wait_for(probe, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\nactivities: {json.dumps(seen, indent=1)[:4000]}\n{self._daemon_logs()}"
            ) from None

    def wait_activity(
        self, message_id: str, pred: Callable[[dict[str, Any]], bool] = lambda a: True, *, timeout: float = WAIT
    ) -> dict[str, Any]:
        """Poll until the activity for ``message_id`` exists and ``pred`` holds for it."""

        def ok(acts: list[dict[str, Any]]) -> bool:
            found = [a for a in acts if a["message_id"] == message_id]
            assert len(found) <= 1, f"{message_id} is {len(found)} activities: {found}"
            return bool(found) and pred(found[0])

        acts = self.wait_activities(ok, timeout=timeout, what=f"activity {message_id}")
        return next(a for a in acts if a["message_id"] == message_id)

    def wait_status(
        self,
        pred: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = WAIT,
        what: str = "status",
    ) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []

        def probe() -> dict[str, Any] | None:
            status = self.status()
            seen[:] = [status]
            return status if pred(status) else None

        try:
            return wait_for(probe, timeout=timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstatus: {json.dumps(seen, indent=1)[:4000]}\n{self._daemon_logs()}") from None

    def folder_status(self, status: dict[str, Any], mailbox: str, folder: str) -> dict[str, Any]:
        mb = next(m for m in status["mailboxes"] if m["name"] == mailbox)
        return next(f for f in mb["folders"] if f["folder"] == folder)

    # -- daemons -------------------------------------------------------------------------

    def start_daemon(self, *, wait: bool = True) -> DaemonProcess:
        if not self.config_path.exists():
            self.write_config()
        daemon = DaemonProcess(self.config_path, cwd=self.root)
        self.daemons.append(daemon)
        if wait:
            daemon.wait_started()
        return daemon

    def _daemon_logs(self) -> str:
        return "\n".join(f"--- daemon {d.pid} log ---\n{d.log_tail()}" for d in self.daemons)

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.close()

    def unexpected_problems(self) -> list[str]:
        """Error lines and tracebacks in any daemon's log that the test did not expect."""
        return [
            ln.text
            for d in self.daemons
            for ln in d.problems()
            if ln.data is None or ln.event not in self.expected_errors or "exc" in ln.data
        ]


def locations(activity: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((loc["mailbox"], loc["folder"]) for loc in activity["locations"])
