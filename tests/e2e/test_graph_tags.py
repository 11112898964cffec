"""Track by tag (issue 20) with the daemon on Microsoft 365 through the Graph fake: an
Outlook category that a plain httpx client PATCHes onto a message (as Outlook on the
web does) tracks it wherever it is (the adaptive polling of the watched folders sees
the change and wakes the tag pass), ``CRM:account:KEY`` sets the regarding, removing
the category does not untrack, the untrack category and the untrack folder do,
mailfiler's own ``Tracked in CRM`` category never tracks anything, a restart starts
from the stored tag cursors and an expired delta link is looked at afresh without
tracking anything twice."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.harness import E2EEnv, locations
from tests.e2e.test_autotrack_daemon import mail, mid
from tests.e2e.test_graph_daemon import KUNDER, graph, graph_world
from tests.graph.helpers import APP_ID, SECRET, UPN
from tests.servers.graph import GraphFake

__all__ = ["graph"]  # the fixture, imported to be used here

#: the watched folders are polled every 0.1-0.4 s; the tag pass interval (30 s) is the safety net
TAGGED = 10.0


@pytest.fixture
def outlook(graph: GraphFake) -> Iterator[httpx.Client]:
    """An httpx client on the mailbox, as Outlook on the web: categories PATCHed."""
    assert graph.tls is not None
    verify = ssl.create_default_context(cafile=str(graph.tls.ca_file))
    resp = httpx.post(f"{graph.authority}/oauth2/v2.0/token", verify=verify, timeout=10, data={
        "grant_type": "client_credentials", "client_id": APP_ID, "client_secret": SECRET,
        "scope": "https://graph.microsoft.com/.default",
    })  # fmt: skip
    resp.raise_for_status()
    headers = {"Authorization": f"Bearer {resp.json()['access_token']}"}
    base = f"{graph.url}/v1.0/users/{graph.mailbox(UPN).id}"
    with httpx.Client(base_url=base, verify=verify, headers=headers, timeout=10) as client:
        yield client


def categorise(outlook: httpx.Client, msg: Any, *names: str, remove: bool = False) -> None:
    now = outlook.get(f"/messages/{msg.id}", params={"$select": "categories"}).json()["categories"]
    new = [c for c in now if c not in names] if remove else [*now, *(n for n in names if n not in now)]
    resp = outlook.patch(f"/messages/{msg.id}", json={"categories": new})
    assert resp.status_code == 200, resp.text


def tag_world(env: E2EEnv, graph: GraphFake) -> None:
    graph_world(env, graph, categories=True)  # mailfiler's own marks on
    config = yaml.safe_load(env.config_path.read_text(encoding="utf-8"))
    config["mailboxes"][0]["track_tags"] = {"untrack_folder": "Untrack", "interval": 30}
    env.write_config(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    for folder in ("Projekt", "Untrack"):
        graph.make_folder(UPN, folder)


def test_track_by_outlook_category_over_graph(graph: GraphFake, outlook: httpx.Client, env: E2EEnv) -> None:
    tag_world(env, graph)
    stranger = "<someone@elsewhere.example>"
    early = graph.deliver(UPN, "Projekt", mail(1, frm=stranger, subject="Tidigt"))
    categorise(outlook, early, "CRM")
    daemon = env.start_daemon()
    daemon.wait_event("watching")
    env.wait_activity(mid(1), lambda a: locations(a) == [("adele", "Projekt")], timeout=TAGGED)

    plain = graph.deliver(UPN, "Projekt", mail(2, frm=stranger, subject="Fråga"))
    named = graph.deliver(UPN, "Projekt", mail(3, frm=stranger, subject="Avtal"))
    marked = graph.deliver(UPN, "Projekt", mail(4, frm=stranger, subject="Märkt"))
    categorise(outlook, marked, "Tracked in CRM", "Not tracked (see CRM)")  # mailfiler's own: never a reason
    time.sleep(1.0)
    t0 = time.monotonic()
    categorise(outlook, plain, "CRM")
    env.wait_activity(mid(2), lambda a: locations(a) == [("adele", "Projekt")], timeout=TAGGED)
    latency = time.monotonic() - t0
    categorise(outlook, named, "CRM:account:contoso")
    act = env.wait_activity(mid(3), timeout=TAGGED)
    assert (act["regarding"], act["correlation"]) == ("account:contoso", "tag")

    # moved into a tracked folder (the same immutable id): re-linked there, not tracked twice
    graph.move(UPN, plain, KUNDER)
    env.wait_activity(mid(2), lambda a: ("adele", KUNDER) in locations(a), timeout=TAGGED)
    categorise(outlook, plain, "CRM", remove=True)  # the category removed: nothing untracked

    categorise(outlook, early, "CRM", remove=True)
    time.sleep(1.0)
    assert next(a for a in env.activities() if a["message_id"] == mid(1))["untracked"] is None
    categorise(outlook, early, "CRM-untrack")
    act = env.wait_activity(mid(1), lambda a: a["untracked"] is not None, timeout=TAGGED)
    assert act["untracked"]["reason"] == "untrack tag CRM-untrack in Projekt"

    graph.move(UPN, named, "Untrack")
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
    late = graph.deliver(UPN, "Projekt", mail(5, frm=stranger, subject="Sent"))
    categorise(outlook, late, "crm")
    daemon = env.start_daemon()
    env.wait_activity(mid(5), timeout=TAGGED)
    daemon.wait_event("watching")
    assert not daemon.events("tracked", message_id=mid(1)) and not daemon.events("tracked", message_id=mid(2))

    # every delta link expired (410): the tag pass looks afresh, and tracks nothing twice
    since = len(daemon.lines)
    graph.expire_delta_tokens()
    again = graph.deliver(UPN, "Projekt", mail(6, frm=stranger, subject="Igen"))
    categorise(outlook, again, "CRM")
    env.wait_activity(mid(6), timeout=TAGGED)
    time.sleep(1.0)
    assert len(env.activities()) == 5
    for n in (1, 2, 3, 5):
        assert not daemon.events("tracked", since=since, message_id=mid(n)), f"message {n} tracked again"
