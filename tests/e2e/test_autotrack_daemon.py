"""Auto-tracking through the running daemon on a Maildir: replies land in the
Inbox or wherever an inbox rule puts them and are tracked in their thread;
other Inbox mail is judged once and left alone; never-track senders and
auto-replies are skipped; a rule tracks a case number and creates the
account of a new client folder; mail already in a folder when auto-tracking
first sees it is not tracked retroactively."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from tests.e2e.harness import E2EEnv, locations, wait_for
from tests.mailgen import make_maildir_folder

RULES = """\
rules:
  - name: private-folders
    when: {folder: 'Private/**'}
    then: skip
  - name: case-number-in-subject
    when: {subject: '(?P<number>CAS-\\d{5})'}
    then:
      regarding: {entity: case, key: '{number}'}
  - name: client-folders
    when: {folder: 'Clients/{account}'}
    then:
      regarding: {entity: account, name: '{account}', create: true}
  - name: track-contoso-autoreplies
    when: {all: [{auto_submitted: true}, {from_domain: fabrikam.com}]}
    then: track
"""


def mail(
    n: int,
    *,
    frm: str = "Bob Smith <bob@contoso.com>",
    to: str = "Alice <alice@example.com>",
    subject: str = "Quote for the new printers",
    reply_to: str | None = None,
    headers: tuple[str, ...] = (),
) -> bytes:
    lines = [
        f"From: {frm}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {format_datetime(datetime(2026, 11, 2, 9, n % 60, tzinfo=UTC))}",
        f"Message-ID: {mid(n)}",
        *([f"In-Reply-To: {reply_to}", f"References: {reply_to}"] if reply_to else []),
        *headers,
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\n".join(lines) + "\n\nHello,\nsee below.\n").encode()


def mid(n: int) -> str:
    return f"<auto-{n}@test.example>"


def world(env: E2EEnv, *, policy: str = "replies", **extra: object) -> None:
    (env.root / "rules.yaml").write_text(RULES, encoding="utf-8")
    env.rules = ["rules.yaml"]
    spec = env.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso")])
    spec.extra = {"auto_track": {"policy": policy}, "never_track": ["@private.example"], **extra}
    env.extra = {"tracking": {"never_track": ["noreply@contoso.com"]}}
    for folder in ("Lists/Project", "Trash", "Private/Family"):
        make_maildir_folder(env.folder_dir("alice", folder))
    env.write_config()


def not_tracked(env: E2EEnv, daemon, message_id: str) -> None:
    """The daemon judged the message (debug-level log is off: wait for status)."""

    def judged() -> bool:
        return env.activity(message_id) is None and _skipped_total(env) > 0

    wait_for(judged, what=f"{message_id} judged and not tracked")


def _skipped_total(env: E2EEnv) -> int:
    return sum(f["skipped"] for mb in env.status()["mailboxes"] for f in mb["watched"])


def watched(env: E2EEnv, folder: str) -> dict:
    mb = next(m for m in env.status()["mailboxes"] if m["name"] == "alice")
    return next(f for f in mb["watched"] if f["folder"] == folder)


def test_replies_are_tracked_wherever_they_land_and_other_mail_is_not(env: E2EEnv) -> None:
    world(env)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    env.drop("alice", "Tracked/Contoso", mail(1))
    env.wait_activity(mid(1), lambda a: a["regarding"] == "account:contoso")

    # a reply in the Inbox: tracked in the thread
    env.drop("alice", "INBOX", mail(2, subject="Re: Quote for the new printers", reply_to=mid(1)))
    act = env.wait_activity(mid(2))
    assert (act["regarding"], act["correlation"]) == ("account:contoso", "in-reply-to")
    assert locations(act) == [("alice", "INBOX")]
    tracked = daemon.wait_event("tracked", message_id=mid(2))
    assert tracked.data is not None and "policy replies" in tracked.data["msg"]

    # a reply that an inbox rule moved into another folder: tracked too
    env.drop("alice", "Lists/Project", mail(3, subject="Re: Re: Quote", reply_to=mid(2)))
    act = env.wait_activity(mid(3))
    assert (act["regarding"], act["correlation"]) == ("account:contoso", "in-reply-to")

    # unrelated Inbox mail: judged once, not tracked; Trash is never read
    env.drop("alice", "INBOX", mail(4, frm="Carol <carol@adatum.com>", subject="Lunch?"))
    env.drop("alice", "Trash", mail(5, subject="Re: Quote", reply_to=mid(1)))
    wait_for(lambda: watched(env, "INBOX")["skipped"] == 1, what="the Inbox message judged")
    assert env.activity(mid(4)) is None and env.activity(mid(5)) is None
    assert watched(env, "INBOX")["tracked"] == 1
    assert "Trash" not in {f["folder"] for mb in env.status()["mailboxes"] for f in mb["watched"]}

    # a restart judges nothing twice and tracks nothing twice
    daemon.terminate()
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    # `once` is refused beside a running daemon (service/instancelock.py): stop it first
    daemon.terminate()
    res = env.cli("once", "--json")
    assert res.returncode == 0
    assert all(r["new"] == 0 and r["skipped"] == 0 for r in json.loads(res.stdout)["alice"])
    assert len(env.activities()) == 3
    assert watched(env, "INBOX")["skipped"] == 1


def test_mail_already_there_when_auto_tracking_starts_is_left_alone(env: E2EEnv) -> None:
    world(env)
    env.drop("alice", "Tracked/Contoso", mail(1))
    # already in the Inbox before mailfiler first looks: a reply, but old mail
    env.drop("alice", "INBOX", mail(2, subject="Re: Quote", reply_to=mid(1)))
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    baseline = daemon.wait_event("watch-baseline", folder="INBOX")
    assert baseline.data is not None and baseline.data["count"] == 1
    env.wait_activity(mid(1))
    assert env.activity(mid(2)) is None
    # new mail after that is judged as usual
    env.drop("alice", "INBOX", mail(3, subject="Re: Quote", reply_to=mid(1)))
    assert env.wait_activity(mid(3))["correlation"] == "in-reply-to"
    assert env.activity(mid(2)) is None


def test_never_track_lists_and_auto_replies(env: E2EEnv) -> None:
    world(env)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    env.drop("alice", "Tracked/Contoso", mail(1))
    env.wait_activity(mid(1))

    # replies to a tracked thread, each ruled out by something else
    cases = {
        10: mail(10, frm="Mum <mum@private.example>", subject="Re: Quote", reply_to=mid(1)),  # mailbox list
        11: mail(11, frm="<noreply@contoso.com>", subject="Re: Quote", reply_to=mid(1)),  # global list
        12: mail(  # an out-of-office reply
            12, subject="Automatic reply: Quote", reply_to=mid(1), headers=("Auto-Submitted: auto-replied",)
        ),
        13: mail(  # a bounce
            13, frm="MAILER-DAEMON <mailer-daemon@example.com>", subject="Undeliverable", reply_to=mid(1)
        ),
        14: mail(14, subject="Private reply", reply_to=mid(1)),  # into Private/**: a rule says skip
    }
    for n, data in cases.items():
        env.drop("alice", "Private/Family" if n == 14 else "INBOX", data)
    # an auto-reply a rule asks for is tracked
    env.drop(
        "alice",
        "INBOX",
        mail(15, frm="<helpdesk@fabrikam.com>", subject="Ticket received", headers=("Auto-Submitted: auto-replied",)),
    )
    act = env.wait_activity(mid(15))
    assert act["correlation"] is None  # tracked by rule, no regarding: the rule only says track

    def all_judged() -> bool:
        status = env.status()
        skipped = {f["folder"]: f["skipped"] for mb in status["mailboxes"] for f in mb["watched"]}
        return skipped.get("INBOX") == 4 and skipped.get("Private/Family") == 1

    wait_for(all_judged, what="five messages judged")
    assert all(env.activity(mid(n)) is None for n in cases)

    # a never-track sender's mail that the user files into a tracked folder is tracked:
    # filing is explicit, the list only governs auto-tracking
    env.drop("alice", "Tracked/Contoso", mail(16, frm="Mum <mum@private.example>", subject="Family quote"))
    assert env.wait_activity(mid(16))["regarding"] == "account:contoso"


def test_rules_track_case_numbers_and_new_client_folders(env: E2EEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFILER_DISCOVER_EVERY", "0.3")
    world(env)
    daemon = env.start_daemon()
    daemon.wait_event("watching")

    # a case number in the subject: tracked from the Inbox, regarding the case
    env.drop("alice", "INBOX", mail(20, frm="<carol@adatum.com>", subject="About CAS-01001 again"))
    act = env.wait_activity(mid(20))
    assert (act["regarding"], act["correlation"]) == ("case:CAS-01001", "rule:case-number-in-subject")

    # a new client folder made while the daemon runs: its first message creates the account
    folder = "Clients/Northwind Traders"
    since = daemon.mark()
    make_maildir_folder(env.folder_dir("alice", folder))
    daemon.wait_event("watch-changed", since=since)
    env.drop("alice", folder, mail(21, frm="<nancy@northwind.example>", subject="Hello"))
    act = env.wait_activity(mid(21))
    assert act["correlation"] == "rule:client-folders"
    assert act["regarding"].startswith("account:")
    created = daemon.wait_event("record-created")
    assert created.data is not None and created.data["record"] == act["regarding"]
    records = env.cli("records", "list", "--json")
    assert any(r["name"] == "Northwind Traders" for r in json.loads(records.stdout))


@pytest.mark.parametrize(
    ("policy", "tracked"),
    [("none", {30}), ("replies", {30, 31}), ("known", {30, 31, 32}), ("all", {30, 31, 32, 33})],
)
def test_policies(env: E2EEnv, policy: str, tracked: set[int]) -> None:
    """none < replies < known < all, through `mailfiler once` (a daemon-less pass)."""
    world(env, policy=policy)
    env.drop("alice", "Tracked/Contoso", mail(1))
    assert env.cli("once").returncode == 0  # first sight of the Inbox: nothing there yet
    inbox = {
        30: mail(30, frm="<carol@adatum.com>", subject="Re: CAS-01001"),  # a rule tracks it
        31: mail(31, frm="<carol@adatum.com>", subject="Re: Quote", reply_to=mid(1)),  # a reply
        32: mail(32, subject="Unrelated, from a contact"),  # bob@contoso.com is a contact
        33: mail(33, frm="<carol@adatum.com>", subject="From a stranger"),
    }
    for data in inbox.values():
        env.drop("alice", "INBOX", data)
    assert env.cli("once").returncode == 0
    got = {n for n in inbox if env.activity(mid(n)) is not None}
    assert got == tracked
