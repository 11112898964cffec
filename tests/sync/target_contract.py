"""The contract every sync target passes (vdirsyncer's ``StorageTests``).

A test module subclasses :class:`TargetContract` and provides a ``target``
fixture that makes an empty, opened collection of the requested ``kind``;
the CalDAV/CardDAV target plugs in the same way against Radicale."""

from __future__ import annotations

import pytest

from mailfiler.errors import SyncItemExists, SyncItemNotFound, SyncPreconditionFailed
from mailfiler.sources.target import Target

CARD = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nN:;{name};;;\r\nEND:VCARD\r\n"
EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n"
    "DTSTAMP:20240101T000000Z\r\nDTSTART:20240102T090000Z\r\nSUMMARY:{name}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def item(kind: str, uid: str, name: str = "Åsa Öberg") -> bytes:
    return (CARD if kind == "contacts" else EVENT).format(uid=uid, name=name).encode()


@pytest.fixture(params=["contacts", "calendar"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


class TargetContract:
    """Mixed into a test class whose ``target`` fixture yields an empty target of ``kind``."""

    async def test_a_new_collection_is_empty(self, target: Target) -> None:
        assert await target.list() == {}

    async def test_upload_then_list_and_get(self, target: Target, kind: str) -> None:
        href, etag = await target.upload(item(kind, "u1"), uid="u1")
        assert href.endswith(target.extension)
        assert await target.list() == {href: etag}
        got = await target.get(href)
        assert (got.href, got.etag, got.data) == (href, etag, item(kind, "u1"))

    async def test_upload_of_an_existing_name_fails(self, target: Target, kind: str) -> None:
        await target.upload(item(kind, "u1"), uid="u1")
        with pytest.raises(SyncItemExists):
            await target.upload(item(kind, "u1", "Other"), uid="u1")
        [(href, _)] = (await target.list()).items()
        assert (await target.get(href)).data == item(kind, "u1")

    async def test_update_with_the_current_etag(self, target: Target, kind: str) -> None:
        href, etag = await target.upload(item(kind, "u1"), uid="u1")
        new = await target.update(href, item(kind, "u1", "Bo"), etag)
        assert new != etag
        assert await target.list() == {href: new}
        assert (await target.get(href)).data == item(kind, "u1", "Bo")

    async def test_update_with_a_stale_etag_fails_and_changes_nothing(self, target: Target, kind: str) -> None:
        href, etag = await target.upload(item(kind, "u1"), uid="u1")
        new = await target.update(href, item(kind, "u1", "Bo"), etag)
        with pytest.raises(SyncPreconditionFailed):
            await target.update(href, item(kind, "u1", "Cy"), etag)
        assert (await target.get(href)).data == item(kind, "u1", "Bo")
        assert await target.list() == {href: new}

    async def test_update_of_a_missing_item_fails(self, target: Target, kind: str) -> None:
        with pytest.raises(SyncItemNotFound):
            await target.update("nothing" + target.extension, item(kind, "u1"), "x")

    async def test_delete_with_the_current_etag(self, target: Target, kind: str) -> None:
        href, etag = await target.upload(item(kind, "u1"), uid="u1")
        await target.delete(href, etag)
        assert await target.list() == {}
        with pytest.raises(SyncItemNotFound):
            await target.get(href)

    async def test_delete_with_a_stale_etag_fails(self, target: Target, kind: str) -> None:
        href, etag = await target.upload(item(kind, "u1"), uid="u1")
        await target.update(href, item(kind, "u1", "Bo"), etag)
        with pytest.raises(SyncPreconditionFailed):
            await target.delete(href, etag)
        assert href in await target.list()

    async def test_delete_of_a_missing_item_fails(self, target: Target) -> None:
        with pytest.raises(SyncItemNotFound):
            await target.delete("nothing" + target.extension, "x")

    async def test_get_multi_leaves_out_missing_items(self, target: Target, kind: str) -> None:
        hrefs = [(await target.upload(item(kind, f"u{i}"), uid=f"u{i}"))[0] for i in range(3)]
        got = await target.get_multi([hrefs[0], "gone" + target.extension, hrefs[2]])
        assert [g.href for g in got] == [hrefs[0], hrefs[2]]

    async def test_many_items_list_in_one_call(self, target: Target, kind: str) -> None:
        for i in range(50):
            await target.upload(item(kind, f"bulk-{i}"), uid=f"bulk-{i}")
        listing = await target.list()
        assert len(listing) == 50 and len(set(listing.values())) == 50

    async def test_an_unsafe_uid_gets_a_safe_name(self, target: Target, kind: str) -> None:
        uid = "../../etc/passwd Ä/ö"
        href, _ = await target.upload(item(kind, "x"), uid=uid)
        assert "/" not in href and not href.startswith(".")
        assert href in await target.list()

    async def test_changes_since_is_none_or_consistent(self, target: Target, kind: str) -> None:
        start = await target.changes_since(None)
        href, etag = await target.upload(item(kind, "u1"), uid="u1")
        if start is None:
            assert await target.changes_since("anything") is None
            return
        delta = await target.changes_since(start.token)
        assert delta is not None and delta.changed == {href: etag} and not delta.deleted
        await target.delete(href, etag)
        delta2 = await target.changes_since(delta.token)
        assert delta2 is not None and href in delta2.deleted
