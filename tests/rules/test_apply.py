"""``mailfiler rules apply``: the current rules and correlation re-decide the
regarding of tracked mail.  Real Maildirs tracked by ``mailfiler once``, real
stores (SQLite and PostgreSQL); the re-apply runs in-process through
:func:`mailfiler.tracking.reapply.reapply`, and the command line is checked
as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailfiler.config.loader import load_config
from mailfiler.config.schema import Config
from mailfiler.service.runtime import load_ruleset
from mailfiler.store import models as m
from mailfiler.store.registry import ALL_MODELS
from mailfiler.tracking.reapply import Reapplied, reapply
from tests.mailgen import drop_into_maildir, maildirpp_folder_dir, make_maildir_folder
from tests.store import conftest as store_conftest
from tests.store.helpers import Store, make_message

#: the store fixture of the store tests: every test here runs on SQLite and on PostgreSQL
store = store_conftest.store

CASES = """\
  - name: case-number
    when: {subject: '(?P<number>CAS-\\d{5})'}
    then:
      regarding: {entity: case, key: '{number}', create: true}
"""

RECORDS = [
    {"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam", "domains": ["fabrikam.com"]},
]


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to show that something wrote nothing."""
    return {model.__name__: sorted(model.select().tuples(), key=repr) for model in ALL_MODELS if model.table_exists()}


def reply_to(message_id: str, parent: str, **kw: Any) -> bytes:
    raw = make_message(message_id, **kw)
    return raw.replace(
        f"Message-ID: {message_id}".encode(), f"Message-ID: {message_id}\nIn-Reply-To: {parent}".encode()
    )


@dataclass
class World:
    """A config naming the test's store, Maildirs per mailbox, and a rules file."""

    root: Path
    store: Store

    @property
    def config_path(self) -> Path:
        return self.root / "mailfiler.yaml"

    def write(self, rules: str, mailboxes: dict[str, dict[str, str | None]]) -> None:
        self.set_rules(rules)
        data = {
            "database": self.store.url,
            "state_dir": "state",
            "rules": ["rules.yaml"],
            "records": RECORDS,
            "mailboxes": [
                {
                    "name": name,
                    "owner": f"{name}@example.com",
                    "maildir": f"Maildir-{name}",
                    "create_missing_folders": True,
                    # only tracked folders: these tests are about them, not about auto-tracking
                    "auto_track": {"folders": []},
                    "tracked_folders": [{"folder": f, **({"regarding": r} if r else {})} for f, r in folders.items()],
                }
                for name, folders in mailboxes.items()
            ],
        }
        for name in mailboxes:
            make_maildir_folder(self.root / f"Maildir-{name}")
        self.config_path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    def set_rules(self, rules: str) -> None:
        (self.root / "rules.yaml").write_text("rules:\n" + rules, encoding="utf-8")

    def drop(self, mailbox: str, folder: str, raw: bytes) -> Path:
        return drop_into_maildir(maildirpp_folder_dir(self.root / f"Maildir-{mailbox}", folder), raw)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MAILFILER_CONFIG"}
        cmd = [sys.executable, "-m", "mailfiler", "--config", str(self.config_path), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.root, timeout=120, check=False)
        if check:
            assert res.returncode == 0, f"{args} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def once(self) -> None:
        self.cli("once")

    def config(self) -> Config:
        return load_config(self.config_path).config

    def apply(self, *, dry_run: bool = False, mailbox: str | None = None) -> dict[str, Reapplied]:
        cfg = self.config()
        results = asyncio.run(reapply(self.store.db, cfg, load_ruleset(cfg), mailbox=mailbox, dry_run=dry_run))
        return {r.message_id: r for r in results}


def activity(message_id: str) -> tuple[str | None, str | None]:
    act = m.Activity.get(m.Activity.message_id == message_id)
    return (act.regarding.ref if act.regarding_id else None, act.correlation)


@pytest.fixture
def world(store: Store, tmp_path: Path) -> World:
    return World(tmp_path, store)


def _track_scene(world: World) -> None:
    """Four messages: filed under a folder's regarding, a reply correlated to
    it, a case decided by a rule, and one nothing decided."""
    world.write(CASES, {"alice": {"Clients/Contoso": "account:contoso", "Unfiled": None, "Support": None}})
    world.drop("alice", "Clients/Contoso", make_message("<root@x>", sender="anna@contoso.com", subject="Offer"))
    world.drop("alice", "Unfiled", reply_to("<reply@x>", "<root@x>", sender="erik@fabrikam.com", subject="Re: Offer"))
    world.drop("alice", "Support", make_message("<case@x>", sender="anna@contoso.com", subject="Printer CAS-00042"))
    world.drop("alice", "Unfiled", make_message("<plain@x>", sender="erik@fabrikam.com", subject="Hello"))
    world.once()
    assert activity("<root@x>") == ("account:contoso", "folder")
    assert activity("<reply@x>") == ("account:contoso", "in-reply-to")
    assert activity("<case@x>") == ("case:CAS-00042", "rule:case-number")
    assert activity("<plain@x>") == (None, None)


NEW_RULES = (
    """\
  - name: offers
    when: {subject: 'offer'}
    then: {regarding: 'account:fabrikam'}
  - name: fabrikam-domain
    when: {from_domain: fabrikam.com}
    then: {regarding: 'account:fabrikam'}
"""
    + CASES
)


def test_a_new_rule_changes_rule_and_correlation_decided_mail_not_folder_filed(world: World) -> None:
    _track_scene(world)
    world.set_rules(NEW_RULES)
    results = world.apply()
    assert {mid: r.result for mid, r in results.items()} == {
        "<root@x>": "skipped-folder",
        "<reply@x>": "changed",
        "<case@x>": "unchanged",
        "<plain@x>": "changed",
    }
    assert activity("<root@x>") == ("account:contoso", "folder")  # the folder wins, even over a matching rule
    assert activity("<reply@x>") == ("account:fabrikam", "rule:offers")
    assert activity("<case@x>") == ("case:CAS-00042", "rule:case-number")
    assert activity("<plain@x>") == ("account:fabrikam", "rule:fabrikam-domain")
    reply = results["<reply@x>"]
    assert (reply.old_regarding, reply.old_correlation) == ("account:contoso", "in-reply-to")
    assert (reply.new_regarding, reply.new_correlation) == ("account:fabrikam", "rule:offers")
    assert reply.read_from == "alice/Unfiled" and reply.to_dict()["headers"] is True
    assert results["<plain@x>"].old_regarding is None
    updated = m.Activity.get(m.Activity.message_id == "<reply@x>")
    assert updated.correlated_activity.message_id == "<root@x>"  # the thread link stays
    assert updated.updated_at > updated.first_seen_at
    # idempotent: a second run changes nothing
    again = world.apply()
    assert sorted(r.result for r in again.values()) == ["skipped-folder", "unchanged", "unchanged", "unchanged"]


def test_nothing_deciding_keeps_the_regarding_and_skip_never_untracks(world: World) -> None:
    _track_scene(world)
    world.set_rules("""\
  - name: private
    when: {subject: 'printer'}
    then: skip
""")
    results = world.apply()
    assert results["<case@x>"].result == "kept"
    assert results["<case@x>"].note == "rules now say skip (rule private); left tracked"
    assert activity("<case@x>") == ("case:CAS-00042", "rule:case-number")
    assert results["<plain@x>"].result == "kept" and results["<plain@x>"].note == "kept: nothing decides now"
    # correlation still finds the thread: same regarding, same method
    assert results["<reply@x>"].result == "unchanged"


def test_dry_run_writes_nothing_and_creates_no_records(world: World) -> None:
    _track_scene(world)
    world.set_rules(
        """\
  - name: hello-cases
    when: {subject: 'hello'}
    then:
      regarding: {entity: case, name: 'Hello {from.local}', create: true}
"""
        + CASES
    )
    before = snapshot()
    results = world.apply(dry_run=True)
    assert snapshot() == before
    plain = results["<plain@x>"]
    assert (plain.result, plain.new_regarding, plain.new_correlation) == (
        "would-change",
        "case:hello-erik",
        "rule:hello-cases",
    )
    assert plain.note == "would create case:hello-erik"
    # the real run creates the very record the dry run named
    assert world.apply()["<plain@x>"].result == "changed"
    assert activity("<plain@x>") == ("case:hello-erik", "rule:hello-cases")
    assert m.Record.get((m.Record.entity == "case") & (m.Record.key == "hello-erik")).name == "Hello erik"


def test_a_correlated_reply_follows_its_parents_new_regarding(world: World) -> None:
    world.write(CASES, {"alice": {"Support": None, "Unfiled": None}})
    world.drop("alice", "Support", make_message("<p@x>", sender="anna@contoso.com", subject="Printer CAS-00042"))
    world.once()
    world.drop("alice", "Unfiled", reply_to("<r@x>", "<p@x>", sender="erik@fabrikam.com", subject="Re: thanks"))
    world.once()
    assert activity("<r@x>") == ("case:CAS-00042", "in-reply-to")
    world.set_rules("""\
  - name: printers
    when: {subject: 'printer'}
    then: {regarding: 'account:contoso'}
""")
    before = snapshot()
    dry = world.apply(dry_run=True)
    assert snapshot() == before
    # the dry run already shows the reply following the parent it would change
    assert [(r.result, r.new_regarding, r.new_correlation) for r in dry.values()] == [
        ("would-change", "account:contoso", "rule:printers"),
        ("would-change", "account:contoso", "in-reply-to"),
    ]
    world.apply()
    assert activity("<p@x>") == ("account:contoso", "rule:printers")
    assert activity("<r@x>") == ("account:contoso", "in-reply-to")


def test_mailbox_limits_the_run(world: World) -> None:
    world.write(CASES, {"alice": {"Unfiled": None}, "bob": {"Unfiled": None}})
    world.drop("alice", "Unfiled", make_message("<a@x>", sender="erik@fabrikam.com", subject="Hello"))
    world.drop("bob", "Unfiled", make_message("<b@x>", sender="erik@fabrikam.com", subject="Hello"))
    world.once()
    world.set_rules(NEW_RULES)
    assert list(world.apply(mailbox="bob")) == ["<b@x>"]
    assert activity("<a@x>") == (None, None)
    assert activity("<b@x>") == ("account:fabrikam", "rule:fabrikam-domain")


def test_a_gone_source_copy_falls_back_to_the_stored_fields(world: World) -> None:
    world.write(CASES, {"alice": {"Unfiled": None}})
    path = world.drop("alice", "Unfiled", make_message("<g@x>", sender="erik@fabrikam.com", subject="Hello"))
    world.once()
    world.set_rules(NEW_RULES)
    path.unlink()  # deleted, and the daemon has not noticed yet: the location is still present
    dry = world.apply(dry_run=True)["<g@x>"]
    assert (dry.result, dry.read_from, dry.to_dict()["headers"]) == ("would-change", None, False)
    assert dry.note.startswith("could not read it again (")
    assert dry.note.endswith("stored fields used, headers not available")
    world.once()  # now the store knows the copy is gone
    assert m.Location.get().gone_at is not None
    result = world.apply()["<g@x>"]
    assert result.note == "no copy left in any mailbox: stored fields used, headers not available"
    assert result.result == "changed" and activity("<g@x>") == ("account:fabrikam", "rule:fabrikam-domain")


def test_cli_json_table_and_errors(world: World) -> None:
    _track_scene(world)
    world.set_rules(NEW_RULES)
    data = json.loads(world.cli("rules", "apply", "--dry-run", "--json").stdout)
    assert data["dry_run"] is True and data["mailbox"] is None
    assert data["totals"] == {"changed": 0, "would-change": 2, "unchanged": 1, "kept": 0, "skipped-folder": 1}
    reply = next(a for a in data["activities"] if a["message_id"] == "<reply@x>")
    assert {k: reply[k] for k in ("message_id", "old_regarding", "new_regarding", "result", "headers")} == {
        "message_id": "<reply@x>",
        "old_regarding": "account:contoso",
        "new_regarding": "account:fabrikam",
        "result": "would-change",
        "headers": True,
    }
    out = world.cli("rules", "apply").stdout
    assert "4 e-mail activities: 2 changed, 1 unchanged, 1 skipped-folder" in out
    assert "account:contoso -> account:fabrikam" in out and "in-reply-to -> rule:offers" in out
    assert "Printer" not in out  # unchanged rows only with --all
    assert "Printer" in world.cli("rules", "apply", "--all").stdout
    res = world.cli("rules", "apply", "--mailbox", "nobody", check=False)
    assert res.returncode == 66 and "no mailbox named 'nobody' in the store" in res.stderr


def test_cli_without_a_store(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("database: sqlite:///state/mf.db\nstate_dir: state\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "MAILFILER_CONFIG"}
    for args in (["rules", "apply"], ["rules", "apply", "--dry-run"]):
        res = subprocess.run(
            [sys.executable, "-m", "mailfiler", "--config", str(cfg), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert res.returncode == 69, res.stderr
        assert f"there is no store at {tmp_path / 'state' / 'mf.db'} yet" in res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "state").exists()
