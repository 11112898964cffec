"""`status` while the config file has a YAML syntax error (issue 15).

An unknown key or a bad value left the file readable as YAML, and `status` went on with
the store it names.  A syntax error anywhere (here a bad indent far below an intact
``database:`` on line 1) made `status` print the config error and exit 78: the admin who
had just broken the file could not see that the daemon still ran on the last good config,
nor the error the daemon recorded.  Now `status` finds the store all the same and says
which config is in force.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.e2e.harness import E2EEnv
from tests.mailgen import message_id_for, realistic_message

pytestmark = pytest.mark.timeout(120)


def test_status_shows_the_daemon_while_the_config_has_a_yaml_syntax_error(env: E2EEnv) -> None:
    env.expected_errors |= {"config-invalid", "config-kept"}
    env.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso")])
    good = env.write_config().read_text(encoding="utf-8")
    daemon = env.start_daemon()
    env.wait_status(lambda s: bool(s["daemons"]) and s["daemons"][0]["state"] == "running", what="daemon running")

    lines = good.splitlines(keepends=True)
    assert lines[0].startswith("database: ")
    at = next(i for i, line in enumerate(lines) if line.startswith("  owner: "))
    assert at >= 9, "the broken line is to be well below database:"
    lines[at] = " " + lines[at]  # one space too many: YAML cannot read the file at all
    broken = "".join(lines)
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(broken)
    since = daemon.mark()
    env.write_config(broken)  # saved: the daemon re-reads it, rejects it, keeps the old one
    daemon.wait_event("config-invalid", since=since)

    def rejected(s: dict) -> bool:
        return bool(s["daemons"] and s["daemons"][0]["config_error"])

    status = env.wait_status(rejected, what="the daemon's config_error")
    [d] = status["daemons"]
    assert d["pid"] == daemon.pid and d["state"] == "running"
    assert f"mailfiler.yaml:{at + 1}:" in d["config_error"], d["config_error"]
    assert any(f"mailfiler.yaml:{at + 1}:" in p for p in status["config_problems"]), status["config_problems"]
    in_force = d["config_in_force"]
    assert in_force["path"] == str(env.config_path) and in_force["file_changed_since"] is True
    assert in_force["loaded_at"] and in_force["sha256"]

    # the text form says so too
    res = env.cli("status")
    assert f"(pid {daemon.pid}): running" in res.stdout, res.stdout
    assert "config in force:" in res.stdout and "the last good version runs" in res.stdout, res.stdout
    assert f"mailfiler.yaml:{at + 1}:" in res.stderr, res.stderr

    # and the last good config is indeed in force
    mid = message_id_for(0, seed=61)
    env.drop("alice", "Tracked/Contoso", realistic_message(0, seed=61))
    assert env.wait_activity(mid)["regarding"] == "account:contoso"

    # fixed: nothing left to report
    env.write_config(good)
    env.wait_status(lambda s: s["daemons"][0]["config_error"] is None, what="config_error cleared")
    status = json.loads(env.cli("status", "--json").stdout)
    assert status["config_problems"] == []
    assert status["daemons"][0]["config_in_force"]["file_changed_since"] is False
