"""Rules through the running daemon: a case number in the subject decides
the regarding in a folder without one; a broken rules edit on reload keeps
the last good rules."""

from __future__ import annotations

import signal

from tests.e2e.harness import E2EEnv
from tests.mailgen import message_id_for, realistic_message

GOOD = """\
rules:
  - name: case-number-in-subject
    when: {subject: '(?P<number>CAS-\\d{5})'}
    then:
      regarding: {entity: case, key: '{number}', create: true}
"""


def _with_subject(i: int, subject: str) -> bytes:
    raw = realistic_message(i, seed=97)
    head, sep, body = raw.partition(b"\n\n")
    lines = [line for line in head.split(b"\n") if not line.lower().startswith(b"subject:")]
    return b"\n".join([*lines, b"Subject: " + subject.encode()]) + sep + body


def test_case_number_rule_and_broken_edit_keeps_old_rules(env: E2EEnv) -> None:
    env.expected_errors |= {"config-invalid", "config-kept"}
    (env.root / "rules.yaml").write_text(GOOD, encoding="utf-8")
    env.rules = ["rules.yaml"]
    env.add_mailbox("alice", "alice@example.com", [("Support", None)])
    env.write_config()
    daemon = env.start_daemon()

    mid = message_id_for(0, seed=97)
    env.drop("alice", "Support", _with_subject(0, "Printer broken CAS-00042"))
    act = env.wait_activity(mid)
    assert (act["regarding"], act["correlation"]) == ("case:CAS-00042", "rule:case-number-in-subject")
    # the log line names the regarding the rule decided, not the folder's (none)
    tracked = daemon.wait_event("tracked", message_id=mid)
    assert tracked.data is not None and tracked.data["regarding"] == "case:CAS-00042"

    # a broken edit: the daemon says where, and keeps the last good rules
    (env.root / "rules.yaml").write_text(GOOD.replace("subject:", "subjekt:"), encoding="utf-8")
    since = daemon.mark()
    daemon.signal(signal.SIGHUP)
    bad = daemon.wait_event("config-invalid", since=since)
    assert bad.data is not None and "rules.yaml:3:" in bad.data["msg"]
    mid = message_id_for(1, seed=97)
    env.drop("alice", "Support", _with_subject(1, "Still broken CAS-00043"))
    assert env.wait_activity(mid)["regarding"] == "case:CAS-00043"
