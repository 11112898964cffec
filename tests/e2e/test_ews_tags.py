"""Track by tag (issue 20) with the daemon on Exchange through EWS (the fake Exchange of
tests/servers/ews): an Outlook category that a plain exchangelib client (acting as
Outlook) sets tracks the message wherever it is (a ModifiedEvent on the all-folders
stream wakes the tag pass), ``CRM:account:KEY`` sets the regarding, removing the
category does not untrack, the untrack category and the untrack folder do,
mailfiler's own ``Tracked in CRM`` category never tracks anything, a restart starts
from the stored tag cursors and a refused sync state is looked at afresh without
tracking anything twice."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import yaml
from exchangelib import DELEGATE, Account, Configuration, Credentials
from exchangelib.protocol import close_connections
from exchangelib.version import Build, Version

from tests.e2e.harness import E2EEnv, locations
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.e2e.test_ews_daemon import ALICE, KUNDER, ews_world, exchange, fake
from tests.servers.ews import EwsServer

__all__ = ["exchange"]  # the fixture, imported to be used here

#: a category change is pushed (ModifiedEvent) at once; the tag pass interval (30 s) is the safety net
TAGGED = 10.0


@pytest.fixture
def outlook(exchange: EwsServer) -> Iterator[Account]:
    """Alice's own EWS client, as Outlook: categories set with UpdateItem."""
    config = Configuration(
        service_endpoint=exchange.ews_url,
        credentials=Credentials(ALICE, "pw-alice"),
        auth_type="basic",
        version=Version(build=Build(15, 1, 2507, 6)),
    )
    yield Account(ALICE, config=config, autodiscover=False, access_type=DELEGATE)
    close_connections()


def categorise(outlook: Account, item_id: str, *names: str, remove: bool = False) -> None:
    item = next(iter(outlook.fetch(ids=[(item_id, None)], only_fields=["categories"])))
    now = list(item.categories or [])
    item.categories = [c for c in now if c not in names] if remove else [*now, *(n for n in names if n not in now)]
    item.save(update_fields=["categories"])


def tag_world(env: E2EEnv, server: EwsServer) -> None:
    ews_world(env, server)  # categories: true, mailfiler's own marks on
    config = yaml.safe_load(env.config_path.read_text(encoding="utf-8"))
    config["mailboxes"][0]["track_tags"] = {"untrack_folder": "Untrack", "interval": 30}
    env.write_config(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    for folder in ("Projekt", "Untrack"):
        server.create_folder(ALICE, folder)


def test_track_by_outlook_category_over_ews(exchange: EwsServer, outlook: Account, env: E2EEnv) -> None:
    tag_world(env, exchange)
    stranger = "<someone@elsewhere.example>"
    # categorised before the daemon ever ran: tracked at its first pass
    early = exchange.deliver(ALICE, mail(1, frm=stranger, subject="Tidigt"), "Projekt")
    categorise(outlook, early, "CRM")
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    env.wait_activity(mid(1), lambda a: locations(a) == [("alice", "Projekt")], timeout=TAGGED)

    plain = exchange.deliver(ALICE, mail(2, frm=stranger, subject="Fråga"), "Projekt")
    named = exchange.deliver(ALICE, mail(3, frm=stranger, subject="Avtal"), "Projekt")
    marked = exchange.deliver(ALICE, mail(4, frm=stranger, subject="Märkt"), "Projekt")
    categorise(outlook, marked, "Tracked in CRM", "Not tracked (see CRM)")  # mailfiler's own: never a reason
    time.sleep(1.0)
    t0 = time.monotonic()
    categorise(outlook, plain, "CRM")
    env.wait_activity(mid(2), lambda a: locations(a) == [("alice", "Projekt")], timeout=TAGGED)
    latency = time.monotonic() - t0
    categorise(outlook, named, "CRM:account:contoso")
    act = env.wait_activity(mid(3), timeout=TAGGED)
    assert (act["regarding"], act["correlation"]) == ("account:contoso", "tag")

    # moved into a tracked folder: the same activity, re-linked there, not tracked twice
    moved = exchange.move_item(plain, fake(KUNDER))
    env.wait_activity(mid(2), lambda a: ("alice", KUNDER) in locations(a), timeout=TAGGED)
    # the category removed: nothing untracked
    categorise(outlook, moved, "CRM", remove=True)

    # the untrack category (removing CRM alone never untracks)
    categorise(outlook, early, "CRM", remove=True)
    time.sleep(1.0)
    assert next(a for a in env.activities() if a["message_id"] == mid(1))["untracked"] is None
    categorise(outlook, early, "CRM-untrack")
    act = env.wait_activity(mid(1), lambda a: a["untracked"] is not None, timeout=TAGGED)
    assert act["untracked"]["reason"] == "untrack tag CRM-untrack in Projekt"
    assert exchange.item(early).folder.name == "Projekt"  # the mail is not touched

    # the untrack folder
    exchange.move_item(named, "Untrack")
    act = env.wait_activity(mid(3), lambda a: a["untracked"] is not None, timeout=TAGGED)
    assert act["untracked"]["reason"] == "moved to the untrack folder Untrack"

    time.sleep(2.0)
    acts = {a["message_id"]: a for a in env.activities()}
    assert mid(4) not in acts, "mailfiler's own categories tracked a message"
    assert acts[mid(2)]["untracked"] is None and acts[mid(2)]["regarding"] == "account:akesson"
    assert len(acts) == 3
    assert latency < 5.0

    # a restart: categories set meanwhile are tracked; nothing is tracked twice
    daemon.terminate()
    late = exchange.deliver(ALICE, mail(5, frm=stranger, subject="Sent"), "Projekt")
    categorise(outlook, late, "crm")
    daemon = env.start_daemon()
    env.wait_activity(mid(5), timeout=TAGGED)
    daemon.wait_event("watching")
    assert not daemon.events("tracked", message_id=mid(1)) and not daemon.events("tracked", message_id=mid(2))

    # every sync state refused: the tag pass looks afresh, and tracks nothing twice
    since = len(daemon.lines)
    exchange.invalidate_sync_states(ALICE)
    again = exchange.deliver(ALICE, mail(6, frm=stranger, subject="Igen"), "Projekt")
    categorise(outlook, again, "CRM")
    env.wait_activity(mid(6), timeout=TAGGED)
    time.sleep(1.0)
    assert len(env.activities()) == 5
    for n in (1, 2, 3, 5):
        assert not daemon.events("tracked", since=since, message_id=mid(n)), f"message {n} tracked again"
