"""Contacts and their delta, the calendar view delta with recurrence and
exceptions, and webhook subscriptions (validation handshake, clientState,
renew, delete) against a receiver on loopback HTTPS."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.fakes.graph.conftest import UPN, covers, shape, user_path
from tests.fakes.graph.test_graph_mail import DOC_REMOVED, drain
from tests.servers.graph import GraphFake
from tests.servers.graph.model import mime_message
from tests.servers.httpfake import FakeServer, Handler, Request, Response
from tests.servers.tls import Tls

# documented contact delta item (contact-delta example, truncated there): these keys at least
DOC_CONTACT = {"parentFolderId": "str", "fileAs": "str", "displayName": "str", "givenName": "str"}
# documented calendarView delta item (delta-query-events example), reduced to structure
DOC_EVENT = {
    "@odata.type": "str", "@odata.etag": "str", "subject": "str", "body": {"contentType": "str", "content": "str"},
    "start": {"dateTime": "str", "timeZone": "str"}, "end": {"dateTime": "str", "timeZone": "str"}, "attendees": [],
    "organizer": {"emailAddress": {"name": "str", "address": "str"}}, "id": "str",
}  # fmt: skip
# documented subscription (subscription-post-subscriptions response)
DOC_SUBSCRIPTION = {
    "@odata.context": "str", "id": "str", "resource": "str", "applicationId": "str", "changeType": "str",
    "clientState": "str", "notificationUrl": "str", "expirationDateTime": "str", "creatorId": "str",
    "latestSupportedTlsVersion": "str", "notificationContentType": "str",
}  # fmt: skip


def test_contacts_crud_and_delta(graph: GraphFake, api: httpx.Client) -> None:
    base = user_path(graph)
    made = api.post(f"{base}/contacts", json={"givenName": "Åsa", "surname": "Berg",
                                               "emailAddresses": [{"name": "Åsa", "address": "asa@example.se"}]})  # fmt: skip
    assert made.status_code == 201 and made.json()["displayName"] == "Åsa Berg"
    other = graph.add_contact(UPN, givenName="Bo", displayName="Bo Ek")
    first = api.get(f"{base}/contacts/delta", headers={"Prefer": "odata.maxpagesize=1"}).json()
    assert covers(shape(first["value"][0]), DOC_CONTACT)
    items, link, pages = drain(api, first["@odata.nextLink"])
    assert pages == 1 and {c["displayName"] for c in first["value"] + items} == {"Åsa Berg", "Bo Ek"}
    cid, etag = made.json()["id"], made.json()["@odata.etag"]
    assert api.patch(f"{base}/contacts/{cid}", json={"jobTitle": "CEO"}, headers={"If-Match": etag}).status_code == 200
    assert api.patch(f"{base}/contacts/{cid}", json={"jobTitle": "CTO"}, headers={"If-Match": etag}).status_code == 412
    assert api.patch(f"{base}/contacts/{cid}", json={"bogus": 1}).status_code == 400
    graph.delete_contact(UPN, other)
    changes, _, _ = drain(api, link)
    assert [c.get("jobTitle") for c in changes if "@removed" not in c] == ["CEO"]
    assert [shape(c) for c in changes if "@removed" in c] == [DOC_REMOVED]
    assert api.delete(f"{base}/contacts/{cid}").status_code == 204
    folder = graph.mailbox(UPN).contacts_folder_id
    assert api.get(f"{base}/contactFolders/{folder}/contacts/delta").json()["value"] == []


def _when(day: datetime, hour: int) -> dict[str, str]:
    return {"dateTime": day.replace(hour=hour).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def test_calendar_view_delta_expands_a_series_with_exceptions(graph: GraphFake, api: httpx.Client) -> None:
    base = user_path(graph)
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    series = graph.add_event(UPN, subject="Stand-up", start=_when(monday, 9), end=_when(monday, 10), recurrence={
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"], "firstDayOfWeek": "sunday"},
        "range": {"type": "numbered", "startDate": "2026-12-07", "numberOfOccurrences": 5},
    })  # fmt: skip
    single = api.post(
        f"{base}/events", json={"subject": "Lunch", "start": _when(monday, 12), "end": _when(monday, 13)}
    ).json()
    assert single["type"] == "singleInstance"
    window = {"startDateTime": "2026-12-01T00:00:00Z", "endDateTime": "2026-12-31T00:00:00Z"}
    first = api.get(f"{base}/calendarView/delta", params=window, headers={"Prefer": "odata.maxpagesize=2"}).json()
    assert covers(shape(first["value"][0]), DOC_EVENT)
    items, link, _ = drain(api, first["@odata.nextLink"])
    instances = first["value"] + items
    occurrences = [i for i in instances if i["seriesMasterId"] == series.id]
    assert [o["start"]["dateTime"][:10] for o in occurrences] == [
        "2026-12-07",
        "2026-12-09",
        "2026-12-14",
        "2026-12-16",
        "2026-12-21",
    ]
    assert {o["type"] for o in occurrences} == {"occurrence"} and len(instances) == 6
    master = api.get(f"{base}/events/{series.id}").json()
    assert master["type"] == "seriesMaster" and master["recurrence"]["range"]["numberOfOccurrences"] == 5

    # Outlook moves one occurrence and cancels another; the client edits a third through Graph
    graph.edit_occurrence(UPN, series, "2026-12-09T09:00:00Z", start=_when(monday + timedelta(days=2), 11),
                          end=_when(monday + timedelta(days=2), 12))  # fmt: skip
    graph.cancel_occurrence(UPN, series, "2026-12-14T09:00:00Z")
    third = next(o for o in occurrences if o["start"]["dateTime"].startswith("2026-12-16"))
    assert (
        api.patch(
            f"{base}/events/{third['id']}",
            json={"subject": "Stand-up (long)"},
            headers={"If-Match": third["@odata.etag"]},
        ).status_code
        == 200
    )
    changes, link2, _ = drain(api, link)
    changed = {c["id"]: c for c in changes if "@removed" not in c}
    removed = [c["id"] for c in changes if "@removed" in c]
    assert removed == [next(o["id"] for o in occurrences if o["start"]["dateTime"].startswith("2026-12-14"))]
    assert {c["type"] for c in changed.values()} == {"exception"} and len(changed) == 2
    moved = next(c for c in changed.values() if c["originalStart"] == "2026-12-09T09:00:00Z")
    assert moved["start"]["dateTime"].startswith("2026-12-09T11:00")
    assert api.delete(f"{base}/events/{single['id']}").status_code == 204
    assert [c["id"] for c in drain(api, link2)[0]] == [single["id"]]


# -- subscriptions ----------------------------------------------------------------------
class Receiver(Handler):
    """A webhook endpoint: echoes validationToken, records notifications."""

    received: list[dict[str, Any]]
    refuse_validation = False

    def route(self, request: Request) -> Response:
        token = request.query.get("validationToken")
        if token is not None:
            if self.refuse_validation:
                return Response(500)
            return Response(200, {"Content-Type": "text/plain"}, token[0].encode())
        self.received.extend(json.loads(request.body)["value"])
        return Response(202)


@pytest.fixture
def receiver(graph_tls: Tls) -> Iterator[FakeServer]:
    handler = type("R", (Receiver,), {"received": []})
    with FakeServer(handler, tls=graph_tls) as server:
        server.hook = handler  # type: ignore[attr-defined]  # the test reads and sets its class attributes
        yield server


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_subscription_handshake_notifications_renew_delete(
    graph: GraphFake, api: httpx.Client, receiver: FakeServer
) -> None:
    inbox_id = graph.folder(UPN, "Inbox/Clients/Acme").id
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    body = {"changeType": "created,updated,deleted", "notificationUrl": f"{receiver.url}/hook",
            "resource": f"users/{UPN}/mailFolders('{inbox_id}')/messages", "expirationDateTime": expires,
            "clientState": "s3cret-state"}  # fmt: skip
    made = api.post("/subscriptions", json=body)
    assert made.status_code == 201, made.text
    assert shape(made.json()) == DOC_SUBSCRIPTION
    assert receiver.requests[0].query["validationToken"]  # the handshake came first
    msg = graph.deliver(UPN, "Inbox/Clients/Acme", mime_message("Hook me"))
    graph.deliver(UPN, "Inbox", mime_message("Not in that folder"))
    received = receiver.hook.received  # type: ignore[attr-defined]
    wait_for(lambda: len(received) >= 1)
    note = received[0]
    assert note["clientState"] == "s3cret-state" and note["changeType"] == "created"
    assert note["resourceData"]["id"] == msg.id and note["subscriptionId"] == made.json()["id"]
    sub_id = made.json()["id"]
    later = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (
        api.patch(f"/subscriptions/{sub_id}", json={"expirationDateTime": later})
        .json()["expirationDateTime"]
        .startswith(later[:19])
    )
    too_far = (datetime.now(UTC) + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert api.patch(f"/subscriptions/{sub_id}", json={"expirationDateTime": too_far}).status_code == 400
    assert api.delete(f"/subscriptions/{sub_id}").status_code == 204
    graph.set_categories(UPN, msg, ["x"])
    time.sleep(0.2)
    assert len(received) == 1 and api.get(f"/subscriptions/{sub_id}").status_code == 404
    assert [d.status for d in graph.subscriptions.deliveries] == [202]


def test_subscription_refused_when_the_endpoint_fails_validation(
    graph: GraphFake, api: httpx.Client, receiver: FakeServer
) -> None:
    receiver.hook.refuse_validation = True  # type: ignore[attr-defined]
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"changeType": "created", "notificationUrl": f"{receiver.url}/hook", "resource": f"users/{UPN}/messages",
            "expirationDateTime": expires}  # fmt: skip
    resp = api.post("/subscriptions", json=body)
    assert resp.status_code == 400 and "validation" in resp.json()["error"]["message"]
    assert api.post("/subscriptions", json={**body, "notificationUrl": "http://127.0.0.1:1/x"}).status_code == 400


def test_test_facing_changes_are_thread_safe_with_delta_paging(graph: GraphFake, api: httpx.Client) -> None:
    """Outlook delivering while a client pages: nothing lost across rounds."""
    stop = threading.Event()
    delivered: list[str] = []

    def outlook() -> None:
        i = 0
        while not stop.is_set() and i < 200:
            delivered.append(graph.deliver(UPN, "Inbox", mime_message(f"m{i}")).id)
            i += 1

    thread = threading.Thread(target=outlook)
    thread.start()
    seen: set[str] = set()
    url = f"{user_path(graph)}/mailFolders/inbox/messages/delta"
    for _ in range(5):
        items, url, _ = drain(api, url, {"Prefer": "odata.maxpagesize=7"})
        seen |= {i["id"] for i in items}
    stop.set()
    thread.join()
    items, _, _ = drain(api, url)
    seen |= {i["id"] for i in items}
    assert seen == set(delivered)


def test_notifications_for_contacts_and_events(graph: GraphFake, api: httpx.Client, receiver: FakeServer) -> None:
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for resource, changes in ((f"users/{UPN}/contacts", "created,updated,deleted"), (f"users/{UPN}/events", "updated")):
        body = {"changeType": changes, "notificationUrl": f"{receiver.url}/hook", "resource": resource,
                "expirationDateTime": expires, "clientState": resource}  # fmt: skip
        assert api.post("/subscriptions", json=body).status_code == 201
    contact = graph.add_contact(UPN, displayName="Cy")
    graph.edit_contact(UPN, contact, jobTitle="CFO")
    graph.delete_contact(UPN, contact)
    monday = datetime(2026, 12, 7, tzinfo=UTC)
    event = graph.add_event(UPN, subject="Review", start=_when(monday, 9), end=_when(monday, 10))
    graph.edit_event(UPN, event, subject="Review (moved)")
    received = receiver.hook.received  # type: ignore[attr-defined]
    wait_for(lambda: len(received) >= 4)
    time.sleep(0.1)
    got = sorted(
        (n["clientState"].rsplit("/", 1)[1], n["changeType"], n["resourceData"]["@odata.type"]) for n in received
    )
    assert got == [("contacts", "created", "#Microsoft.Graph.Contact"), ("contacts", "deleted", "#Microsoft.Graph.Contact"),
                   ("contacts", "updated", "#Microsoft.Graph.Contact"), ("events", "updated", "#Microsoft.Graph.Event")]  # fmt: skip
