"""Mail folders, message delta (paging, resume, moves with and without immutable
ids, duplicates, expiry), $value, PATCH with If-Match and $batch, with response
structures compared to the structures of Microsoft's documented examples."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.fakes.graph.conftest import UPN, covers, shape, user_path
from tests.servers.graph import GraphFake
from tests.servers.graph.faults import duplicates, throttle
from tests.servers.graph.model import mime_message

ACME = "Inbox/Clients/Acme"
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}

# The structure of the documented delta pages (delta-query-messages, example 1: $select=subject,sender,isRead
# and odata.maxpagesize=2), reduced by hand to keys and value types.
DOC_DELTA_PAGE = {
    "@odata.context": "str",
    "@odata.nextLink": "str",
    "value": [{
        "@odata.type": "str", "@odata.etag": "str", "subject": "str", "isRead": "bool",
        "sender": {"emailAddress": {"name": "str", "address": "str"}}, "id": "str",
    }],
}  # fmt: skip
DOC_REMOVED = {"@odata.type": "str", "id": "str", "@removed": {"reason": "str"}}


def drain(api: httpx.Client, url: str, headers: dict[str, str] | None = None) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks to the deltaLink: (items, deltaLink, pages)."""
    items, pages = [], 0
    while True:
        resp = api.get(url, headers=headers)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        pages += 1
        items += body["value"]
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"], pages
        url = body["@odata.nextLink"]


def delta_url(graph: GraphFake, path: str = ACME, query: str = "") -> str:
    return f"{user_path(graph)}/mailFolders/{graph.folder(UPN, path).id}/messages/delta{query}"


def fill(graph: GraphFake, count: int, path: str = ACME) -> list[Any]:
    return [graph.deliver(UPN, path, mime_message(f"Subject {i}", body=f"Body {i}\n")) for i in range(count)]


def test_folders_list_children_create_and_get_by_name(graph: GraphFake, api: httpx.Client) -> None:
    base = user_path(graph)
    page = api.get(f"{base}/mailFolders", params={"$top": 2}).json()
    assert len(page["value"]) == 2 and "$skip=2" in page["@odata.nextLink"]
    names = [f["displayName"] for f in page["value"]]
    while "@odata.nextLink" in page:
        page = api.get(page["@odata.nextLink"]).json()
        names += [f["displayName"] for f in page["value"]]
    assert set(names) == {"Inbox", "Sent Items", "Deleted Items", "Drafts", "Junk Email", "Archive"}
    inbox = api.get(f"{base}/mailFolders/inbox").json()
    assert inbox["displayName"] == "Inbox" and inbox["childFolderCount"] == 1
    clients = api.get(f"{base}/mailFolders/{inbox['id']}/childFolders").json()["value"][0]
    names = {f["displayName"] for f in api.get(f"{base}/mailFolders('{clients['id']}')/childFolders").json()["value"]}
    assert names == {"Acme", "Öresund"}
    made = api.post(f"{base}/mailFolders/{clients['id']}/childFolders", json={"displayName": "Ünicode AB"})
    assert made.status_code == 201 and made.json()["parentFolderId"] == clients["id"]
    again = api.post(f"{base}/mailFolders/{clients['id']}/childFolders", json={"displayName": "Ünicode AB"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "ErrorFolderExists"
    assert api.get(f"{base}/mailFolders/nope").status_code == 404
    renamed = graph.rename_folder(UPN, "Inbox/Clients/Acme", "Acme Corp")
    assert api.get(f"{base}/mailFolders/{renamed.id}").json()["displayName"] == "Acme Corp"


def test_delta_pages_match_the_documented_structure_and_resume_by_delta_link(
    graph: GraphFake, api: httpx.Client
) -> None:
    msgs = fill(graph, 5)
    first = api.get(delta_url(graph, query="?$select=subject,sender,isRead"), headers={"Prefer": "odata.maxpagesize=2"})
    assert first.headers["preference-applied"] == "odata.maxpagesize=2"
    body = first.json()
    assert shape(body) == DOC_DELTA_PAGE
    assert "$skiptoken=" in body["@odata.nextLink"]
    items, link, pages = drain(api, body["@odata.nextLink"], {"Prefer": "odata.maxpagesize=2"})
    assert pages == 2 and "$deltatoken=" in link
    assert [i["subject"] for i in body["value"] + items] == [f"Subject {i}" for i in range(5)]
    assert all(
        set(i) == {"@odata.type", "@odata.etag", "id", "subject", "sender", "isRead"} for i in items
    )  # $select kept

    # next round: one deleted, one changed, one new (documented: @removed + the changed item)
    graph.delete(UPN, msgs[0])
    graph.mark_read(UPN, msgs[1])
    graph.deliver(UPN, ACME, mime_message("Late arrival"))
    changes, link2, _ = drain(api, link)
    removed = [c for c in changes if "@removed" in c]
    assert [shape(r) for r in removed] == [DOC_REMOVED] and removed[0]["id"] == msgs[0].id
    assert {c["subject"] for c in changes if "@removed" not in c} == {"Subject 1", "Late arrival"}
    assert drain(api, link2)[0] == []  # nothing since


def test_delta_change_type_filter(graph: GraphFake, api: httpx.Client) -> None:
    msgs = fill(graph, 2)
    _, link, _ = drain(api, delta_url(graph, query="?changeType=created"))
    graph.set_categories(UPN, msgs[0], ["Tracked"])
    graph.deliver(UPN, ACME, mime_message("New one"))
    changes, _, _ = drain(api, link)
    assert [c["subject"] for c in changes] == ["New one"]


def test_a_move_changes_the_default_id(graph: GraphFake, api: httpx.Client) -> None:
    (msg,) = fill(graph, 1)
    old_id = msg.id
    _, acme_link, _ = drain(api, delta_url(graph))
    _, inbox_link, _ = drain(api, delta_url(graph, "Inbox"))
    graph.move(UPN, msg, "Inbox")
    gone, _, _ = drain(api, acme_link)
    arrived, _, _ = drain(api, inbox_link)
    assert gone == [{"@odata.type": "#microsoft.graph.message", "id": old_id, "@removed": {"reason": "deleted"}}]
    assert len(arrived) == 1 and arrived[0]["id"] != old_id
    assert arrived[0]["internetMessageId"] == msg.internet_message_id  # what identifies it across folders
    assert api.get(f"{user_path(graph)}/messages/{old_id}").status_code == 404


def test_immutable_ids_survive_a_move(graph: GraphFake, api: httpx.Client) -> None:
    (msg,) = fill(graph, 1)
    first = api.get(delta_url(graph), headers=IMMUTABLE)
    assert 'IdType="ImmutableId"' in first.headers["preference-applied"]
    (item,) = first.json()["value"]
    _, inbox_link, _ = drain(api, delta_url(graph, "Inbox"), IMMUTABLE)
    graph.move(UPN, msg, "Inbox")
    gone, _, _ = drain(api, first.json()["@odata.deltaLink"], IMMUTABLE)
    arrived, _, _ = drain(api, inbox_link, IMMUTABLE)
    assert gone[0]["id"] == item["id"] == arrived[0]["id"]
    got = api.get(f"{user_path(graph)}/messages/{item['id']}", headers=IMMUTABLE)
    assert got.status_code == 200 and got.json()["parentFolderId"] == graph.folder(UPN, "Inbox").id


def test_duplicates_across_pages_when_switched_on(graph: GraphFake, api: httpx.Client) -> None:
    fill(graph, 6)
    duplicates(graph, 1)
    items, _, pages = drain(api, delta_url(graph), {"Prefer": "odata.maxpagesize=2"})
    assert pages == 3 and len(items) == 8 and len({i["id"] for i in items}) == 6


def test_expired_delta_link_is_410_with_a_location_for_a_new_round(graph: GraphFake, api: httpx.Client) -> None:
    fill(graph, 3)
    _, link, _ = drain(api, delta_url(graph))
    assert graph.expire_delta_tokens(UPN) >= 1
    resp = api.get(link)
    assert resp.status_code == 410 and resp.json()["error"]["code"] == "syncStateNotFound"
    assert resp.headers["location"].endswith("$deltatoken=")
    items, _, _ = drain(api, resp.headers["location"])
    assert len(items) == 3


def test_value_is_the_raw_mime(graph: GraphFake, api: httpx.Client) -> None:
    big = mime_message("Big", body="x" * 300_000 + "\n")
    msg = graph.deliver(UPN, ACME, big)
    resp = api.get(f"{user_path(graph)}/messages/{msg.id}/$value")
    assert resp.status_code == 200 and resp.content == big
    folder = graph.folder(UPN, ACME).id
    assert api.get(f"{user_path(graph)}/mailFolders/{folder}/messages/{msg.id}/%24value").content == big


def test_patch_categories_with_if_match_and_412_when_stale(graph: GraphFake, api: httpx.Client) -> None:
    (msg,) = fill(graph, 1)
    _, link, _ = drain(api, delta_url(graph))
    url = f"{user_path(graph)}/messages/{msg.id}"
    etag = api.get(url).json()["@odata.etag"]
    ok = api.patch(url, json={"categories": ["Filed: Acme"]}, headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.json()["categories"] == ["Filed: Acme"] and ok.json()["@odata.etag"] != etag
    stale = api.patch(url, json={"categories": ["Other"]}, headers={"If-Match": etag})
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "ErrorIrresolvableConflict"
    assert api.get(url).json()["categories"] == ["Filed: Acme"]
    changes, _, _ = drain(api, link)
    assert [c["categories"] for c in changes] == [["Filed: Acme"]]


def test_batch_runs_requests_with_dependencies_and_per_request_faults(graph: GraphFake, api: httpx.Client) -> None:
    msgs = fill(graph, 2)
    base = user_path(graph)
    batch = {"requests": [
        {"id": "1", "method": "GET", "url": f"{base}/messages/{msgs[0].id}/$value"},
        {"id": "2", "method": "PATCH", "url": f"{base}/messages/{msgs[1].id}", "body": {"categories": ["A"]},
         "headers": {"Content-Type": "application/json"}, "dependsOn": ["1"]},
        {"id": "3", "method": "GET", "url": f"{base}/messages/nonexistent"},
        {"id": "4", "method": "GET", "url": f"{base}/mailFolders/inbox", "dependsOn": ["3"]},
    ]}  # fmt: skip
    resp = api.post("/$batch", json=batch)
    assert resp.status_code == 200
    by_id = {r["id"]: r for r in resp.json()["responses"]}
    # documented response structure (json-batching): responses[] of id, status, headers, body
    assert covers(shape(by_id["2"]), {"id": "str", "status": "int", "headers": {"Content-Type": "str"}, "body": {}})
    assert base64.b64decode(by_id["1"]["body"]) == msgs[0].mime
    assert by_id["2"]["status"] == 200 and by_id["2"]["body"]["categories"] == ["A"]
    assert by_id["3"]["status"] == 404 and by_id["4"]["status"] == 424
    throttle(graph, "GET message/$value", retry_after=3)
    sub = api.post("/$batch", json={"requests": batch["requests"][:1]}).json()["responses"][0]
    assert sub["status"] == 429 and sub["headers"]["Retry-After"] == "3"
    too_many = {"requests": [{"id": str(i), "method": "GET", "url": f"{base}/mailFolders/inbox"} for i in range(21)]}
    assert api.post("/$batch", json=too_many).status_code == 400
    assert graph.batched.count("GET message/$value") == 2


def test_folder_delta_sees_renames_moves_and_deletions(graph: GraphFake, api: httpx.Client) -> None:
    everything, link, _ = drain(api, f"{user_path(graph)}/mailFolders/delta")
    assert {"Inbox", "Clients", "Acme", "Öresund", "Archive"} <= {f["displayName"] for f in everything}
    acme = graph.rename_folder(UPN, ACME, "Acme AB")
    gone = graph.folder(UPN, "Inbox/Clients/Öresund").id
    graph.delete_folder(UPN, "Inbox/Clients/Öresund")
    changes, _, _ = drain(api, link)
    assert [(c["id"], c["displayName"]) for c in changes if "@removed" not in c] == [(acme.id, "Acme AB")]
    assert [c["id"] for c in changes if "@removed" in c] == [gone]


def test_message_list_pages_newest_first(graph: GraphFake, api: httpx.Client) -> None:
    fill(graph, 3)
    folder = graph.folder(UPN, ACME).id
    page = api.get(f"{user_path(graph)}/mailFolders/{folder}/messages", params={"$top": 2, "$select": "subject"}).json()
    assert len(page["value"]) == 2 and set(page["value"][0]) == {"@odata.etag", "id", "subject"}
    rest = api.get(page["@odata.nextLink"]).json()
    assert "@odata.nextLink" not in rest and len(rest["value"]) == 1


def test_malformed_and_realistic_mail_deliver_and_round_trip(graph: GraphFake, api: httpx.Client) -> None:
    from tests.mailgen import malformed_corpus, realistic_message

    corpus = {**malformed_corpus(), "realistic": realistic_message(1), "random": bytes(range(256)) * 4}
    delivered = {name: graph.deliver(UPN, ACME, raw) for name, raw in corpus.items()}
    items, _, _ = drain(api, delta_url(graph, query="?$select=subject,internetMessageId,hasAttachments"))
    assert len(items) == len(corpus)
    for name, msg in delivered.items():
        assert api.get(f"{user_path(graph)}/messages/{msg.id}/$value").content == corpus[name], name
