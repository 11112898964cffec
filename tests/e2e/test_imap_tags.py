"""Track by tag (issue 20) with the daemon on a real Dovecot: a keyword set by
another IMAP client tracks the message wherever it is (pushed by NOTIFY
FlagChange), ``CRM:account:KEY`` sets the regarding, the untrack keyword and
the untrack folder untrack it without touching the mail, mailfiler's own
``$Tracked`` marks never track anything, and a restart starts from the stored
tag cursors."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.e2e.harness import E2EEnv, locations
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.e2e.test_imap_daemon import KUNDER, imap_world
from tests.e2e.test_imap_keywords import flags
from tests.servers.dovecot import AdminClient, ImapUser

pytestmark = pytest.mark.dovecot

#: a flag change is pushed (NOTIFY FlagChange) within about a second; the tag pass interval is the safety net
TAGGED = 10.0


def keyword(admin: AdminClient, folder: str, uid: int, *names: str, op: str = "+FLAGS") -> None:
    admin.select(folder)
    admin._ok(admin.imap.uid("STORE", str(uid), op, f"({' '.join(names)})"), "STORE keywords")


def tag_world(env: E2EEnv, user: ImapUser) -> None:
    imap_world(env, user)
    config = yaml.safe_load(env.config_path.read_text(encoding="utf-8"))
    box = config["mailboxes"][0]
    box["imap"]["keywords"] = True  # mailfiler's own marks are on: they must never track anything
    box["track_tags"] = {"untrack_folder": "Untrack", "interval": 30}
    env.write_config(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    with user.client() as admin:
        for folder in (KUNDER, "Tracked/Contoso", "Projekt", "Untrack"):
            admin.create(folder)


def test_track_by_tag_over_imap(imap_user: ImapUser, env: E2EEnv) -> None:
    tag_world(env, imap_user)
    with imap_user.client() as admin:
        # tagged before the daemon ever ran: tracked at its first pass
        early = admin.append("Projekt", mail(1, frm="<someone@elsewhere.example>", subject="Tidigt"))
        keyword(admin, "Projekt", early, "CRM")
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    env.wait_activity(mid(1), lambda a: locations(a) == [("alice", "Projekt")], timeout=TAGGED)

    with imap_user.client() as admin:
        # not tracked by auto-tracking (nobody known, no reply), then tagged by the user
        plain = admin.append("Projekt", mail(2, frm="<someone@elsewhere.example>", subject="Fråga"))
        named = admin.append("Projekt", mail(3, frm="<someone@elsewhere.example>", subject="Avtal"))
        # mailfiler's own mark keyword, set by hand: never a reason to track
        marked = admin.append("Projekt", mail(4, frm="<someone@elsewhere.example>", subject="Märkt"))
        keyword(admin, "Projekt", marked, "$Tracked", "$TrackFailed")
        time.sleep(1.0)  # auto-tracking has judged them (not tracked)
        t0 = time.monotonic()
        keyword(admin, "Projekt", plain, "CRM")
        env.wait_activity(mid(2), lambda a: locations(a) == [("alice", "Projekt")], timeout=TAGGED)
        latency = time.monotonic() - t0
        keyword(admin, "Projekt", named, "CRM:account:contoso")
        act = env.wait_activity(mid(3), timeout=TAGGED)
        assert (act["regarding"], act["correlation"]) == ("account:contoso", "tag")
        # the tracked mail shows $Tracked (a flag change mailfiler makes itself, pushed back to it)
        assert "$Tracked" in flags(imap_user, "Projekt")[plain]

        # a tagged message moved into a tracked folder: the same activity, re-linked there
        moved = admin.move("Projekt", plain, KUNDER)
        act = env.wait_activity(mid(2), lambda a: ("alice", KUNDER) in locations(a), timeout=TAGGED)
        assert act["regarding"] == "account:akesson"

        # Set Regarding on it afterwards: the tracked folder's own record wins (as in Dynamics)
        keyword(admin, KUNDER, moved, "CRM:account:contoso")

        # the untrack keyword: untracked, the mail untouched; removing CRM alone never untracks
        keyword(admin, "Projekt", early, "CRM", op="-FLAGS")
        keyword(admin, "Projekt", early, "CRM-untrack")
        act = env.wait_activity(mid(1), lambda a: a["untracked"] is not None, timeout=TAGGED)
        assert act["untracked"]["reason"] == "untrack tag CRM-untrack in Projekt"
        assert act["locations"] == []
        assert admin.uids("Projekt").count(early) == 1

        # the untrack folder
        admin.move("Projekt", named, "Untrack")
        act = env.wait_activity(mid(3), lambda a: a["untracked"] is not None, timeout=TAGGED)
        assert act["untracked"]["reason"] == "moved to the untrack folder Untrack"

    time.sleep(2.0)
    acts = {a["message_id"]: a for a in env.activities()}
    assert mid(4) not in acts, "mailfiler's own mark keywords tracked a message"
    assert acts[mid(2)]["regarding"] == "account:akesson"
    assert len(acts) == 3
    assert latency < TAGGED
    # status: the tags followed, and what they untracked (mid 1 and 3; mid 2 now sits in a tracked folder)
    tags = next(mb for mb in env.status()["mailboxes"] if mb["name"] == "alice")["tags"]
    assert tags["folders"] >= 1 and tags["last_change"] is not None
    assert (tags["tracked"], tags["untracked"]) == (0, 2)
    text = env.cli("status", config=env.reader_config).stdout
    assert "track by tag (alice):" in text and "0 messages tracked in other folders, 2 activities untracked" in text

    # a restart: tags set meanwhile are tracked; nothing is tracked twice
    daemon.terminate()
    with imap_user.client() as admin:
        late = admin.append("Projekt", mail(5, frm="<someone@elsewhere.example>", subject="Sent"))
        keyword(admin, "Projekt", late, "crm")
    daemon = env.start_daemon()
    env.wait_activity(mid(5), timeout=TAGGED)
    daemon.wait_event("watching")
    time.sleep(1.0)
    assert len(env.activities()) == 4
    assert not daemon.events("tracked", message_id=mid(1))
