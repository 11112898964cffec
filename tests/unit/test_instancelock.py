"""The single-instance lock (service/instancelock.py) in one process: a flock belongs to
an open file, so a second InstanceLock here conflicts as a second process would
(tests/e2e/test_single_instance.py runs real daemons)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from mailfiler.cli.errors import EXIT_TEMPFAIL, describe
from mailfiler.config.schema import Config
from mailfiler.errors import AlreadyRunning, UserError
from mailfiler.service.instancelock import InstanceLock, lock_files


def config(state_dir: Path, database: str = "postgresql://mailfiler@localhost/mailfiler") -> Config:
    return Config.model_construct(database=database, state_dir=state_dir)


def test_a_second_lock_is_refused_until_the_first_is_let_go(tmp_path: Path) -> None:
    cfg = config(tmp_path / "state")
    with InstanceLock(cfg, "run", config_path=tmp_path / "a.yaml"):
        holder = json.loads((tmp_path / "state" / "daemon.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "run"
        assert holder["config"] == str(tmp_path / "a.yaml")
        with pytest.raises(AlreadyRunning) as caught:
            InstanceLock(cfg, "once").acquire()
    err = caught.value
    assert err.pid == os.getpid() and err.path == str(tmp_path / "state" / "daemon.lock")
    assert str(err).startswith(f"another `mailfiler run` (pid {os.getpid()}, since ")
    assert str(err).endswith(
        f"config {tmp_path / 'a.yaml'}) is running on this state_dir ({tmp_path / 'state' / 'daemon.lock'}):"
        f" stop it first (kill {os.getpid()}, or Ctrl-C where it runs) or use a config with its own state_dir"
    )
    assert describe(err)[0] == EXIT_TEMPFAIL == 75
    # let go: free again, and the file says nobody holds it
    assert (tmp_path / "state" / "daemon.lock").read_text() == ""
    with InstanceLock(cfg, "once"):
        pass


def test_an_sqlite_store_is_locked_beside_its_file_and_the_locks_are_all_or_none(tmp_path: Path) -> None:
    db = tmp_path / "store" / "crm.db"
    db.parent.mkdir()
    link = tmp_path / "link"
    link.symlink_to(db.parent)
    first = config(tmp_path / "state-a", f"sqlite:///{db}")
    # another config, another state_dir, the same file through a symlinked folder
    second = config(tmp_path / "state-b", f"sqlite:///{link / 'crm.db'}")
    assert [lf.path for lf in lock_files(second)] == [
        tmp_path / "state-b" / "daemon.lock",
        db.parent / "crm.db.mailfiler-lock",
    ]
    with InstanceLock(first, "run"), pytest.raises(AlreadyRunning) as caught:
        InstanceLock(second, "once").acquire()
    assert f"is running on this SQLite store ({db.parent / 'crm.db.mailfiler-lock'})" in str(caught.value)
    assert str(caught.value).endswith("or point this config at another database")
    # the state_dir lock taken before the refusal was let go
    with InstanceLock(config(tmp_path / "state-b"), "run"):
        pass


def test_the_message_says_how_to_stop_the_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    with InstanceLock(cfg, "run"), pytest.raises(AlreadyRunning) as caught:
        InstanceLock(cfg, "run").acquire()
    assert "stop it first (systemctl stop mailfiler)" in str(caught.value)
    monkeypatch.delenv("NOTIFY_SOCKET")
    with InstanceLock(cfg, "once"), pytest.raises(AlreadyRunning) as caught:
        InstanceLock(cfg, "run").acquire()
    assert f"another `mailfiler once` (pid {os.getpid()}, " in str(caught.value)
    assert f"stop it first (wait for it to finish, or kill {os.getpid()})" in str(caught.value)
    # a holder caught before it wrote its line (or not mailfiler at all)
    fd = os.open(tmp_path / "daemon.lock", os.O_RDWR)
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(AlreadyRunning) as caught:
            InstanceLock(cfg, "run").acquire()
    finally:
        os.close(fd)
    assert str(caught.value).startswith("another mailfiler (pid unknown) is running on this state_dir")
    assert caught.value.pid is None


def test_the_lock_is_not_inherited_by_child_processes(tmp_path: Path) -> None:
    lock = InstanceLock(config(tmp_path), "run")
    with lock:
        assert all(not os.get_inheritable(fd) for fd in lock._held.values())


def test_a_reload_moves_the_state_dir_lock_or_keeps_the_old_one(tmp_path: Path) -> None:
    old, new, busy = tmp_path / "old", tmp_path / "new", tmp_path / "busy"
    with InstanceLock(config(old), "run") as lock:
        lock.move_state_dir(new)
        with InstanceLock(config(old), "once"):  # let go
            pass
        with pytest.raises(AlreadyRunning):
            InstanceLock(config(new), "once").acquire()
        with InstanceLock(config(busy), "once"), pytest.raises(AlreadyRunning):
            lock.move_state_dir(busy)
        with pytest.raises(AlreadyRunning):  # still held after the refused move
            InstanceLock(config(new), "once").acquire()
    with InstanceLock(config(new), "once"):
        pass


def test_an_unusable_state_dir_is_a_user_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("a file where the state_dir should be\n")
    with pytest.raises(UserError) as caught:
        InstanceLock(config(state), "run").acquire()
    assert not isinstance(caught.value, AlreadyRunning)
    assert str(caught.value).startswith(f"cannot open the lock file {state / 'daemon.lock'}: ")
    assert str(caught.value).endswith("File exists; check the state_dir in the config")
