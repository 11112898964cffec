"""What track by tag relies on in the Graph fake: a category PATCHed onto a message (as
Outlook on the web does) is in the folder's next message delta round, with the categories
``$select`` asked for (the message resource's ``categories``: a list of strings); a round
from nothing lists every message with its categories; a round's delta link is its own,
apart from another round's on the same folder."""

from __future__ import annotations

import httpx

from tests.fakes.graph.conftest import UPN, covers, shape
from tests.fakes.graph.test_graph_mail import ACME, DOC_REMOVED, delta_url, drain, fill
from tests.servers.graph import GraphFake

# the message resource's categories (String collection), with the delta item's keys
DOC_ITEM = {"@odata.type": "str", "@odata.etag": "str", "id": "str", "categories": ["str"]}


def test_a_category_patch_is_in_the_next_delta_round(graph: GraphFake, api: httpx.Client) -> None:
    msgs = fill(graph, 3)
    graph.set_categories(UPN, msgs[0], ["CRM", "Privat"])
    items, link, _ = drain(api, delta_url(graph, ACME, "?$select=categories,internetMessageId"))
    cats = {i["id"]: i["categories"] for i in items}
    assert cats == {msgs[0].id: ["CRM", "Privat"], msgs[1].id: [], msgs[2].id: []}
    assert covers(shape(next(i for i in items if i["categories"])), DOC_ITEM)
    # the watcher's own round on the same folder (another $select): its link is its own
    _, other_link, _ = drain(api, delta_url(graph, ACME, "?$select=internetMessageId"))

    resp = api.patch(f"/users/{graph.mailbox(UPN).id}/messages/{msgs[1].id}", json={"categories": ["CRM"]})
    assert resp.status_code == 200 and resp.json()["categories"] == ["CRM"]
    graph.mark_read(UPN, msgs[2])  # any change is in the round; the consumer reads the categories
    graph.delete(UPN, msgs[0])
    items, link, _ = drain(api, link)
    by_id = {i["id"]: i for i in items}
    assert by_id[msgs[1].id]["categories"] == ["CRM"] and "categories" in by_id[msgs[2].id]
    assert covers(shape(by_id[msgs[0].id]), DOC_REMOVED)
    assert drain(api, link)[0] == []
    # the other link saw the same changes, untouched by this round
    assert {i["id"] for i in drain(api, other_link)[0]} == {m.id for m in msgs}
