"""What sync-back asks of the fake, against Microsoft's documented examples: a series'
instances (event-list-instances), events listed as masters and single events, extended
properties written, expanded and filtered on (singlevaluelegacyextendedproperty-get),
and If-Match on DELETE."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from tests.fakes.graph.conftest import UPN, covers, shape, user_path
from tests.servers.graph import GraphFake

# documented instance (event-list-instances, with $select=subject,bodyPreview,seriesMasterId,type,recurrence,start,end)
DOC_INSTANCE = {
    "@odata.etag": "str", "id": "str", "subject": "str", "bodyPreview": "str", "seriesMasterId": "str",
    "type": "str", "recurrence": "NoneType", "start": {"dateTime": "str", "timeZone": "str"},
    "end": {"dateTime": "str", "timeZone": "str"},
}  # fmt: skip
# documented expanded property (singlevaluelegacyextendedproperty-get, response 1)
DOC_EXPANDED = {"singleValueExtendedProperties": [{"id": "str", "value": "str"}]}
PROP = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name Color"
WINDOW = {"startDateTime": "2019-04-08T09:00:00.0000000", "endDateTime": "2019-04-30T09:00:00.0000000"}


def _when(day: str, time: str = "20:30:00") -> dict[str, str]:
    return {"dateTime": f"{day}T{time}", "timeZone": "UTC"}


def test_instances_of_a_series_as_documented(graph: GraphFake, api: httpx.Client) -> None:
    base = user_path(graph)
    series = graph.add_event(UPN, subject="Review strategy for Q3", start=_when("2019-04-08"),
                             end=_when("2019-04-08", "21:00:00"), recurrence={
        "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday"},
        "range": {"type": "noEnd", "startDate": "2019-04-08"}})  # fmt: skip
    graph.edit_occurrence(
        UPN, series, "2019-04-15T20:30:00Z", start=_when("2019-04-16"), end=_when("2019-04-16", "21:00:00")
    )
    fields = "subject,bodyPreview,seriesMasterId,type,recurrence,start,end"
    got = api.get(f"{base}/events/{series.id}/instances", params={**WINDOW, "$select": fields}).json()
    assert all(covers(shape(i), DOC_INSTANCE) for i in got["value"])
    assert sorted(i["start"]["dateTime"][:10] for i in got["value"]) == [
        "2019-04-08",
        "2019-04-16",
        "2019-04-22",
        "2019-04-29",
    ]
    assert {i["type"] for i in got["value"]} == {"occurrence", "exception"}
    assert {i["seriesMasterId"] for i in got["value"]} == {series.id}
    assert set(got["value"][0]) == {"@odata.etag", "id", *fields.split(",")}
    # the window is required, as for calendarView
    assert api.get(f"{base}/events/{series.id}/instances").status_code == 400
    # GET /events lists the master, never its occurrences
    listed = api.get(f"{base}/events", params={"$select": "id,type"}).json()["value"]
    assert [(e["id"], e["type"]) for e in listed] == [(series.id, "seriesMaster")]


def test_extended_properties_written_expanded_and_filtered(graph: GraphFake, api: httpx.Client) -> None:
    base = user_path(graph)
    made = api.post(f"{base}/contacts", json={"displayName": "Bo Ek",
                                               "singleValueExtendedProperties": [{"id": PROP, "value": "Green"}]}).json()  # fmt: skip
    assert "singleValueExtendedProperties" not in made  # only when $expand asks
    api.post(f"{base}/contacts", json={"displayName": "Cy Ås"})
    expand = {"$expand": f"singleValueExtendedProperties($filter=id eq '{PROP}')"}
    got = api.get(f"{base}/contacts/{made['id']}", params=expand).json()
    assert covers(shape(got), DOC_EXPANDED) and got["singleValueExtendedProperties"] == [{"id": PROP, "value": "Green"}]
    # request 3's spelling (any, ep:ep/Id); the value compares case-insensitively; the answer leaves the property out
    flt = f"singleValueExtendedProperties/any(ep:ep/Id eq '{PROP}' and ep/Value eq 'green')"
    found = api.get(f"{base}/contacts", params={"$filter": flt}).json()["value"]
    assert [c["displayName"] for c in found] == ["Bo Ek"] and "singleValueExtendedProperties" not in found[0]
    # a PATCH replaces the property by id and keeps the contact's other fields
    etag = made["@odata.etag"]
    patched = api.patch(f"{base}/contacts/{made['id']}", headers={"If-Match": etag},
                        json={"singleValueExtendedProperties": [{"id": PROP, "value": "Blue"}]})  # fmt: skip
    assert patched.status_code == 200 and patched.json()["displayName"] == "Bo Ek"
    again = api.get(f"{base}/contacts/{made['id']}", params=expand).json()
    assert again["singleValueExtendedProperties"] == [{"id": PROP, "value": "Blue"}]


def test_events_keep_extended_properties_and_delete_honours_if_match(graph: GraphFake, api: httpx.Client) -> None:
    base = user_path(graph)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    made = api.post(f"{base}/events", json={"subject": "Lunch", "start": _when(day, "12:00:00"), "end": _when(day, "13:00:00"),
                                             "singleValueExtendedProperties": [{"id": PROP, "value": "Green"}]}).json()  # fmt: skip
    flt = f"singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq 'Green')"
    assert [e["id"] for e in api.get(f"{base}/events", params={"$filter": flt}).json()["value"]] == [made["id"]]
    moved = api.patch(
        f"{base}/events/{made['id']}", json={"subject": "Lunch med Bo"}, headers={"If-Match": made["@odata.etag"]}
    )
    assert moved.status_code == 200
    stale = api.delete(f"{base}/events/{made['id']}", headers={"If-Match": made["@odata.etag"]})
    assert stale.status_code == 412 and stale.json()["error"]["code"] == "ErrorIrresolvableConflict"
    assert (
        api.delete(f"{base}/events/{made['id']}", headers={"If-Match": moved.json()["@odata.etag"]}).status_code == 204
    )
    assert api.get(f"{base}/events/{made['id']}").status_code == 404
