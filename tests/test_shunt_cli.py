"""``mailfiler shunt list`` and ``mailfiler shunt retry``, run as real subprocesses.

The world: one tracked folder under a 1 MB size limit holding a 1.6 MB message (shunted
``too-large``), an empty file (``empty-message``), a text file (``not-a-message``) and a
normal message (tracked).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.daemonproc import World, cli, cli_json, describe
from tests.mailgen import drop_into_maildir, large_attachment_message, maildirpp_folder_dir, realistic_message

FOLDER = "Tracked/Contoso"
LIMIT = 1_000_000
ATTACHMENT_BYTES = 1_200_000
LARGE = large_attachment_message(ATTACHMENT_BYTES)
LARGE_ID = f"<large-{ATTACHMENT_BYTES}.0@mail.contoso.com>"
REASONS = {"large": "too-large", "empty": "empty-message", "notmail": "not-a-message"}

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(
        tmp_path / "world", tmp_path / "Maildir", [(FOLDER, "account:contoso")], limits={"max_message_bytes": LIMIT}
    )
    folder = maildirpp_folder_dir(w.maildir, FOLDER)
    drop_into_maildir(folder, LARGE, name="large")
    drop_into_maildir(folder, b"", name="empty")
    drop_into_maildir(folder, b"hello world\n", name="notmail")
    drop_into_maildir(folder, realistic_message(3), name="normal")
    res = cli(w.config, "once")
    assert res.returncode == 0, describe(res)
    return w


def listing(world: World, *extra: str) -> dict[str, dict[str, Any]]:
    """``shunt list --json``, keyed by source id."""
    data = cli_json(world.config, "shunt", "list", *extra)
    assert isinstance(data, list)
    return {s["source_id"]: s for s in data}


def raise_limit(world: World) -> None:
    world.write_config(limits={"max_message_bytes": 64 * 1024 * 1024})


def test_list_json_shows_reason_detail_and_attempts(world: World) -> None:
    shunted = listing(world)
    assert {sid: s["reason"] for sid, s in shunted.items()} == REASONS
    for sid, s in shunted.items():
        assert s["attempts"] == 1, sid
        assert s["mailbox"] == "alice" and s["folder"] == FOLDER
        assert s["resolved_at"] is None and s["created_at"] and s["last_attempt_at"]
        assert s["copy"] and (world.state_dir / s["copy"]).is_file(), f"{sid}: no kept copy"
    assert shunted["large"]["detail"] == f"message is {len(LARGE)} bytes; limits.max_message_bytes is {LIMIT}"
    assert shunted["large"]["size"] == len(LARGE)
    assert (world.state_dir / shunted["large"]["copy"]).read_bytes() == LARGE
    assert shunted["empty"]["detail"] == "the message file is empty"
    assert "no mail header block" in shunted["notmail"]["detail"]
    # ids are distinct integers the retry command takes
    assert len({s["id"] for s in shunted.values()}) == 3 and all(isinstance(s["id"], int) for s in shunted.values())


def test_list_human_output_reads_well(world: World) -> None:
    res = cli(world.config, "shunt", "list")
    assert res.returncode == 0, describe(res)
    out = res.stdout
    assert "3 shunted messages" in out
    for column in ("id", "mailbox", "folder", "source id", "reason", "tries", "detail"):
        assert column in out
    lines = out.splitlines()
    for sid, reason in REASONS.items():
        row = [ln for ln in lines if f" {sid} " in ln]
        assert len(row) == 1, f"one table row for {sid}:\n{out}"
        assert reason in row[0] and FOLDER in row[0] and " 1 " in row[0]
    assert "limits.max_message_bytes is 1000000" in out
    assert "Traceback" not in out + res.stderr and "{" not in out


def test_retry_too_large_after_raising_the_limit_tracks_it(world: World) -> None:
    large_id = listing(world)["large"]["id"]

    # still too large: it stays shunted, for the same reason, and the attempt is counted
    res = cli(world.config, "shunt", "retry", str(large_id), "--json")
    assert res.returncode == 1, describe(res)
    assert [(r["id"], r["result"], r["reason"]) for r in json.loads(res.stdout)] == [(large_id, "failed", "too-large")]
    s = listing(world)["large"]
    assert (s["reason"], s["attempts"]) == ("too-large", 2)
    assert s["detail"] == f"message is {len(LARGE)} bytes; limits.max_message_bytes is {LIMIT}"

    raise_limit(world)
    res = cli(world.config, "shunt", "retry", str(large_id), "--json")
    assert res.returncode == 0, describe(res)
    assert json.loads(res.stdout) == [
        {"id": large_id, "result": "tracked", "message_id": LARGE_ID, "regarding": "account:contoso"}
    ]
    assert set(listing(world)) == {"empty", "notmail"}, "a tracked message leaves the list"
    resolved = listing(world, "--all")["large"]
    assert resolved["resolved_at"] is not None

    acts = {a["message_id"]: a for a in cli_json(world.config, "activities")}
    act = acts[LARGE_ID]
    assert act["regarding"] == "account:contoso"
    assert act["locations"] == [{"mailbox": "alice", "folder": FOLDER}]
    assert [(a["filename"], a["size"]) for a in act["attachments"]] == [("archive.bin", ATTACHMENT_BYTES)]
    assert len(acts) == 2  # the normal message and this one

    # retrying it again, or another pass over the folder, changes nothing
    res = cli(world.config, "shunt", "retry", str(large_id), "--json")
    assert res.returncode == 0, describe(res)
    assert json.loads(res.stdout) == [{"id": large_id, "result": "already-resolved"}]
    once = cli_json(world.config, "once")
    [tracked] = [r for r in once["alice"] if r["kind"] == "tracked"]
    assert tracked == {
        "folder": FOLDER,
        "kind": "tracked",
        "new": 0,
        "skipped": 0,
        "gone": 0,
        "shunted": 0,
        "missing": False,
    }
    assert len(cli_json(world.config, "activities")) == 2
    assert set(listing(world)) == {"empty", "notmail"}


def test_retry_all_on_still_bad_messages_exits_1_and_bumps_attempts(world: World) -> None:
    raise_limit(world)
    res = cli(world.config, "shunt", "retry", "--all", "--json")
    assert res.returncode == 1, describe(res)
    results = {r["id"]: r for r in json.loads(res.stdout)}
    ids = {sid: s["id"] for sid, s in listing(world, "--all").items()}
    assert results[ids["large"]]["result"] == "tracked"
    for sid in ("empty", "notmail"):
        assert results[ids[sid]]["result"] == "failed"
        assert results[ids[sid]]["reason"] == REASONS[sid]
    after = listing(world)
    assert {sid: (s["reason"], s["attempts"]) for sid, s in after.items()} == {
        "empty": ("empty-message", 2),
        "notmail": ("not-a-message", 2),
    }
    assert after["empty"]["detail"] == "the message file is empty", "the detail stays a sentence for people"

    # --all takes only what is still pending
    res = cli(world.config, "shunt", "retry", "--all", "--json")
    assert res.returncode == 1, describe(res)
    assert sorted(r["id"] for r in json.loads(res.stdout)) == sorted([ids["empty"], ids["notmail"]])
    assert {sid: s["attempts"] for sid, s in listing(world).items()} == {"empty": 3, "notmail": 3}


def test_retry_unknown_id_is_a_clear_error(world: World) -> None:
    before = listing(world)
    res = cli(world.config, "shunt", "retry", "9999")
    assert res.returncode == 66, describe(res)  # EX_NOINPUT
    assert res.stdout == ""
    assert "error: no shunted message with id 9999" in res.stderr
    assert "mailfiler shunt list" in res.stderr and "Traceback" not in res.stderr

    res = cli(world.config, "shunt", "retry", "9999", "--json")
    assert res.returncode == 66, describe(res)
    err = json.loads(res.stdout)
    assert err["error"] == "not-found" and "9999" in err["message"]

    # one unknown id among known ones: nothing is retried
    res = cli(world.config, "shunt", "retry", str(before["empty"]["id"]), "9999")
    assert res.returncode == 66, describe(res)
    assert listing(world) == before


def test_retry_needs_ids_or_all(world: World) -> None:
    res = cli(world.config, "shunt", "retry")
    assert res.returncode == 2, describe(res)
    assert "give one or more shunt IDs, or --all" in res.stderr


def test_retry_human_output_reads_well(world: World) -> None:
    ids = {sid: s["id"] for sid, s in listing(world).items()}
    res = cli(world.config, "shunt", "retry", str(ids["large"]), str(ids["empty"]))
    assert res.returncode == 1, describe(res)
    assert res.stdout.splitlines() == [
        f"shunt {ids['empty']}: failed (empty-message): the message file is empty",
        f"shunt {ids['large']}: failed (too-large): message is {len(LARGE)} bytes; limits.max_message_bytes is {LIMIT}",
    ]
    raise_limit(world)
    res = cli(world.config, "shunt", "retry", str(ids["large"]))
    assert res.returncode == 0, describe(res)
    assert res.stdout.splitlines() == [f"shunt {ids['large']}: tracked as {LARGE_ID} regarding account:contoso"]
    assert "Traceback" not in res.stderr


def test_retry_all_with_nothing_pending(tmp_path: Path) -> None:
    w = World(tmp_path / "world", tmp_path / "Maildir", [(FOLDER, "account:contoso")])
    drop_into_maildir(maildirpp_folder_dir(w.maildir, FOLDER), realistic_message(5))
    assert cli(w.config, "once").returncode == 0
    res = cli(w.config, "shunt", "retry", "--all")
    assert res.returncode == 0, describe(res)
    assert res.stdout.strip() == "nothing to retry"
    res = cli(w.config, "shunt", "list")
    assert res.returncode == 0 and "0 shunted messages" in res.stdout
