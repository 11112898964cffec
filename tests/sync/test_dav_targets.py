"""The CalDAV and CardDAV targets against a real Radicale: the target contract,
and what only a server does (sync tokens, ETags on the wire, TLS, logins,
errors, batching)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from mailfiler.errors import SyncError, SyncItemNotFound, SyncTargetUnavailable
from mailfiler.sources.target import Target
from mailfiler.sync.dav import CalDavTarget, CardDavTarget, DavTarget, parse_multistatus
from tests.servers.radicale import DavUser, FaultTransport, dav_user, http_error, radicale, start_radicale
from tests.sync.target_contract import TargetContract, item, kind

__all__ = ["dav_user", "kind", "radicale"]


def dav_target(user: DavUser, kind: str, name: str | None = None, **kw) -> DavTarget:
    cls = CalDavTarget if kind == "calendar" else CardDavTarget
    return cls(user.url(name or f"crm-{kind}"), **{**user.target_kwargs(), **kw})


@pytest.fixture(autouse=True)
def server_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DAV server may store an item re-serialized (Radicale writes it back with
    vobject, DTSTART before DTSTAMP), and the contract compares bytes: its event
    is given here in the order Radicale writes, so the bytes come back unchanged.
    The engine never compares bytes, only fields (tested below and in test_dav_engine)."""
    from tests.sync import target_contract

    monkeypatch.setattr(
        target_contract,
        "EVENT",
        target_contract.EVENT.replace(
            "DTSTAMP:20240101T000000Z\r\nDTSTART:20240102T090000Z\r\n",
            "DTSTART:20240102T090000Z\r\nDTSTAMP:20240101T000000Z\r\n",
        ),
    )


class TestDav(TargetContract):
    @pytest.fixture
    async def target(self, dav_user: DavUser, kind: str) -> AsyncIterator[Target]:
        t = dav_target(dav_user, kind)
        await t.open()
        yield t
        await t.close()


# --- sync tokens (RFC 6578) ---------------------------------------------------------------


async def test_sync_tokens_report_changes_and_deletions_only(dav_user: DavUser) -> None:
    fault = FaultTransport()
    t = dav_target(dav_user, "contacts", wrap_transport=fault.wrap)
    await t.open()
    start = await t.changes_since(None)
    assert start is not None and start.token
    a, ea = await t.upload(item("contacts", "a"), uid="a")
    b, eb = await t.upload(item("contacts", "b"), uid="b")
    delta = await t.changes_since(start.token)
    assert delta is not None and delta.changed == {a: ea, b: eb} and not delta.deleted
    await t.delete(a, ea)
    fault.clear()
    delta2 = await t.changes_since(delta.token)
    assert delta2 is not None and (delta2.changed, delta2.deleted) == ({}, {a})
    nothing = await t.changes_since(delta2.token)
    assert nothing is not None and (nothing.token, nothing.changed, nothing.deleted) == (delta2.token, {}, set())
    # each delta is one REPORT, nothing else
    assert fault.methods() == ["REPORT:sync-collection", "REPORT:sync-collection"]
    await t.close()


async def test_a_token_the_server_does_not_know_means_list_everything(dav_user: DavUser) -> None:
    t = dav_target(dav_user, "calendar")
    await t.open()
    await t.upload(item("calendar", "e1"), uid="e1")
    # Radicale answers 403 valid-sync-token (an expired token, or a collection rebuilt)
    assert await t.changes_since("http://radicale.org/ns/sync/" + "0" * 64) is None
    assert await t.changes_since("garbage") is None
    await t.close()


@pytest.mark.parametrize("status", [403, 409, 501])
async def test_a_refused_sync_collection_falls_back(dav_user: DavUser, status: int) -> None:
    body = '<?xml version="1.0"?><error xmlns="DAV:"><valid-sync-token/></error>'
    fault = FaultTransport(lambda seen, n: http_error(status, body) if seen.report == "sync-collection" else None)
    t = dav_target(dav_user, "calendar", wrap_transport=fault.wrap)
    await t.open()
    token = await t.changes_since(None)
    assert token is not None
    assert await t.changes_since(token.token) is None
    await t.close()


async def test_a_server_without_sync_tokens(dav_user: DavUser) -> None:
    """No DAV:sync-token property (a plain CalDAV server): the engine always lists."""

    def no_token(seen, n):
        if seen.method == "PROPFIND":
            return httpx.Response(
                207,
                content=(
                    f'<?xml version="1.0"?><multistatus xmlns="DAV:"><response><href>{seen.path}</href><propstat>'
                    "<prop><sync-token/></prop><status>HTTP/1.1 404 Not Found</status></propstat></response>"
                    "</multistatus>"
                ).encode(),
            )
        return None

    t = dav_target(dav_user, "calendar", wrap_transport=FaultTransport(no_token).wrap)
    await t.open()
    assert await t.changes_since(None) is None
    await t.close()


async def test_a_truncated_sync_report_is_continued() -> None:
    """RFC 6578 §3.6: a 507 on the collection means "more"; ask again from the new token."""
    replies = [
        "<response><href>/c/</href><status>HTTP/1.1 507 Insufficient Storage</status></response>"
        '<response><href>/c/a.ics</href><propstat><prop><getetag>"1"</getetag></prop>'
        "<status>HTTP/1.1 200 OK</status></propstat></response>"
        "<sync-token>t2</sync-token>",
        "<response><href>/c/a.ics</href><status>HTTP/1.1 404 Not Found</status></response>"
        '<response><href>/c/b%20x.ics</href><propstat><prop><getetag>"2"</getetag></prop>'
        "<status>HTTP/1.1 200 OK</status></propstat></response>"
        '<response><href>/c/sub/</href><propstat><prop><getetag>"3"</getetag><resourcetype><collection/>'
        "</resourcetype></prop><status>HTTP/1.1 200 OK</status></propstat></response>"
        "<sync-token>t3</sync-token>",
    ]
    asked: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.content)
        body = replies[len(asked) - 1]
        return httpx.Response(
            207, content=f'<?xml version="1.0"?><multistatus xmlns="DAV:">{body}</multistatus>'.encode()
        )

    t = CalDavTarget("http://127.0.0.1:9/c/", wrap_transport=lambda _inner: httpx.MockTransport(handler))
    await t.open()
    changes = await t.changes_since("t1")
    assert changes is not None
    assert (changes.token, changes.changed, changes.deleted) == ("t3", {"b x.ics": '"2"'}, {"a.ics"})
    assert b"<D:sync-token>t2</D:sync-token>" in asked[1]
    await t.close()


def test_parse_multistatus_ignores_props_not_found_and_reads_absolute_hrefs() -> None:
    members, token = parse_multistatus(
        b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response>'
        b"<D:href>https://dav.example.com/cal/%C3%85sa.ics</D:href>"
        b'<D:propstat><D:prop><D:getetag>"e"</D:getetag></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>'
        b"<D:propstat><D:prop><D:getlastmodified/></D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>"
        b"</D:response></D:multistatus>"
    )
    [m] = members
    assert (m.path, m.text("{DAV:}getetag"), token) == ("/cal/Åsa.ics", '"e"', None)
    assert "{DAV:}getlastmodified" not in m.props
    with pytest.raises(ValueError, match="not XML"):
        parse_multistatus(b"<html>oops")
    with pytest.raises(ValueError, match="multistatus"):
        parse_multistatus(b"<html/>")


# --- the wire -----------------------------------------------------------------------------


async def test_listing_and_reading_are_batched(dav_user: DavUser) -> None:
    fault = FaultTransport()
    t = dav_target(dav_user, "calendar", wrap_transport=fault.wrap)
    await t.open()
    hrefs = [(await t.upload(item("calendar", f"e{i}", f"Möte {i}"), uid=f"e{i}"))[0] for i in range(101)]
    fault.clear()
    listing = await t.list()
    got = await t.get_multi(hrefs)
    assert len(listing) == 101 and [g.href for g in got] == hrefs
    assert got[7].data.startswith(b"BEGIN:VCALENDAR\r\n") and "Möte 7".encode() in got[7].data
    assert fault.methods() == ["PROPFIND:propfind", "REPORT:calendar-multiget", "REPORT:calendar-multiget"]
    await t.close()


async def test_writes_name_the_etag_they_read(dav_user: DavUser) -> None:
    fault = FaultTransport()
    t = dav_target(dav_user, "contacts", wrap_transport=fault.wrap)
    await t.open()
    seen_headers: list[dict[str, str]] = []
    inner = fault.handle_async_request

    async def spy(request: httpx.Request) -> httpx.Response:
        seen_headers.append({k.lower(): v for k, v in request.headers.items()})
        return await inner(request)

    await t.list()  # makes the address book
    fault.handle_async_request = spy  # type: ignore[method-assign]
    href, etag = await t.upload(item("contacts", "u1"), uid="u1")
    new = await t.update(href, item("contacts", "u1", "Bo"), etag)
    await t.delete(href, new)
    puts = [h for h in seen_headers if "content-type" in h and "vcard" in h["content-type"]]
    assert puts[0]["if-none-match"] == "*" and puts[1]["if-match"] == etag
    assert seen_headers[-1]["if-match"] == new
    await t.close()


async def test_items_other_clients_named_freely(dav_user: DavUser) -> None:
    """Apple and Thunderbird name items as they like: spaces, non-ASCII, no UID in the name."""
    t = dav_target(dav_user, "contacts")
    await t.open()
    await t.list()  # makes the address book
    async with httpx.AsyncClient(auth=(dav_user.name, dav_user.password)) as other:
        r = await other.put(dav_user.url("crm-contacts") + "%C3%85sa%20%C3%96berg.vcf", content=item("contacts", "x1"))
        assert r.status_code == 201
    listing = await t.list()
    assert list(listing) == ["Åsa Öberg.vcf"]
    [got] = await t.get_multi(["Åsa Öberg.vcf"])
    new = await t.update(got.href, item("contacts", "x1", "Åsa Ö"), got.etag)
    await t.delete(got.href, new)
    assert await t.list() == {}
    await t.close()


async def test_an_item_stored_without_an_etag_in_the_reply(dav_user: DavUser) -> None:
    """A server that rewrites an item may leave ETag out of the PUT reply (RFC 4791 §5.3.4)."""

    fault = FaultTransport()
    t = dav_target(dav_user, "calendar", wrap_transport=fault.wrap)
    await t.open()
    inner = fault.handle_async_request

    async def no_etag(request: httpx.Request) -> httpx.Response:
        resp = await inner(request)
        if request.method == "PUT":
            await resp.aread()
            return httpx.Response(resp.status_code, content=b"")
        return resp

    fault.handle_async_request = no_etag  # type: ignore[method-assign]
    href, etag = await t.upload(item("calendar", "e1"), uid="e1")
    assert (await t.list()) == {href: etag}
    await t.close()


# --- errors -------------------------------------------------------------------------------


async def test_a_wrong_password_is_a_clear_error(dav_user: DavUser) -> None:
    t = dav_target(dav_user, "calendar", password="wrong")
    await t.open()
    with pytest.raises(
        SyncTargetUnavailable, match=r"refused the login \(HTTP 401\): check username and password_file"
    ):
        await t.list()
    await t.close()


async def test_the_password_is_never_shown(dav_user: DavUser, caplog: pytest.LogCaptureFixture) -> None:
    t = dav_target(dav_user, "calendar")
    await t.open()
    await t.list()
    await t.close()
    assert dav_user.password not in repr(t) + t.location + caplog.text
    with pytest.raises(ValueError, match="credentials"):
        CalDavTarget(f"http://{dav_user.name}:{dav_user.password}@127.0.0.1:1/x/")


async def test_a_missing_collection_is_made_only_when_allowed(dav_user: DavUser) -> None:
    t = dav_target(dav_user, "calendar", "not-there")
    await t.open(create=False)
    with pytest.raises(SyncTargetUnavailable, match="no such collection"):
        await t.list()
    await t.open(create=True)
    assert await t.list() == {}
    await t.close()


async def test_a_calendar_url_given_for_an_address_book(dav_user: DavUser) -> None:
    cal = dav_target(dav_user, "calendar", "mixed")
    await cal.open()
    await cal.list()
    book = CardDavTarget(dav_user.url("mixed"), **dav_user.target_kwargs())
    await book.open()
    with pytest.raises(SyncTargetUnavailable, match="the URL is a calendar, not a carddav address book"):
        await book.changes_since(None)
    with pytest.raises(SyncTargetUnavailable, match="is a calendar"):
        await book.list()
    await cal.close()
    await book.close()


async def test_server_errors_on_a_listing_and_on_one_item(dav_user: DavUser) -> None:
    fault = FaultTransport(
        lambda seen, n: http_error(500) if (seen.method == "PROPFIND" and n == 2) or seen.method == "DELETE" else None
    )
    t = dav_target(dav_user, "contacts", wrap_transport=fault.wrap)
    await t.open()
    href, etag = await t.upload(item("contacts", "u1"), uid="u1")
    assert href in await t.list()  # PROPFIND #1
    with pytest.raises(SyncTargetUnavailable, match=r"server error on PROPFIND \(HTTP 500\)"):
        await t.list()
    # a refused write costs that item only: not SyncTargetUnavailable
    with pytest.raises(SyncError, match=r"refused the deletion of u1.vcf \(HTTP 500\)") as info:
        await t.delete(href, etag)
    assert not isinstance(info.value, SyncTargetUnavailable | SyncItemNotFound)
    await t.close()


async def test_a_dead_server_and_a_silent_one() -> None:
    import asyncio
    import socket

    with start_radicale() as server:
        user = server.add_user()
        t = dav_target(user, "calendar", timeout=0.5)
        await t.open()
        await t.list()
        server.kill()
        with pytest.raises(SyncTargetUnavailable, match="cannot connect"):
            await t.list()
        await t.close()
    # a server that accepts the connection and never answers
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        t = CalDavTarget(f"http://127.0.0.1:{sock.getsockname()[1]}/c/", timeout=0.3)
        await t.open()
        started = asyncio.get_running_loop().time()
        with pytest.raises(SyncTargetUnavailable, match=r"no answer within 0.3 s \(PROPFIND\)"):
            await t.list()
        assert asyncio.get_running_loop().time() - started < 3
        await t.close()


async def test_tls_is_verified() -> None:
    with start_radicale(tls=True) as server:
        user = server.add_user()
        t = dav_target(user, "calendar")  # with the test CA as ca_file
        await t.open()
        assert await t.list() == {}
        await t.close()
        kw = {**user.target_kwargs(), "ca_file": None}
        untrusted = CalDavTarget(user.url("crm-calendar"), **kw)
        await untrusted.open()
        with pytest.raises(SyncTargetUnavailable, match=r"certificate is not trusted.*set ca_file"):
            await untrusted.list()
        await untrusted.close()
        unchecked = CalDavTarget(user.url("crm-calendar"), **{**kw, "verify": False})
        await unchecked.open()
        assert await unchecked.list() == {}
        await unchecked.close()
