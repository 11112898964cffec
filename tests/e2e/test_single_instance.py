"""One mailfiler at a time on a state_dir and on an SQLite store (service/instancelock.py).

Real processes on a Maildir and SQLite: a second ``run``, or a ``once``, beside a running
daemon stops at once with exit code 75 and a message naming the holder's pid and the lock
file; a SIGKILLed daemon leaves no stale lock; the read-only commands go on working.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from mailfiler.config.schema import Config
from mailfiler.service.instancelock import InstanceLock
from tests.e2e.harness import DaemonProcess, E2EEnv
from tests.mailgen import message_id_for, realistic_message

pytestmark = pytest.mark.timeout(90)

#: EX_TEMPFAIL: the exit code of a command refused by the lock (cli/errors.py)
LOCKED = 75


def started(env: E2EEnv) -> DaemonProcess:
    """A daemon on one mailbox with one tracked folder, past its backfill."""
    env.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso")])
    env.write_config()
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    return daemon


def state_lock(env: E2EEnv) -> Path:
    return env.root / "state" / "daemon.lock"


def track_one(env: E2EEnv, i: int) -> None:
    """Drop a message into the tracked folder; a running daemon tracks it."""
    env.drop("alice", "Tracked/Contoso", realistic_message(i, seed=131))
    env.wait_activity(message_id_for(i, seed=131))


def test_a_second_run_is_refused_at_once_while_the_first_runs(env: E2EEnv) -> None:
    daemon = started(env)
    t0 = time.monotonic()
    res = env.cli("run", "--no-progress", check=False, timeout=30)
    elapsed = time.monotonic() - t0
    assert res.returncode == LOCKED, res.stderr
    first, *rest = res.stderr.splitlines()
    assert first.startswith(f"error: another `mailfiler run` (pid {daemon.pid}, since "), res.stderr
    assert f"is running on this state_dir ({state_lock(env)}): stop it first (kill {daemon.pid}" in first
    assert first.endswith("or use a config with its own state_dir")
    assert rest == [
        "hint: `mailfiler status` and the other read-only commands work while it runs; the lock is freed as soon"
        " as that process ends (even if it is killed)"
    ]
    print(f"second run refused in {elapsed:.2f} s")
    assert elapsed < 10  # a Python start-up and the config, nothing more

    # the first goes on, and the refused one never wrote to the store: status shows the first's heartbeat
    assert daemon.proc.poll() is None
    track_one(env, 0)
    assert [d["pid"] for d in env.status()["daemons"]] == [daemon.pid]
    rc, _ = daemon.terminate()
    assert rc == 0
    # stopped: the lock is free for the next daemon
    again = env.start_daemon()
    again.wait_event("watching")
    assert again.terminate()[0] == 0


def test_once_is_refused_while_run_runs_plain_and_json(env: E2EEnv) -> None:
    daemon = started(env)
    res = env.cli("once", check=False)
    assert res.returncode == LOCKED, res.stderr
    assert res.stderr.startswith(f"error: another `mailfiler run` (pid {daemon.pid}, "), res.stderr
    assert str(state_lock(env)) in res.stderr and res.stdout == ""

    res = env.cli("once", "--json", check=False)
    assert res.returncode == LOCKED, res.stderr
    err = json.loads(res.stdout)
    # the shape of every CLI error in JSON (here: no config file)
    other = env.cli("once", "--json", check=False, config=env.root / "missing.yaml")
    assert set(err) == set(json.loads(other.stdout)) == {"error", "message", "problems", "hint"}
    assert err["error"] == "already-running"
    assert err["message"].startswith(f"another `mailfiler run` (pid {daemon.pid}, ")
    assert f"({state_lock(env)}): stop it first" in err["message"]
    assert err["problems"] == [] and "read-only commands work" in err["hint"]

    # once the daemon has stopped, `once` runs (and finds nothing new: the daemon tracked it all)
    track_one(env, 1)
    assert daemon.terminate()[0] == 0
    res = env.cli("once", "--json")
    assert all(r["new"] == 0 for r in json.loads(res.stdout)["alice"])


def test_a_sigkilled_daemon_leaves_no_stale_lock(env: E2EEnv) -> None:
    daemon = started(env)
    lock = state_lock(env)
    assert json.loads(lock.read_text())["pid"] == daemon.pid
    daemon.proc.kill()  # SIGKILL: no clean-up code runs
    assert daemon.proc.wait(10) == -9
    # the file stays, naming the dead daemon; the kernel dropped its flock
    assert json.loads(lock.read_text())["pid"] == daemon.pid

    t0 = time.monotonic()
    new = env.start_daemon()
    new.wait_event("watching")
    print(f"a new daemon after SIGKILL: watching in {time.monotonic() - t0:.2f} s")
    assert json.loads(lock.read_text())["pid"] == new.pid
    track_one(env, 2)
    refused = env.cli("once", check=False)
    assert refused.returncode == LOCKED and f"(pid {new.pid}, " in refused.stderr
    assert new.terminate()[0] == 0
    assert lock.read_text() == ""  # a clean exit leaves the file empty
    assert env.cli("once").returncode == 0


def test_read_only_commands_work_while_the_daemon_runs(env: E2EEnv) -> None:
    started(env)
    track_one(env, 3)
    eml = env.root / "mail.eml"
    eml.write_bytes(realistic_message(4, seed=131))
    commands = [
        ["status", "--json"],
        ["activities", "--json"],
        ["shunt", "list", "--json"],
        ["records", "list", "--json"],
        ["config", "check", "--json"],
        ["rules", "test", str(eml), "--folder", "Tracked/Contoso", "--json"],
        ["folders", "list", "--json"],
        ["sync", "--shunted", "--json"],
        # it writes, but takes no lock: each retry is one transaction, as the daemon's writes are
        ["shunt", "retry", "--all", "--json"],
    ]
    for args in commands:
        res = env.cli(*args, check=False)
        assert res.returncode == 0, f"{args}: exited {res.returncode}\n{res.stderr}"
        json.loads(res.stdout)
    assert len(env.activities()) == 1


def test_another_config_on_the_same_sqlite_store_is_refused(env: E2EEnv) -> None:
    daemon = started(env)
    other = env.root / "other.yaml"
    data = {**env.config_data(), "state_dir": "state-other"}
    other.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    res = env.cli("once", check=False, config=other)
    assert res.returncode == LOCKED, res.stderr
    lock = os.path.realpath(env.db_path) + ".mailfiler-lock"
    assert f"error: another `mailfiler run` (pid {daemon.pid}, " in res.stderr
    assert f"is running on this SQLite store ({lock}): stop it first" in res.stderr
    assert "point this config at another database" in res.stderr
    # all or nothing: the other state_dir's lock was let go with the refusal
    assert (env.root / "state-other" / "daemon.lock").read_text() == ""
    assert daemon.terminate()[0] == 0
    assert env.cli("once", config=other).returncode == 0


def test_a_reload_onto_a_state_dir_in_use_is_rejected_then_moves_the_lock(env: E2EEnv) -> None:
    env.expected_errors |= {"config-invalid", "config-kept"}
    daemon = started(env)
    env.extra["state_dir"] = "state-new"  # config_data() spreads extra after its own state_dir
    # this test process holds the new state_dir, as another mailfiler would
    held = Config.model_construct(database="postgresql://elsewhere/crm", state_dir=env.root / "state-new")
    with InstanceLock(held, "once"):
        since = daemon.mark()
        env.write_config()
        bad = daemon.wait_event("config-invalid", since=since)
        assert bad.data is not None
        assert f"state_dir: another `mailfiler once` (pid {os.getpid()}, " in bad.data["msg"]
        assert json.loads(state_lock(env).read_text())["pid"] == daemon.pid
        status = env.wait_status(lambda s: s["daemons"][0]["config_error"] is not None, what="config_error")
        assert "state-new" in status["daemons"][0]["config_error"]
    # the new state_dir is free now: a save moves the daemon (and its lock) there
    since = daemon.mark()
    daemon.reload()
    daemon.wait_event("watching", since=since)
    assert json.loads((env.root / "state-new" / "daemon.lock").read_text())["pid"] == daemon.pid
    assert state_lock(env).read_text() == ""
    assert env.cli("once", check=False).returncode == LOCKED
    assert daemon.terminate()[0] == 0
