"""The daemon on a Microsoft 365 mailbox through the Graph fake (Microsoft 365 cannot be
reached from here): configured with `graph:`, it tracks mail delivered into a tracked
folder within about a second of polling, follows moves (immutable ids; one activity),
keeps tracking a folder the user renames in Outlook, shows a deleted folder and a
revoked consent in `status` while the rest goes on, and never marks mail read."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import E2EEnv, locations, wait_for
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.graph.helpers import APP_ID, SECRET, UPN, tenant
from tests.graph.world import graph_block
from tests.servers.graph import GraphFake
from tests.servers.tls import Tls

KUNDER = "INBOX/Kunder/Åkesson AB"
CONTOSO = "INBOX/Tracked/Contoso"


@pytest.fixture
def graph(graph_tls: Tls) -> Iterator[GraphFake]:
    with GraphFake(graph_tls) as fake:
        tenant(fake, [KUNDER, CONTOSO])
        yield fake


def graph_world(env: E2EEnv, graph: GraphFake, **extra: object) -> None:
    spec = env.add_mailbox("adele", UPN, [(KUNDER, "account:akesson"), (CONTOSO, "account:contoso")])
    spec.extra = {"graph": graph_block(graph, env.root, **extra)}
    env.write_config()


def test_tracks_delivery_within_a_second_moves_and_renames(graph: GraphFake, env: E2EEnv) -> None:
    graph_world(env, graph, categories=True)
    daemon = env.start_daemon()
    daemon.wait_event("watching")

    started = time.monotonic()
    msg = graph.deliver(UPN, KUNDER, mail(1, frm="<sven@akesson.se>", subject="Offert"))
    act = env.wait_activity(mid(1), lambda a: a["regarding"] == "account:akesson", timeout=10)
    took = time.monotonic() - started
    assert locations(act) == [("adele", KUNDER)]
    assert took < 3.0, f"tracked {took:.2f} s after delivery"  # ~1 s of polling, plus the CLI's own start

    # Outlook's move: the same immutable id in another folder; re-linked, one activity
    graph.move(UPN, msg, CONTOSO)
    act = env.wait_activity(mid(1), lambda a: locations(a) == [("adele", CONTOSO)], timeout=10)
    assert act["regarding"] == "account:contoso"

    # the user renames a tracked folder in Outlook: still tracked under its configured path
    graph.rename_folder(UPN, KUNDER, "Åkesson & Söner AB")
    graph.deliver(UPN, "INBOX/Kunder/Åkesson & Söner AB", mail(2, frm="<sven@akesson.se>", subject="Faktura"))
    act = env.wait_activity(mid(2), timeout=10)
    assert locations(act) == [("adele", KUNDER)] and act["regarding"] == "account:akesson"
    time.sleep(1.5)  # a few polls: the renamed folder is not also watched under its new name
    act = env.activity(mid(2))
    assert act is not None and locations(act) == [("adele", KUNDER)]

    # categories show it in Outlook; nothing was marked read
    wait_for(lambda: "Tracked in CRM" in msg.categories, timeout=10, what="the category on the message")
    box = graph.mailbox(UPN)
    assert not any(m.is_read for m in box.messages.values())
    status = env.status()
    mb = next(m for m in status["mailboxes"] if m["name"] == "adele")
    assert mb["backend"] == "graph" and mb["location"] == f"graph://{UPN}@{graph.tenant.id}"
    assert SECRET not in str(status) + daemon.log_tail(10_000)


def test_deleted_folder_is_a_status_and_the_rest_goes_on(graph: GraphFake, env: E2EEnv) -> None:
    env.expected_errors |= {"folder-missing", "folder-error"}
    graph_world(env, graph)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    graph.delete_folder(UPN, KUNDER)
    graph.deliver(UPN, CONTOSO, mail(3))
    env.wait_activity(mid(3), timeout=10)
    assert daemon.pid and daemon.events() is not None


def test_revoked_consent_shows_in_status_and_backs_off(graph: GraphFake, env: E2EEnv) -> None:
    env.expected_errors |= {"mailbox-error"}
    graph_world(env, graph)
    graph.identity.revoke_consent(APP_ID)
    daemon = env.start_daemon()
    wait_for(lambda: len(daemon.events("mailbox-error")) >= 2, timeout=60, what="two failed attempts")
    before = len(graph.server.requests) if hasattr(graph.server, "requests") else None
    time.sleep(3)
    errors = daemon.events("mailbox-error")
    assert len(errors) <= 4, "no tight loop"
    status = env.status()
    mb = next(m for m in status["mailboxes"] if m["name"] == "adele")
    text = str(mb)
    assert "login-refused" in text or "consent" in text.lower(), text
    del before

    # consent granted again: the daemon recovers by itself
    graph.identity.grant_consent(APP_ID)
    graph.deliver(UPN, CONTOSO, mail(4))
    env.wait_activity(mid(4), timeout=90)


def test_expired_delta_links_and_throttling_lose_nothing_and_duplicate_nothing(graph: GraphFake, env: E2EEnv) -> None:
    from tests.servers.graph import faults

    graph_world(env, graph)
    for n in range(20, 30):
        graph.deliver(UPN, CONTOSO, mail(n))
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    env.wait_activities(lambda acts: len(acts) == 10, timeout=30, what="the backfill")

    # every delta link Graph gave out is forgotten (the worker's cursors and the watcher's):
    # the folder is listed again and diffed against the store; nothing is tracked twice
    graph.expire_delta_tokens(UPN)
    graph.deliver(UPN, CONTOSO, mail(30))
    env.wait_activity(mid(30), timeout=15)

    # throttled for a while: what arrives meanwhile is tracked after, and the daemon waits as told
    counted: list[int] = []
    record = graph.server.record

    def counting(request: object) -> None:
        counted.append(1)
        record(request)  # type: ignore[arg-type]

    graph.server.record = counting  # type: ignore[method-assign]
    until = time.time() + 6
    faults.throttle_until(graph, until, retry_after=2)
    for n in range(31, 36):
        graph.deliver(UPN, KUNDER, mail(n, frm="<sven@akesson.se>"))
    acts = env.wait_activities(lambda acts: len(acts) == 16, timeout=40, what="mail that came while throttled")
    during = len(counted)
    assert during < 60, f"{during} requests while throttled for 6 s and catching up"
    assert sorted(a["message_id"] for a in acts) == sorted(mid(n) for n in range(20, 36))
    assert all(len(a["locations"]) == 1 for a in acts)


def test_a_folder_renamed_while_the_daemon_was_stopped_stays_tracked(graph: GraphFake, env: E2EEnv) -> None:
    graph_world(env, graph)
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    graph.deliver(UPN, KUNDER, mail(5, frm="<sven@akesson.se>", subject="Offert"))
    env.wait_activity(mid(5), timeout=10)
    rc, _ = daemon.terminate()
    assert rc == 0

    # while it is stopped the user renames the folder in Outlook, and mail arrives there
    graph.rename_folder(UPN, KUNDER, "Åkesson & Söner AB")
    graph.deliver(UPN, "INBOX/Kunder/Åkesson & Söner AB", mail(6, frm="<sven@akesson.se>", subject="Faktura"))
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    act = env.wait_activity(mid(6), timeout=15)
    assert locations(act) == [("adele", KUNDER)] and act["regarding"] == "account:akesson"
    # tracked by its id, not missing: no folder error, and new mail keeps coming in
    graph.deliver(UPN, "INBOX/Kunder/Åkesson & Söner AB", mail(7, frm="<sven@akesson.se>", subject="Påminnelse"))
    act = env.wait_activity(mid(7), timeout=10)
    assert locations(act) == [("adele", KUNDER)]
    assert not daemon.events("folder-missing") and not daemon.events("folder-error")
