"""End-to-end: the real daemon (``python -m mailfiler ... run``) against real Maildirs.

Mail is written the way an MDA, a mail client or Dovecot writes it (tmp/ then a rename
into new/, a rename into cur/ with flags, a rename to another folder); results are read
back through ``mailfiler activities --json`` and ``mailfiler status --json``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest

from tests.e2e.harness import E2EEnv, locations, wait_for
from tests.mailgen import (
    make_maildir_folder,
    malformed_corpus,
    mark_seen,
    message_id_for,
    move_message,
    realistic_message,
)

pytestmark = pytest.mark.timeout(60)

#: generous bound for drop -> `tracked` (the benchmark measures the real figure)
LATENCY_BOUND_S = 2.0
SYNTHETIC_SUFFIX = "@synthetic.mailfiler.invalid>"


def simple_message(
    message_id: str | None,
    *,
    sender: str = "Bob Smith <bob@contoso.com>",
    to: str = "Alice <alice@example.com>",
    subject: str = "Hello",
    body: str = "Hi,\n\nA short message.\n",
) -> bytes:
    head = [f"From: {sender}", f"To: {to}", "Date: Tue, 02 Jan 2024 09:15:00 +0100", f"Subject: {subject}"]
    if message_id is not None:
        head.append(f"Message-ID: {message_id}")
    head += ["MIME-Version: 1.0", 'Content-Type: text/plain; charset="utf-8"', "Content-Transfer-Encoding: 8bit"]
    return ("\n".join(head) + "\n\n" + body).encode("utf-8")


def one_mailbox(env: E2EEnv, folders: list[tuple[str, str | None]], **kwargs) -> None:
    env.add_mailbox("alice", "alice@example.com", folders, **kwargs)
    env.write_config()


def test_drop_is_tracked_quickly_then_flag_renames_change_nothing(env: E2EEnv) -> None:
    one_mailbox(env, [("Tracked/Contoso", "account:contoso")])
    daemon = env.start_daemon()
    # the daemon created the missing tracked folder (create_missing_folders: true) and synced it
    env.wait_status(lambda s: env.folder_status(s, "alice", "Tracked/Contoso")["state"] == "ok", what="folder ok")

    i = 4  # with_attachment_every=5: message 4 carries a PDF attachment
    mid = message_id_for(i, seed=11)
    t_drop = time.monotonic()
    path = env.drop("alice", "Tracked/Contoso", realistic_message(i, seed=11))
    tracked = daemon.wait_event("tracked", message_id=mid)
    latency = tracked.at - t_drop
    print(f"drop -> tracked: {latency * 1000:.0f} ms")
    assert latency < LATENCY_BOUND_S, f"tracked after {latency:.2f} s"
    assert tracked.data is not None
    assert tracked.data["regarding"] == "account:contoso"
    assert tracked.data["folder"] == "Tracked/Contoso"
    assert tracked.data["mailbox"] == "alice"

    act = env.wait_activity(mid)
    assert act["regarding"] == "account:contoso"
    assert act["correlation"] == "folder"
    assert act["direction"] == "incoming"
    assert act["subject"]
    assert locations(act) == [("alice", "Tracked/Contoso")]
    roles = {p["role"] for p in act["parties"]}
    assert "from" in roles and "to" in roles
    assert all(set(p) >= {"role", "address", "record"} for p in act["parties"])
    assert len(act["attachments"]) == 1 and act["attachments"][0]["filename"].endswith(".pdf")

    # a client reads it (new/x -> cur/x:2,S), then flags it answered (cur/x:2,S -> cur/x:2,RS)
    seen = mark_seen(path)
    assert seen.parent.name == "cur" and seen.name.endswith(":2,S")
    replied = seen.with_name(seen.name.replace(":2,S", ":2,RS"))
    os.rename(seen, replied)
    # barrier: once a later drop is tracked, the renames before it have been handled
    sentinel = message_id_for(1, seed=11)
    env.drop("alice", "Tracked/Contoso", realistic_message(1, seed=11))
    daemon.wait_event("tracked", message_id=sentinel)

    acts = env.wait_activities(lambda a: len(a) == 2, what="two activities")
    assert sorted(a["message_id"] for a in acts) == sorted([mid, sentinel])
    assert locations(next(a for a in acts if a["message_id"] == mid)) == [("alice", "Tracked/Contoso")]
    assert len(daemon.events("tracked", message_id=mid)) == 1
    assert not daemon.events("left-folder")
    assert not daemon.events("shunted")

    status = env.status()
    folder = env.folder_status(status, "alice", "Tracked/Contoso")
    assert folder["state"] == "ok"
    assert folder["tracked"] == 2 and folder["shunted"] == 0
    assert folder["last_sync"] and folder["last_error"] is None
    assert status["activities"] == 2
    [d] = status["daemons"]
    assert d["pid"] == daemon.pid and d["state"] == "running" and d["config_error"] is None


def test_moves_between_tracked_folders_and_out_of_them(env: E2EEnv) -> None:
    one_mailbox(
        env,
        [
            ("Tracked/Contoso", "account:contoso"),
            ("Tracked/Fabrikam", "account:fabrikam"),
            ("Tracked/Unfiled", None),
        ],
    )
    daemon = env.start_daemon()
    # not tracked, and not watched by auto-tracking (excluded by default)
    trash = make_maildir_folder(env.folder_dir("alice", "Trash"))
    mid = message_id_for(0, seed=21)
    path = env.drop("alice", "Tracked/Contoso", realistic_message(0, seed=21))
    env.wait_activity(mid, lambda a: a["regarding"] == "account:contoso")
    path = mark_seen(path)

    # A -> B, B has a regarding: re-linked to B's record
    since = daemon.mark()
    path = move_message(path, env.folder_dir("alice", "Tracked/Fabrikam"))
    act = env.wait_activity(mid, lambda a: locations(a) == [("alice", "Tracked/Fabrikam")])
    assert act["regarding"] == "account:fabrikam" and act["correlation"] == "folder"
    daemon.wait_event("relinked", since=since, message_id=mid)
    daemon.wait_event("left-folder", since=since, folder="Tracked/Contoso")

    # B -> C, C has no regarding: keeps B's
    path = move_message(path, env.folder_dir("alice", "Tracked/Unfiled"))
    act = env.wait_activity(mid, lambda a: locations(a) == [("alice", "Tracked/Unfiled")])
    assert act["regarding"] == "account:fabrikam"

    # C -> a folder neither tracked nor watched: still tracked, no location left
    move_message(path, trash)
    act = env.wait_activity(mid, lambda a: a["locations"] == [])
    assert act["regarding"] == "account:fabrikam"
    assert len(env.activities()) == 1
    assert len(daemon.events("tracked", message_id=mid)) == 1


def test_folder_added_by_sighup_backfills_its_mail_maildirpp_utf7(env: E2EEnv) -> None:
    one_mailbox(env, [("Tracked/Contoso", "account:contoso")])
    daemon = env.start_daemon()
    folder = "Kunder/Åkesson AB"
    folder_dir = env.folder_dir("alice", folder)
    assert folder_dir.name == ".Kunder.&AMU-kesson AB"  # Maildir++ with IMAP modified UTF-7
    ids = [message_id_for(i, seed=31) for i in range(3)]
    env.drop("alice", folder, realistic_message(0, seed=31))
    env.drop("alice", folder, realistic_message(1, seed=31), flags="S")
    env.drop("alice", folder, realistic_message(2, seed=31), flags="RS")
    # not tracked yet: a barrier drop into the tracked folder proves the daemon saw the others
    env.drop("alice", "Tracked/Contoso", realistic_message(9, seed=31))
    daemon.wait_event("tracked", message_id=message_id_for(9, seed=31))
    assert [a["message_id"] for a in env.activities()] == [message_id_for(9, seed=31)]

    env.set_folder("alice", folder, "account:akesson")
    env.write_config()
    daemon.reload()
    acts = env.wait_activities(
        lambda acts: sum(a["regarding"] == "account:akesson" for a in acts) == 3, what="backfilled folder"
    )
    backfilled = [a for a in acts if a["message_id"] in ids]
    assert len(backfilled) == 3
    assert all(locations(a) == [("alice", folder)] and a["correlation"] == "folder" for a in backfilled)

    # and new mail in it is followed live
    mid = message_id_for(5, seed=31)
    env.drop("alice", folder, realistic_message(5, seed=31))
    assert env.wait_activity(mid)["regarding"] == "account:akesson"
    status = env.status()
    assert env.folder_status(status, "alice", folder)["tracked"] == 4


def test_regarding_change_and_sighup_relinks_the_folder(env: E2EEnv) -> None:
    one_mailbox(env, [("Tracked/Customer", "account:contoso"), ("Tracked/Other", "case:CAS-01001")])
    daemon = env.start_daemon()
    ids = [message_id_for(i, seed=41) for i in range(3)]
    for i in range(2):
        env.drop("alice", "Tracked/Customer", realistic_message(i, seed=41))
    env.drop("alice", "Tracked/Other", realistic_message(2, seed=41))
    env.wait_activities(lambda a: len(a) == 3, what="three activities")

    env.set_folder("alice", "Tracked/Customer", "account:fabrikam")
    env.write_config()
    daemon.reload()
    acts = env.wait_activities(
        lambda acts: [a["regarding"] for a in acts if a["message_id"] in ids[:2]] == ["account:fabrikam"] * 2,
        what="re-linked to account:fabrikam",
    )
    assert all(a["correlation"] == "folder" for a in acts)
    # the other folder's message is untouched
    assert next(a for a in acts if a["message_id"] == ids[2])["regarding"] == "case:CAS-01001"
    assert daemon.events("relinked", folder="Tracked/Customer")
    # mail dropped after the reload gets the new regarding too
    mid = message_id_for(7, seed=41)
    env.drop("alice", "Tracked/Customer", realistic_message(7, seed=41))
    assert env.wait_activity(mid)["regarding"] == "account:fabrikam"
    status = env.status()
    assert env.folder_status(status, "alice", "Tracked/Customer")["regarding"] == "account:fabrikam"


def test_invalid_config_on_sighup_keeps_the_old_one_until_fixed(env: E2EEnv) -> None:
    env.expected_errors |= {"config-invalid", "config-kept"}
    one_mailbox(env, [("Tracked/Contoso", "account:contoso")])
    good = env.config_path.read_text(encoding="utf-8")
    daemon = env.start_daemon()

    # a misspelt key and a bad reference: both rejected
    env.write_config(good.replace("tracked_folders:", "tracked_foldrs:") + "\nbogus_key: 1\n")
    since = daemon.mark()
    daemon.signal(signal.SIGHUP)
    invalid = daemon.wait_event("config-invalid", since=since)
    assert invalid.data is not None and "mailfiler.yaml" in invalid.data["msg"]
    daemon.wait_event("config-kept", since=since)
    assert daemon.proc.poll() is None

    # `status` still reads the store the broken file names, and lists the file's problems
    status = env.wait_status(lambda s: bool(s["daemons"] and s["daemons"][0]["config_error"]), what="config_error")
    assert any("tracked_foldrs" in p for p in status["config_problems"])
    [d] = status["daemons"]
    assert d["pid"] == daemon.pid and d["state"] == "running"
    assert "mailfiler.yaml" in d["config_error"] and "tracked_foldrs" in d["config_error"]

    # the old config is still in force: mail is tracked as before
    mid = message_id_for(0, seed=51)
    env.drop("alice", "Tracked/Contoso", realistic_message(0, seed=51))
    assert env.wait_activity(mid)["regarding"] == "account:contoso"

    env.write_config(good)
    daemon.reload()
    status = env.wait_status(lambda s: s["daemons"][0]["config_error"] is None, what="config_error cleared")
    assert status["config_problems"] == []
    assert status["daemons"][0]["state"] == "running"
    mid = message_id_for(1, seed=51)
    env.drop("alice", "Tracked/Contoso", realistic_message(1, seed=51))
    assert env.wait_activity(mid)["regarding"] == "account:contoso"


def test_sigterm_exits_zero_promptly_after_the_message_in_flight(env: E2EEnv) -> None:
    one_mailbox(env, [("Tracked/Contoso", "account:contoso")])
    daemon = env.start_daemon()
    n = 40
    ids = {message_id_for(i, seed=61) for i in range(n)}
    for i in range(n):
        env.drop("alice", "Tracked/Contoso", realistic_message(i, seed=61), fsync=False)
    daemon.wait_event("tracked")  # it is busy with the batch now
    rc, elapsed = daemon.terminate(timeout=5.0)
    assert rc == 0, daemon.log_tail()
    assert elapsed < 5.0
    daemon.wait_event("stopped")
    print(f"SIGTERM -> exit: {elapsed * 1000:.0f} ms")

    # everything logged as tracked was committed in full; nothing half-written
    logged = {ln.data["message_id"] for ln in daemon.events("tracked") if ln.data}
    acts = env.activities()
    stored = {a["message_id"] for a in acts}
    assert logged <= stored
    assert all(locations(a) == [("alice", "Tracked/Contoso")] for a in acts)

    # a pass over the folder finishes the rest, tracking nothing twice
    res = env.cli("once", "--json")
    assert res.returncode == 0
    [summary] = [r for r in json.loads(res.stdout)["alice"] if r["kind"] == "tracked"]
    assert summary["new"] == n - len(stored) and summary["gone"] == 0 and summary["shunted"] == 0
    acts = env.activities()
    assert sorted(a["message_id"] for a in acts) == sorted(ids)
    assert env.status()["shunted"] == 0

    # and an idle daemon stops promptly too
    idle = env.start_daemon()
    rc, elapsed = idle.terminate(timeout=5.0)
    assert rc == 0 and elapsed < 5.0


def test_same_message_in_two_mailboxes_and_two_folders_is_one_activity(env: E2EEnv) -> None:
    env.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso"), ("Tracked/Unfiled", None)])
    env.add_mailbox("carol", "carol@example.com", [("Customers/Contoso", "account:contoso")])
    env.write_config()
    daemon = env.start_daemon()

    # alice writes to bob and copies carol; alice's copy is filed first, so the activity is outgoing
    mid = "<outgoing.1@example.com>"
    raw = simple_message(
        mid, sender="Alice <alice@example.com>", to="Bob Smith <bob@contoso.com>, carol@example.com", subject="Offer"
    )
    env.drop("alice", "Tracked/Contoso", raw, flags="S")
    env.wait_activity(mid)
    env.drop("carol", "Customers/Contoso", raw)
    env.drop("alice", "Tracked/Unfiled", raw, flags="S")
    act = env.wait_activity(mid, lambda a: len(a["locations"]) == 3)
    assert locations(act) == [
        ("alice", "Tracked/Contoso"),
        ("alice", "Tracked/Unfiled"),
        ("carol", "Customers/Contoso"),
    ]
    assert act["direction"] == "outgoing"
    assert act["regarding"] == "account:contoso"
    to = {p["address"]: p["record"] for p in act["parties"] if p["role"] == "to"}
    assert to == {"bob@contoso.com": "contact:bob.smith", "carol@example.com": "user:carol@example.com"}

    # the same message landing in both mailboxes at the same moment: still one activity
    mid2 = "<race.2@contoso.com>"
    raw2 = simple_message(mid2, to="Alice <alice@example.com>, carol@example.com", subject="Race")
    env.drop("alice", "Tracked/Contoso", raw2)
    env.drop("carol", "Customers/Contoso", raw2)
    act2 = env.wait_activity(mid2, lambda a: len(a["locations"]) == 2)
    assert act2["direction"] == "incoming"  # From is bob, neither mailbox's owner
    assert len(env.activities()) == 2
    assert len(daemon.events("tracked", message_id=mid2)) == 1
    assert not daemon.events("shunted")


def test_fs_layout_nested_folders(env: E2EEnv) -> None:
    one_mailbox(
        env,
        [
            ("Kunder/Åkesson AB", "account:akesson"),
            ("Kunder/Contoso/Support", "account:contoso"),
            ("Projekt/Fabrikam/Avtal", "account:fabrikam"),
        ],
        layout="fs",
        create_missing_folders=False,
    )
    make_maildir_folder(env.folder_dir("alice", "Kunder/Åkesson AB"))
    make_maildir_folder(env.folder_dir("alice", "Kunder/Contoso/Support"))
    daemon = env.start_daemon()
    daemon.wait_event("folder-missing", folder="Projekt/Fabrikam/Avtal")
    akesson = env.folder_dir("alice", "Kunder/Åkesson AB")
    assert akesson == env.mailboxes["alice"].maildir / "Kunder" / "Åkesson AB"
    mid = message_id_for(0, seed=81)
    t_drop = time.monotonic()
    path = env.drop("alice", "Kunder/Åkesson AB", realistic_message(0, seed=81))
    tracked = daemon.wait_event("tracked", message_id=mid)
    assert tracked.at - t_drop < LATENCY_BOUND_S
    act = env.wait_activity(mid)
    assert act["regarding"] == "account:akesson" and locations(act) == [("alice", "Kunder/Åkesson AB")]
    assert akesson.is_dir() and (akesson / "cur").is_dir()

    move_message(mark_seen(path), env.folder_dir("alice", "Kunder/Contoso/Support"))
    act = env.wait_activity(mid, lambda a: locations(a) == [("alice", "Kunder/Contoso/Support")])
    assert act["regarding"] == "account:contoso"
    assert len(env.activities()) == 1

    # a whole tree renamed into place (IMAP RENAME Staging -> Projekt) brings a tracked
    # folder two levels down, already holding mail
    mid2 = message_id_for(1, seed=81)
    env.drop("alice", "Staging/Fabrikam/Avtal", realistic_message(1, seed=81), flags="S")
    os.rename(env.folder_dir("alice", "Staging"), env.folder_dir("alice", "Projekt"))
    act = env.wait_activity(mid2)
    assert act["regarding"] == "account:fabrikam" and locations(act) == [("alice", "Projekt/Fabrikam/Avtal")]


def test_message_without_message_id_gets_a_stable_synthetic_id(env: E2EEnv) -> None:
    one_mailbox(env, [("Tracked/Contoso", "account:contoso"), ("Tracked/Unfiled", None)])
    env.start_daemon()
    raw = simple_message(None, subject="No Message-ID here")
    env.drop("alice", "Tracked/Contoso", raw)
    [act] = env.wait_activities(lambda a: len(a) == 1, what="one activity")
    assert act["message_id"].endswith(SYNTHETIC_SUFFIX)
    assert act["synthetic_message_id"] is True
    assert act["subject"] == "No Message-ID here"

    env.drop("alice", "Tracked/Unfiled", raw, flags="S")
    act = env.wait_activity(act["message_id"], lambda a: len(a["locations"]) == 2)
    assert locations(act) == [("alice", "Tracked/Contoso"), ("alice", "Tracked/Unfiled")]
    assert act["regarding"] == "account:contoso"
    assert len(env.activities()) == 1


def test_missing_folder_is_reported_then_picked_up_when_created(env: E2EEnv) -> None:
    one_mailbox(
        env,
        [("Tracked/Contoso", "account:contoso"), ("Tracked/Later", "account:fabrikam")],
        create_missing_folders=False,
    )
    make_maildir_folder(env.folder_dir("alice", "Tracked/Contoso"))
    daemon = env.start_daemon()
    daemon.wait_event("folder-missing", folder="Tracked/Later")
    status = env.wait_status(
        lambda s: env.folder_status(s, "alice", "Tracked/Later")["state"] == "missing", what="state missing"
    )
    assert env.folder_status(status, "alice", "Tracked/Later")["last_error"]
    assert env.folder_status(status, "alice", "Tracked/Contoso")["state"] == "ok"
    assert not env.folder_dir("alice", "Tracked/Later").exists()  # not created behind our back

    # the rest of the mailbox works meanwhile
    mid = message_id_for(0, seed=91)
    env.drop("alice", "Tracked/Contoso", realistic_message(0, seed=91))
    env.wait_activity(mid)

    # the folder is created (as a client would: tmp/ new/ cur/), then mail lands in it
    make_maildir_folder(env.folder_dir("alice", "Tracked/Later"))
    mid = message_id_for(1, seed=91)
    env.drop("alice", "Tracked/Later", realistic_message(1, seed=91))
    act = env.wait_activity(mid)
    assert act["regarding"] == "account:fabrikam"
    env.wait_status(lambda s: env.folder_status(s, "alice", "Tracked/Later")["state"] == "ok", what="state ok")
    assert daemon.proc.poll() is None


def test_missing_folder_renamed_into_place_with_mail_is_backfilled(env: E2EEnv) -> None:
    """A folder that appears whole (an IMAP RENAME in Dovecot renames the directory),
    already holding mail: the daemon must notice it and track what it holds."""
    one_mailbox(env, [("Tracked/Later", "account:fabrikam")], create_missing_folders=False)
    daemon = env.start_daemon()
    daemon.wait_event("folder-missing", folder="Tracked/Later")
    staging = env.folder_dir("alice", "Staging")
    ids = [message_id_for(i, seed=95) for i in range(2)]
    env.drop("alice", "Staging", realistic_message(0, seed=95))
    env.drop("alice", "Staging", realistic_message(1, seed=95), flags="S")
    os.rename(staging, env.folder_dir("alice", "Tracked/Later"))
    acts = env.wait_activities(lambda a: sorted(x["message_id"] for x in a) == sorted(ids), what="renamed-in folder")
    assert all(a["regarding"] == "account:fabrikam" for a in acts)
    env.wait_status(lambda s: env.folder_status(s, "alice", "Tracked/Later")["state"] == "ok", what="state ok")


def test_once_does_one_pass_and_exits_zero(env: E2EEnv) -> None:
    one_mailbox(env, [("Tracked/Contoso", "account:contoso"), ("Tracked/Missing", None)], create_missing_folders=False)
    make_maildir_folder(env.folder_dir("alice", "Tracked/Contoso"))
    for i in range(3):
        env.drop("alice", "Tracked/Contoso", realistic_message(i, seed=99))
    res = env.cli("once", "--json")
    assert res.returncode == 0
    summary = {r["folder"]: r for r in json.loads(res.stdout)["alice"]}
    assert summary["Tracked/Contoso"]["new"] == 3 and summary["Tracked/Missing"]["missing"] is True
    acts = env.activities()
    assert sorted(a["message_id"] for a in acts) == sorted(message_id_for(i, seed=99) for i in range(3))
    assert all(a["regarding"] == "account:contoso" for a in acts)
    # a second pass finds nothing new
    again = json.loads(env.cli("once", "--json").stdout)["alice"]
    assert [r["new"] for r in again if r["kind"] == "tracked"] == [0, 0]
    assert len(env.activities()) == 3
    status = env.status()
    assert env.folder_status(status, "alice", "Tracked/Missing")["state"] == "missing"
    assert env.folder_status(status, "alice", "Tracked/Contoso")["tracked"] == 3


def test_untrackable_files_are_shunted_and_counted(env: E2EEnv) -> None:
    one_mailbox(env, [("Tracked/Contoso", "account:contoso")])
    daemon = env.start_daemon()
    corpus = malformed_corpus()
    since = daemon.mark()
    env.drop("alice", "Tracked/Contoso", corpus["binary_png"])
    env.drop("alice", "Tracked/Contoso", corpus["empty"])
    wait_for(lambda: len(daemon.events("shunted", since=since)) == 2, what="two shunted events")
    reasons = {ln.data["reason"] for ln in daemon.events("shunted", since=since) if ln.data}
    assert reasons == {"not-a-message", "empty-message"}
    status = env.wait_status(lambda s: env.folder_status(s, "alice", "Tracked/Contoso")["shunted"] == 2)
    assert status["shunted"] == 2 and status["activities"] == 0
    # mail after them is tracked as usual
    mid = message_id_for(0, seed=71)
    env.drop("alice", "Tracked/Contoso", realistic_message(0, seed=71))
    assert env.wait_activity(mid)["regarding"] == "account:contoso"


def test_unreadable_mailbox_is_an_error_in_status_then_recovers(env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    one_mailbox(env, [("Tracked/Contoso", "account:contoso")], create_missing_folders=False)
    maildir = env.mailboxes["alice"].maildir
    maildir.rename(maildir.with_name("Maildir-away"))  # the whole Maildir is gone (unmounted, say)
    daemon = env.start_daemon()
    daemon.wait_event("mailbox-error", mailbox="alice")
    status = env.wait_status(
        lambda s: env.folder_status(s, "alice", "Tracked/Contoso")["state"] == "error", what="state error"
    )
    assert "does not exist" in env.folder_status(status, "alice", "Tracked/Contoso")["last_error"]
    assert daemon.proc.poll() is None  # the daemon keeps running and retries with back-off

    maildir.with_name("Maildir-away").rename(maildir)
    make_maildir_folder(env.folder_dir("alice", "Tracked/Contoso"))
    mid = message_id_for(0, seed=93)
    env.drop("alice", "Tracked/Contoso", realistic_message(0, seed=93))
    act = env.wait_activity(mid, timeout=15)
    assert act["regarding"] == "account:contoso"
    assert env.wait_status(lambda s: env.folder_status(s, "alice", "Tracked/Contoso")["state"] == "ok")


def test_mistyped_maildir_root_is_an_error_in_the_log_and_status_never_created(env: E2EEnv) -> None:
    """create_missing_folders makes tracked folders inside a mailbox, never the mailbox
    root: a typo in ``maildir:`` must not become an empty Maildir watched in silence."""
    env.expected_errors |= {"mailbox-error"}
    one_mailbox(env, [("Tracked/Contoso", "account:contoso")])  # create_missing_folders: true
    maildir = env.mailboxes["alice"].maildir
    shutil.rmtree(maildir)  # as if the path in the config had a typo
    daemon = env.start_daemon()
    line = daemon.wait_event("mailbox-error", mailbox="alice")
    assert "does not exist" in line.text and "never the mailbox itself" in line.text
    status = env.wait_status(
        lambda s: env.folder_status(s, "alice", "Tracked/Contoso")["state"] == "error", what="state error"
    )
    assert "does not exist" in env.folder_status(status, "alice", "Tracked/Contoso")["last_error"]
    assert "does not exist" in env.cli("status").stdout
    assert not maildir.exists() and daemon.proc.poll() is None

    maildir.mkdir()  # the admin makes the mailbox: its tracked folder is created on the next try
    mid = message_id_for(0, seed=94)
    wait_for(lambda: env.folder_dir("alice", "Tracked/Contoso").joinpath("new").is_dir(), timeout=30, what="folder")
    env.drop("alice", "Tracked/Contoso", realistic_message(0, seed=94))
    assert env.wait_activity(mid, timeout=15)["regarding"] == "account:contoso"
