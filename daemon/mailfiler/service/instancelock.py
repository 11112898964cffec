"""One mailfiler at a time on a state_dir and on an SQLite store.

``mailfiler run`` and ``mailfiler once`` take an exclusive, non-blocking
``flock`` on ``state_dir/daemon.lock`` (and, for an SQLite store, on
``FILE.mailfiler-lock`` beside the database: two configs with different
state_dirs may name one file) before they open the store, and hold it until
they exit.  Two of them would backfill and watch the same mailboxes and race
on marks, shunts and cursors; the second one stops at once with
:class:`~mailfiler.errors.AlreadyRunning`, which names the holder's pid.

The kernel drops a flock when the last descriptor of its open file closes,
so a process that dies, even by SIGKILL, never leaves a stale lock: the file
stays behind (unlinking it would race with a process opening it) and only
says who held it last.  Its descriptor is not inherited by child processes
(Python opens files close-on-exec), so a parse helper outliving the daemon
does not hold the lock either.  The read-only commands take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from mailfiler.config.loader import sqlite_path
from mailfiler.config.schema import Config
from mailfiler.errors import AlreadyRunning, UserError

log = logging.getLogger("mailfiler.lock")

#: the lock file in state_dir
STATE_LOCK = "daemon.lock"
#: appended to an SQLite store's file name for its lock file
SQLITE_LOCK_SUFFIX = ".mailfiler-lock"
#: file systems without flock (some network mounts): the lock is skipped with a warning
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


@dataclass(frozen=True)
class LockFile:
    path: Path
    #: "state_dir" or "SQLite store": what two processes would share
    guards: str


def lock_files(config: Config) -> list[LockFile]:
    """The lock files of a config: its state_dir's, then its SQLite store's (if any)."""
    files = [LockFile(Path(config.state_dir) / STATE_LOCK, "state_dir")]
    db = sqlite_path(config.database)
    if db is not None:
        # the real file: two configs may reach it through different links
        real = Path(os.path.realpath(db))
        files.append(LockFile(real.with_name(real.name + SQLITE_LOCK_SUFFIX), "SQLite store"))
    return files


class InstanceLock:
    """The locks of one ``run`` or ``once``; a context manager.  ``command``
    ("run", "once") is written into the lock files for the message a second
    process gets."""

    def __init__(self, config: Config, command: str, *, config_path: Path | None = None) -> None:
        self.files = lock_files(config)
        self.command = command
        self.config_path = config_path
        self._held: dict[Path, int] = {}

    def acquire(self) -> None:
        """Take every lock, or none: raises AlreadyRunning (or UserError when
        a lock file cannot be opened at all)."""
        try:
            for lf in self.files:
                fd = _lock(lf)
                if fd is not None:
                    self._held[lf.path] = fd
                    self._write_holder(fd)
        except BaseException:
            self.release()
            raise

    def move_state_dir(self, state_dir: Path) -> None:
        """A reload named another state_dir: lock it, then let the old one go
        (AlreadyRunning, and the old lock kept, when another process holds it)."""
        new = LockFile(state_dir / STATE_LOCK, "state_dir")
        fd = _lock(new)
        old = self.files[0]
        self.files[0] = new
        old_fd = self._held.pop(old.path, None)
        if old_fd is not None:
            _unlock(old_fd)
        if fd is not None:
            self._held[new.path] = fd
            self._write_holder(fd)

    def release(self) -> None:
        for fd in self._held.values():
            _unlock(fd)
        self._held.clear()

    def _write_holder(self, fd: int) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "config": str(self.config_path) if self.config_path else None,
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            # Type=notify sets it: the message can then say `systemctl stop`
            "systemd": bool(os.environ.get("NOTIFY_SOCKET")),
        }
        with contextlib.suppress(OSError):  # opened read-only (another user's file): the lock alone counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _lock(lf: LockFile) -> int | None:
    """An open, locked descriptor of the lock file; None when its file system
    cannot lock (logged)."""
    try:
        lf.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(lf.path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            # a file another user made (root ran mailfiler by hand): flock needs no write access
            fd = os.open(lf.path, os.O_RDONLY)
    except OSError as exc:
        if isinstance(exc, PermissionError):
            fix = f"run mailfiler as the user that owns the {lf.guards} (sudo -u mailfiler mailfiler ...)"
        else:
            fix = f"check the {lf.guards} in the config"
        raise UserError(f"cannot open the lock file {lf.path}: {exc.strerror}; {fix}", path=str(lf.path)) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(fd)
        os.close(fd)
        raise AlreadyRunning(_message(lf, holder), path=str(lf.path), pid=holder.get("pid")) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _NO_LOCKING:
            raise
        log.warning(
            "cannot lock %s (%s): a second mailfiler on this %s would not be stopped",
            lf.path,
            exc.strerror,
            lf.guards,
            extra={"event": "lock-unsupported", "path": str(lf.path)},
        )
        return None
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # nobody holds it now (a read-only descriptor cannot: fine)
    os.close(fd)  # drops the flock


def _read_holder(fd: int) -> dict:
    # the holder writes its line right after it locks; an empty file is one caught in between
    for _ in range(20):
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            return {}
        if data.strip():
            try:
                info = json.loads(data)
            except ValueError:
                return {}
            return info if isinstance(info, dict) else {}
        time.sleep(0.005)
    return {}


def _message(lf: LockFile, holder: dict) -> str:
    pid = holder.get("pid")
    command = holder.get("command")
    who = f"`mailfiler {command}`" if command in ("run", "once") else "mailfiler"
    about = [f"pid {pid}" if pid else "pid unknown"]
    if holder.get("host") and holder["host"] != socket.gethostname():
        about[0] += f" on host {holder['host']}"
    if holder.get("since"):
        about.append(f"since {holder['since']}")
    if holder.get("config"):
        about.append(f"config {holder['config']}")
    if holder.get("systemd"):
        stop = "systemctl stop mailfiler"
    elif command == "once" and pid:
        stop = f"wait for it to finish, or kill {pid}"
    elif pid:
        stop = f"kill {pid}, or Ctrl-C where it runs"
    else:
        stop = "systemctl stop mailfiler, or kill it"
    instead = "use a config with its own state_dir"
    if lf.guards != "state_dir":
        instead = "point this config at another database"
    return (
        f"another {who} ({', '.join(about)}) is running on this {lf.guards} ({lf.path}):"
        f" stop it first ({stop}) or {instead}"
    )


__all__ = ["SQLITE_LOCK_SUFFIX", "STATE_LOCK", "InstanceLock", "LockFile", "lock_files"]
