"""Crash safety of auto-tracking: kill ``mailfiler once`` again and again while it
judges an Inbox and a folder an inbox rule fills (replies tracked, the rest noted as
seen), and prove it ends exactly where an uninterrupted run ends: each message judged
once, tracked once or noted once, never both, and the same verdicts."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.daemonproc import World, cli, cli_json, describe, query, tree_hashes
from tests.mailgen import drop_into_maildir, maildirpp_folder_dir, make_maildir_folder

pytestmark = [pytest.mark.slow, pytest.mark.timeout(280)]

FOLDERS: list[tuple[str, str | None]] = [("Tracked/Contoso", "account:contoso")]
EXTRA = {"auto_track": {"policy": "replies"}, "never_track": ["@family.example"]}
N_ORIGINALS = 30
N_INBOX = 120
N_LISTS = 30


def _mail(mid: str, *, frm: str, subject: str, reply_to: str | None = None, extra: str = "") -> bytes:
    head = [
        f"From: {frm}",
        "To: alice@example.com",
        f"Subject: {subject}",
        "Date: Mon, 02 Nov 2026 09:00:00 +0000",
        f"Message-ID: {mid}",
    ]
    if reply_to:
        head += [f"In-Reply-To: {reply_to}", f"References: {reply_to}"]
    if extra:
        head.append(extra)
    return ("\n".join(head) + "\n\nbody\n").encode()


def _inbox_message(i: int, folder: str) -> bytes:
    original = f"<orig-{i % N_ORIGINALS}@contoso.com>"
    mid = f"<{folder.replace('/', '-').lower()}-{i}@test.example>"
    kind = i % 4
    if kind == 0:  # a reply to tracked mail: tracked
        return _mail(mid, frm="bob@contoso.com", subject="Re: order", reply_to=original)
    if kind == 1:  # unrelated: noted as seen
        return _mail(mid, frm="carol@adatum.com", subject=f"Lunch {i}")
    if kind == 2:  # an out-of-office reply: noted as seen
        return _mail(
            mid, frm="bob@contoso.com", subject="Away", reply_to=original, extra="Auto-Submitted: auto-replied"
        )
    return _mail(mid, frm="mum@family.example", subject="Re: order", reply_to=original)  # never-track


@pytest.fixture(scope="module")
def maildir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("autotrack-crash") / "Maildir"
    make_maildir_folder(root)  # INBOX
    for i in range(N_ORIGINALS):
        raw = _mail(f"<orig-{i}@contoso.com>", frm="bob@contoso.com", subject="order")
        drop_into_maildir(maildirpp_folder_dir(root, "Tracked/Contoso"), raw, fsync=False)
    make_maildir_folder(maildirpp_folder_dir(root, "Lists/Orders"))
    return root


def _fill(maildir: Path) -> None:
    for i in range(N_INBOX):
        drop_into_maildir(maildir, _inbox_message(i, "INBOX"), fsync=False)
    for i in range(N_LISTS):
        drop_into_maildir(maildirpp_folder_dir(maildir, "Lists/Orders"), _inbox_message(i, "Lists/Orders"), fsync=False)


def _state(world: World) -> dict[str, Any]:
    activities = query(
        world.db,
        "SELECT a.message_id, r.entity || ':' || r.key, a.correlation FROM activity a"
        " LEFT JOIN record r ON r.id = a.regarding_id",
    )
    # by Message-ID: each world has its own copy of the files, with other names
    locations = query(
        world.db,
        "SELECT l.folder, a.message_id FROM location l JOIN activity a ON a.id = l.activity_id WHERE l.gone_at IS NULL",
    )
    seen = query(world.db, "SELECT folder, message_id, verdict, reason FROM seen_message")
    return {
        "activities": sorted(activities),
        "locations": sorted(locations),
        "seen": sorted(seen),
    }


def _world(base: Path, maildir: Path) -> World:
    # each world gets its own copy: the first pass notes the (empty) Inbox, then mail arrives
    copy = base / "Maildir"
    shutil.copytree(maildir, copy)
    world = World(base, copy, FOLDERS, mailbox_extra=EXTRA)
    res = cli(world.config, "once")
    assert res.returncode == 0, describe(res)
    _fill(copy)
    return world


def test_killed_at_commit_points_while_judging_converges(maildir: Path, tmp_path: Path) -> None:
    reference = _world(tmp_path / "reference", maildir)
    res = cli(reference.config, "once")
    assert res.returncode == 0, describe(res)
    expected = _state(reference)
    n_judged = N_INBOX + N_LISTS
    tracked_here = [loc for loc in expected["locations"] if loc[0] != "Tracked/Contoso"]
    assert len(tracked_here) == sum(1 for i in range(N_INBOX) if i % 4 == 0) + sum(
        1 for i in range(N_LISTS) if i % 4 == 0
    )
    assert len(tracked_here) + len(expected["seen"]) == n_judged
    assert {s[2] for s in expected["seen"]} == {"skipped"}

    world = _world(tmp_path / "crashed", maildir)
    before = tree_hashes(world.maildir)
    runs = 0
    while True:
        # alternately die just before a commit and just after one
        spec = "before_commit:5" if runs % 2 else "after_commit:7"
        res = cli(world.config, "once", env={"MAILFILER_CRASH_AT": spec})
        runs += 1
        if res.returncode == 0:
            break
        assert res.returncode == -signal.SIGKILL, describe(res)
        state = _state(world)
        # never tracked and noted both, never noted twice
        noted = {(f, m) for f, m, _, _ in state["seen"]}
        assert not noted & set(state["locations"])
        assert len(noted) == len(state["seen"])
        assert runs < 200
    assert runs > 10
    assert _state(world) == expected
    again = cli_json(world.config, "once")
    assert all(r["new"] == 0 and r["skipped"] == 0 for r in again["alice"])
    assert _state(world) == expected
    assert tree_hashes(world.maildir) == before  # source mail only ever read
