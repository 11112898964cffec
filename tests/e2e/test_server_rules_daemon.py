"""Inbox rules on the server, end to end against a real Dovecot with Pigeonhole:
`mailfiler rules server` lists and marks the rules, `rules server apply
--dry-run` shows the change and writes nothing, the daemon writes the rule of a
tracked folder's route: and mail delivered over LMTP that the rule files into
the folder is tracked within about a second (the drop-to-tracked latency over
50 messages is printed), the user's own rules survive, edits on the server are
logged, and `status` shows a count and the warnings."""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import time
from typing import Any

import pytest

from mailfiler.sources.sieve.managesieve import ManageSieve, SieveSettings
from tests.e2e.harness import E2EEnv
from tests.servers.dovecot import ImapUser, require_sieve

pytestmark = pytest.mark.dovecot

USER_SCRIPT = """\
require ["fileinto"];
# rule:[Lists]
if exists "list-id" { fileinto "Lists"; }
# rule:[No Contoso newsletters]
if allof (address :domain :is "from" "contoso.com", header :contains "subject" "newsletter") { discard; }
# rule:[Old archive]
if header :contains "subject" "archive" { fileinto "Archive/2019"; }
"""
N_LATENCY = 50


def sieve(user: ImapUser) -> SieveSettings:
    assert user.server.tls is not None
    return SieveSettings(
        host="127.0.0.1",
        port=user.server.sieve_port,
        username=user.name,
        password=user.password,
        ca_file=str(user.server.tls.ca_file),
        timeout=10,
    )


def put(user: ImapUser, name: str, text: str, *, active: bool = False) -> None:
    async def go() -> None:
        async with ManageSieve(sieve(user)) as ms:
            await ms.put_script(name, text)
            if active:
                await ms.set_active(name)

    asyncio.run(go())


def scripts(user: ImapUser) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with ManageSieve(sieve(user)) as ms:
            return {name: await ms.get_script(name) for name, _ in await ms.list_scripts()}

    return asyncio.run(go())


def world(env: E2EEnv, user: ImapUser, *, interval: float = 300) -> None:
    require_sieve(user.server)
    secret = env.root / "imap.password"
    secret.write_text(user.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    kw = user.settings_kwargs("starttls")
    imap: dict[str, Any] = {
        "host": kw["host"],
        "port": kw["port"],
        "username": kw["username"],
        "password_file": str(secret),
        "tls": "starttls",
        "ca_file": kw["ca_file"],
        "timeout": 10,
    }
    spec = env.add_mailbox("alice", "alice@example.com", [("Tracked/Contoso", "account:contoso")])
    spec.folders[0]["route"] = {"from_domains": ["contoso.com"]}
    spec.extra = {
        "imap": imap,
        "server_rules": {"managesieve": {"port": user.server.sieve_port}, "interval": interval},
    }
    env.write_config()
    with user.client() as admin:
        for folder in ("Tracked/Contoso", "Lists"):
            admin.create(folder)
    put(user, "roundcube", USER_SCRIPT, active=True)


def message(n: int, frm: str = "bob@contoso.com", subject: str = "Quote") -> bytes:
    return (
        f"From: {frm}\r\nTo: alice@example.com\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <sr-{n}@test.example>\r\nDate: Mon, 2 Nov 2026 09:00:00 +0000\r\n\r\nHello {n}\r\n"
    ).encode()


def test_rules_server_lists_marks_and_dry_run_writes_nothing(imap_user: ImapUser, env: E2EEnv) -> None:
    world(env, imap_user)
    before = scripts(imap_user)
    out = env.cli("rules", "server", "apply", "--dry-run")
    assert "would create rule mailfiler: Tracked/Contoso" in out.stdout
    assert "would include mailfiler's script from roundcube" in out.stdout
    assert 'fileinto "Tracked/Contoso";' in out.stdout
    assert scripts(imap_user) == before

    listing = env.cli("rules", "server", "--json")
    [data] = __import__("json").loads(listing.stdout)
    marks = {r["name"]: [m["kind"] for m in r["marks"]] for r in data["rules"]}
    assert marks == {
        "Lists": [],
        "No Contoso newsletters": ["past-tracking"],
        "Old archive": ["missing-folder"],
    }
    assert data["scripts"] == [
        {"name": "roundcube", "state": "active", "owned": False, "broken": None, "size": len(USER_SCRIPT)}
    ]
    text = env.cli("rules", "server").stdout
    assert "PAST TRACKING" in text and "MISSING FOLDER" in text

    env.cli("rules", "server", "apply")
    [data] = __import__("json").loads(env.cli("rules", "server", "--json").stdout)
    ours = next(r for r in data["rules"] if r["owned"])
    assert ours["name"] == "mailfiler: Tracked/Contoso"
    assert [m["kind"] for m in ours["marks"]] == ["tracked"]
    assert "in step" in env.cli("rules", "server", "apply").stdout

    # a Maildir mailbox has no server rules: a clear error
    res = env.cli("rules", "server", "--mailbox", "nobody", check=False)
    assert res.returncode == 66 and "no mailbox named" in res.stderr


def test_daemon_writes_the_route_and_tracks_what_it_files_within_a_second(
    imap_user: ImapUser, env: E2EEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    world(env, imap_user, interval=5)
    daemon = env.start_daemon()
    daemon.wait_event("server-rules-applied", timeout=30)
    daemon.wait_event("watching", timeout=30)
    assert 'include :personal :optional "mailfiler";' in scripts(imap_user)["roundcube"]

    latencies = []
    with sqlite3.connect(f"file:{env.db_path}?mode=ro", uri=True, timeout=5) as db:
        for n in range(N_LATENCY):
            imap_user.deliver(message(n))  # returns once Dovecot has filed it (LMTP is synchronous)
            t0 = time.monotonic()
            deadline = t0 + 30
            while not db.execute("SELECT 1 FROM activity WHERE message_id = ?", (f"<sr-{n}@test.example>",)).fetchone():
                assert time.monotonic() < deadline, f"message {n} not tracked within 30 s\n{daemon.log_tail()}"
                time.sleep(0.005)
            latencies.append(time.monotonic() - t0)
    latencies.sort()
    median = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    with capsys.disabled():
        print(
            f"\nrule-filed drop-to-tracked latency over {N_LATENCY} LMTP deliveries:"
            f" median {median * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
    assert median < 1.5, latencies
    acts = env.activities()
    assert len(acts) == N_LATENCY
    assert all(a["regarding"] == "account:contoso" for a in acts)
    assert {(loc["folder"]) for a in acts for loc in a["locations"]} == {"Tracked/Contoso"}

    # the user edits their rules on the server: the daemon logs it on its next read
    since = daemon.mark()
    user_text = scripts(imap_user)["roundcube"]
    put(
        imap_user,
        "roundcube",
        user_text + '# rule:[Fabrikam]\nif address :domain :is "from" "fabrikam.com" { keep; }\n',
    )
    changed = daemon.wait_event("server-rules-changed", since=since, timeout=20)
    assert changed.data is not None and changed.data["added"] == "Fabrikam"

    status = env.status()
    [row] = status["server_rules"]
    assert (row["mailbox"], row["rules"], row["owned"], row["into_tracked"]) == ("alice", 6, 1, 1)
    # mailfiler's rule files all of contoso.com's mail before the user's discard: no warning for it now
    assert [w.split(":")[0] for w in row["warnings"]] == ["rule 'Old archive' (roundcube"]
    text = env.cli("status").stdout
    assert "inbox rules on the server" in text

    # the route goes from the config: the daemon deletes mailfiler's rule, the user's stay
    since = daemon.mark()
    env.mailboxes["alice"].folders[0].pop("route")
    env.write_config()
    daemon.wait_event("server-rules-applied", since=since, timeout=20)
    after = scripts(imap_user)
    assert "mailfiler" not in after
    assert "# rule:[Fabrikam]" in after["roundcube"] and "# rule:[Lists]" in after["roundcube"]


def test_daemon_reports_a_broken_script_and_goes_on_tracking(imap_user: ImapUser, env: E2EEnv) -> None:
    world(env, imap_user, interval=5)
    broken = 'require "fileinto";\nfileinot "Lists";\n'  # the server refuses it; only a shell puts it there
    imap_user.write_sieve_file("roundcube", broken, active=True)
    env.expected_errors.add("server-rules-error")
    daemon = env.start_daemon()
    err = daemon.wait_event("server-rules-error", timeout=30)
    assert "active script roundcube is broken" in err.text and "does not write to it" in err.text
    daemon.wait_event("watching", timeout=30)
    # filing still works: what lands in the tracked folder is tracked
    with imap_user.client() as admin:
        admin.append("Tracked/Contoso", message(1))
    env.wait_activity("<sr-1@test.example>", timeout=25)
    [row] = env.wait_status(lambda s: bool(s["server_rules"]), what="server rules in status")["server_rules"]
    assert "is broken" in row["error"]
    assert (imap_user.sieve_dir / "roundcube.sieve").read_text() == broken
    assert "mailfiler" not in scripts(imap_user)
    # said once, not at every interval
    time.sleep(6)
    assert len(daemon.events("server-rules-error")) == 1
