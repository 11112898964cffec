"""Issue 21's "done when": a third backend (the in-memory one, mailfiler.backends.memory)
is configured, listed with `folders list`, tracked by the daemon and shown in `status`,
and nothing outside its own module and its registry line knows it exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mailfiler.backends import BACKENDS
from tests.e2e.harness import E2EEnv
from tests.e2e.test_autotrack_daemon import mail, mid

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "mailfiler"


def test_a_third_backend_is_one_module_and_one_registry_line() -> None:
    module = PACKAGE / "backends" / "memory.py"
    assert BACKENDS["memory"] == "mailfiler.backends.memory"
    mentions = []
    for path in PACKAGE.rglob("*.py"):
        if path == module:
            continue
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            if re.search(r"backends\.memory|\bMemorySource\b|\bMemoryMailbox\b|\bMemoryConfig\b", line):
                mentions.append(f"{path.relative_to(PACKAGE)}: {line.strip()}")
    assert mentions == ['backends/__init__.py: "memory": "mailfiler.backends.memory",'], mentions


def test_the_memory_backend_is_configured_listed_tracked_and_shown(env: E2EEnv) -> None:
    mails = env.root / "mail"
    mails.mkdir()
    for n in (1, 2, 3):
        (mails / f"{n}.eml").write_bytes(mail(n))
    spec = env.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso")])
    spec.extra = {
        "memory": {"folders": {"Tracked/Contoso": ["mail/1.eml", "mail/2.eml"], "Archive": ["mail/3.eml"]}},
        "auto_track": {"policy": "none"},
    }
    env.write_config()
    assert "memory:" in env.config_path.read_text() and "maildir:" not in env.config_path.read_text()

    check = json.loads(env.cli("config", "check", "--json").stdout)
    assert check["valid"] and check["mailboxes"] == 1

    listed = json.loads(env.cli("folders", "list", "--json").stdout)
    assert {(r["folder"], r["kind"], r["exists"]) for r in listed} == {
        ("Archive", "watched", True),
        ("INBOX", "watched", True),
        ("Tracked/Contoso", "tracked", True),
    }

    env.start_daemon()
    for n in (1, 2):
        act = env.wait_activity(mid(n))
        assert act["regarding"] == "account:contoso"
    status = env.status()
    (mb,) = status["mailboxes"]
    assert (mb["backend"], mb["location"]) == ("memory", "memory:alice")
    folder = env.folder_status(status, "alice", "Tracked/Contoso")
    assert (folder["state"], folder["tracked"], folder["last_error"]) == ("ok", 2, None)
    assert mid(3) not in {a["message_id"] for a in env.activities()}  # Archive is not tracked
    text = env.cli("status").stdout
    assert "Tracked/Contoso" in text
