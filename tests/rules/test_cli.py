"""``mailfiler rules check`` and ``mailfiler rules test``, run as real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.mailgen import drop_into_maildir, maildirpp_folder_dir, make_maildir_folder

REPO = Path(__file__).resolve().parents[2]

RULES = r"""
rules:
  - name: case-number-in-subject
    when:
      subject: '(?P<number>CAS-\d{5})'
    then:
      regarding: {entity: case, key: '{number|upper}'}
  - name: client-folders
    when: {folder: 'Clients/{account}'}
    then:
      regarding: {entity: account, name: '{account}', create: true}
      categories: [client]
  - name: contacts
    when: {sender_is: contact}
    then: {categories: [from-contact]}
"""

MESSAGE = (
    b"From: Bob Smith <bob@contoso.com>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: Invoice 4711\r\n"
    b"Message-ID: <inv-4711@contoso.com>\r\n"
    b"\r\n"
    b"Please pay.\r\n"
)


def mf(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILFILER_CONFIG"}
    cmd = [sys.executable, "-m", "mailfiler", *(["--config", str(config)] if config else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture
def world(tmp_path: Path) -> Path:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10-main.yaml").write_text(RULES.lstrip(), encoding="utf-8")
    (tmp_path / "mail.eml").write_bytes(MESSAGE)
    cfg = tmp_path / "mailfiler.yaml"
    cfg.write_text(
        textwrap.dedent(
            """\
            database: sqlite:///state/mf.db
            state_dir: state
            rules: [rules]
            records:
              - {entity: contact, key: bob, name: Bob Smith, emails: [bob@contoso.com]}
            mailboxes:
              - name: alice
                owner: alice@example.com
                maildir: Maildir
                tracked_folders:
                  - {folder: Tracked/Contoso, regarding: 'account:contoso'}
            """
        ),
        encoding="utf-8",
    )
    return cfg


def test_check_ok(world: Path) -> None:
    res = mf("rules", "check", config=world)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "3 rules in 1 file: OK"
    data = json.loads(mf("rules", "check", "--json", config=world).stdout)
    assert data == {
        "valid": True,
        "files": [str(world.parent / "rules" / "10-main.yaml")],
        "rules": 3,
        "names": ["case-number-in-subject", "client-folders", "contacts"],
    }


def test_check_problems_exit_78(world: Path) -> None:
    bad = world.parent / "rules" / "20-bad.yaml"
    bad.write_text("rules:\n  - name: x\n    when: {subject: '(a)\\1'}\n    then: {regarding: 'acount:{n}'}\n")
    res = mf("rules", "check", config=world)
    assert res.returncode == 78
    lines = res.stderr.strip().splitlines()
    assert lines[0].startswith(f"{bad}:3:21: rule 'x': when.subject: invalid regular expression '(a)\\1'")
    # the entity is still checked; the template is not blamed for the broken condition's captures
    assert lines[1] == f"{bad}:4:23: rule 'x': then.regarding: unknown entity type 'acount' (did you mean 'account'?)"
    assert len(lines) == 2
    data = json.loads((r := mf("rules", "check", "--json", config=world)).stdout)
    assert r.returncode == 78 and data["valid"] is False and data["problems"][0].startswith(f"{bad}:3:21:")


def test_check_explicit_files_without_config(tmp_path: Path) -> None:
    good = tmp_path / "a.yaml"
    good.write_text("rules:\n  - name: a\n    then: {regarding: 'project:x'}\n")
    res = mf("rules", "check", str(good))
    assert res.returncode == 78  # no config: only the built-in entity types
    assert (
        res.stderr.strip()
        == f"{good}:3:23: rule 'a': then.regarding: unknown entity type 'project' (known: user, contact, account, lead, opportunity, case)"
    )
    good.write_text("rules:\n  - name: a\n    then: {regarding: 'account:x'}\n")
    assert mf("rules", "check", str(good)).returncode == 0


def test_check_with_an_invalid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("database: sqlite:///x.db\nstate_dir: s\nrulez: []\n")
    res = mf("rules", "check", config=cfg)
    assert res.returncode == 78
    assert res.stderr.strip() == f"{cfg}:3:1: unknown key 'rulez' (did you mean 'rules'?)"


def test_shipped_examples_check() -> None:
    res = mf("rules", "check", str(REPO / "rules"))
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


def test_test_json_without_store(world: Path) -> None:
    res = mf("rules", "test", str(world.parent / "mail.eml"), "--folder", "Clients/Åkesson AB", "--json", config=world)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["message"]["from"] == ["bob@contoso.com"]
    assert data["message"]["direction"] == "incoming" and data["message"]["mailbox"] == "alice"
    assert data["store"] == "no store yet: addresses not resolved"
    assert data["decision"]["action"] == "track"
    assert data["decision"]["rule"] == "client-folders"
    assert data["decision"]["regarding"]["name"] == "Åkesson AB" and data["decision"]["regarding"]["create"] is True
    assert data["decision"]["categories"] == ["client"]
    assert [(t["rule"], t["matched"]) for t in data["trace"]] == [
        ("case-number-in-subject", False),
        ("client-folders", True),
    ]
    assert data["trace"][1]["captures"] == {"account": "Åkesson AB"}
    assert not (world.parent / "state").exists()  # nothing written, no store created


def test_test_resolves_from_the_store_read_only(world: Path) -> None:
    records = world.parent / "records.yaml"
    records.write_text("- {entity: contact, key: bob, name: Bob Smith, emails: [bob@contoso.com]}\n")
    assert mf("records", "import", str(records), config=world).returncode == 0
    db = world.parent / "state" / "mf.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    res = mf("rules", "test", str(world.parent / "mail.eml"), "--json", config=world)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["store"] == "read"
    assert data["message"]["sender_entities"] == ["contact"]
    assert data["message"]["recipient_entities"] == []
    assert data["decision"]["action"] is None and data["decision"]["categories"] == ["from-contact"]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_test_human_output(world: Path) -> None:
    eml = world.parent / "case.eml"
    eml.write_bytes(MESSAGE.replace(b"Invoice 4711", b"Re: cas-01001 invoice"))
    res = mf("rules", "test", str(eml), "--folder", "Tracked/Contoso", config=world)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "regarding: case:CAS-01001  (rule case-number-in-subject)" in out
    assert "the tracked folder's regarding account:contoso wins over any rule" in out
    assert "number=cas-01001" in out and "evaluation ends here" in out


def test_test_errors(world: Path) -> None:
    res = mf("rules", "test", str(world.parent / "mail.eml"), "--mailbox", "nobody", config=world)
    assert res.returncode == 66 and "no mailbox named 'nobody'" in res.stderr
    empty = world.parent / "empty.eml"
    empty.write_bytes(b"")
    res = mf("rules", "test", str(empty), config=world)
    assert res.returncode == 65 and "empty" in res.stderr
    (world.parent / "rules" / "10-main.yaml").write_text("rules:\n  - name: x\n    then: tack\n")
    res = mf("rules", "test", str(world.parent / "mail.eml"), config=world)
    assert res.returncode == 78 and "10-main.yaml:3:11: rule 'x': then: unknown action 'tack'" in res.stderr


def test_test_says_the_final_answer(world: Path) -> None:
    mail = str(world.parent / "mail.eml")
    out = mf("rules", "test", mail, config=world).stdout
    assert "correlation: not tried: no store yet" in out
    assert "auto-track: INBOX watched, policy replies" in out
    assert "=> not tracked: policy replies: not a reply to tracked mail" in out
    out = mf("rules", "test", mail, "--folder", "Tracked/Contoso", config=world).stdout
    assert "=> tracked regarding account:contoso (folder)" in out
    assert "why: Tracked/Contoso is a tracked folder: mail filed there is always tracked" in out
    assert "auto-track:" not in out
    data = json.loads(mf("rules", "test", mail, "--json", config=world).stdout)
    assert data["verdict"]["tracked"] is False and data["auto_tracking"]["policy"] == "replies"
    assert data["correlation"] == {"method": None, "activity": None, "note": "not tried: no store yet"}


def test_test_reply_to_mail_tracked_by_once(world: Path) -> None:
    """The store written by a real `mailfiler once`: the reply correlates to the filed message."""
    records = world.parent / "records.yaml"
    records.write_text("- {entity: account, key: contoso, name: Contoso, domains: [contoso.com]}\n")
    assert mf("records", "import", str(records), config=world).returncode == 0
    maildir = world.parent / "Maildir"
    make_maildir_folder(maildir)
    drop_into_maildir(maildirpp_folder_dir(maildir, "Tracked/Contoso"), MESSAGE)
    assert (res := mf("once", config=world)).returncode == 0, res.stderr
    reply = world.parent / "reply.eml"
    reply.write_bytes(
        MESSAGE.replace(b"<inv-4711@contoso.com>", b"<r@contoso.com>\r\nIn-Reply-To: <inv-4711@contoso.com>")
    )
    out = mf("rules", "test", str(reply), config=world).stdout
    assert (
        "correlation: in-reply-to: activity 1 <inv-4711@contoso.com> 'Invoice 4711', regarding account:contoso" in out
    )
    assert "=> tracked regarding account:contoso (in-reply-to)" in out
    assert "why: policy replies: reply to tracked mail (in-reply-to)" in out


def test_apply_help_teaches() -> None:
    res = mf("rules", "apply", "--help")
    assert res.returncode == 0
    for text in ("--dry-run", "--mailbox NAME", "the folder wins", "Examples:", "skipped-folder"):
        assert text in res.stdout
