"""The Graph source against the fake's faults: throttling (no lost mail, no hammering),
503, token expiry mid-backfill, expired delta links, connections dropped mid-page and
mid-message, duplicates across delta pages, a revoked consent, a missing mailbox, a wrong
CA, certificate sign-in, and device-code sign-in with its 0600 token cache."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailfiler.errors import LoginRefused, MailboxMissing, ServerBusy, TlsCertificateRefused
from mailfiler.sources.graph import client as graph_client
from mailfiler.sources.graph.auth import SignIn, device_login
from mailfiler.sources.graph.source import GraphSource
from tests.graph.helpers import APP_ID, SECRET, UPN, settings, sign_in, source, tenant
from tests.mailgen import realistic_message
from tests.servers.graph import GraphFake, faults
from tests.servers.tls import Tls, make_tls

FOLDER = "INBOX/Clients/Acme"


@pytest.fixture
def graph(graph_tls: Tls) -> Iterator[GraphFake]:
    with GraphFake(graph_tls) as fake:
        tenant(fake, [FOLDER])
        yield fake


@pytest.fixture
async def src(graph: GraphFake) -> AsyncIterator[GraphSource]:
    s = source(graph)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def fill(graph: GraphFake, n: int, start: int = 0) -> dict[bytes, None]:
    out = {}
    for i in range(start, start + n):
        raw = realistic_message(i).replace(b"\n", b"\r\n")
        graph.deliver(UPN, FOLDER, raw)
        out[raw] = None
    return out


async def read_all(src: GraphSource) -> set[bytes]:
    listing = await src.list_messages(FOLDER)
    got = await src.fetch_batch(FOLDER, listing.messages)
    assert all(isinstance(v, bytes) for v in got.values()), got
    return set(got.values())  # type: ignore[arg-type]


def graph_requests(graph: GraphFake) -> int:
    return sum(1 for r in list(graph.server.requests) if r.path.startswith("/v1.0/"))


async def test_throttling_for_a_while_loses_nothing_and_does_not_hammer(graph: GraphFake, src: GraphSource) -> None:
    sent = fill(graph, 60)
    before = graph_requests(graph)
    faults.throttle_until(graph, time.time() + 4.0, retry_after=1)
    started = time.monotonic()
    assert await read_all(src) == set(sent)
    took = time.monotonic() - started
    assert took >= 3.0  # it waited, as asked
    during = graph_requests(graph) - before
    # 60 messages + the listing take ~62 requests; 4 s of 429s with Retry-After: 1 add a few per second
    # (the whole client waits, not each request on its own)
    assert during < 62 + 4 * 6, f"{during} requests"
    assert src.client.throttled >= 3


async def test_throttling_that_never_ends_is_server_busy(
    graph: GraphFake, src: GraphSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph_client, "THROTTLE_BUDGET", 2.5)
    faults.throttle_until(graph, time.time() + 60, retry_after=1)
    with pytest.raises(ServerBusy):
        await src.list_messages(FOLDER)


async def test_503_and_429_once_are_retried(graph: GraphFake, src: GraphSource) -> None:
    sent = fill(graph, 5)
    faults.unavailable(graph, "GET messages/delta", retry_after=1)
    faults.throttle(graph, "GET message/$value", retry_after=1, times=2)
    assert await read_all(src) == set(sent)


async def test_token_expiry_mid_backfill_refreshes_once(graph: GraphFake, src: GraphSource) -> None:
    sent = fill(graph, 30)
    listing = await src.list_messages(FOLDER)
    first = dict(list(listing.messages.items())[:10])
    got = await src.fetch_batch(FOLDER, first)
    graph.identity.expire_tokens()  # every token the fake issued is now refused
    acquired = src.tokens.acquired
    faults.token_expired(graph, "GET message/$value", times=1)  # and a canned 401 too
    rest = {k: v for k, v in listing.messages.items() if k not in first}
    got.update(await src.fetch_batch(FOLDER, rest))
    assert set(got.values()) == set(sent)
    assert src.tokens.acquired - acquired <= 3  # refreshed, not once per request


async def test_refused_token_after_refresh_is_login_refused(graph: GraphFake, src: GraphSource) -> None:
    faults.token_expired(graph, "GET messages/delta", times=None)
    with pytest.raises(LoginRefused):
        await src.list_messages(FOLDER)


async def test_revoked_consent_is_login_refused_with_a_hint(graph: GraphFake, src: GraphSource) -> None:
    graph.identity.revoke_consent(APP_ID)
    with pytest.raises(LoginRefused, match=r"permission|consent"):
        await src.list_messages(FOLDER)
    fresh = source(graph)  # a new sign-in: the token endpoint refuses too
    try:
        graph.identity.revoke_consent(APP_ID, invalidate_tokens=True)
        with pytest.raises(LoginRefused):
            await fresh.open()
    finally:
        await fresh.close()


async def test_delta_link_expiring_falls_back_to_a_full_listing(graph: GraphFake, src: GraphSource) -> None:
    fill(graph, 12)
    listing = await src.list_messages(FOLDER)
    graph.expire_delta_tokens(UPN)
    assert await src.list_changes(FOLDER, listing.token or "") is None
    faults.delta_expired(graph, code="resyncRequired")
    again = await src.list_messages(FOLDER)
    assert await src.list_changes(FOLDER, again.token or "") is None
    assert set((await src.list_messages(FOLDER)).messages) == set(listing.messages)
    # a page link of a first listing that expires between its pages: the listing starts again
    s = GraphSource(settings(graph, page_size=5))
    try:
        faults.delta_expired(graph)  # the first request carrying a skip token is 410
        assert set((await s.list_messages(FOLDER)).messages) == set(listing.messages)
    finally:
        await s.close()


async def test_a_page_cut_short_is_read_again(graph: GraphFake, src: GraphSource) -> None:
    sent = fill(graph, 25)
    faults.drop_mid_page(graph, "GET messages/delta", after_bytes=300)
    faults.drop(graph, "GET messages/delta")
    listing = await src.list_messages(FOLDER)
    assert len(listing.messages) == 25
    faults.drop_mid_page(graph, "GET message/$value", after_bytes=100, times=2)
    got = await src.fetch_batch(FOLDER, listing.messages)
    assert set(got.values()) == set(sent)


async def test_duplicates_across_delta_pages_are_listed_once(graph: GraphFake) -> None:
    fill(graph, 40)
    faults.duplicates(graph, 3)
    s = GraphSource(settings(graph, page_size=7))
    try:
        listing = await s.list_messages(FOLDER)
        assert len(listing.messages) == 40
        sids = list(listing.messages)
        token = s.message_token(listing.token or "", sids[19])
        delta = await s.list_changes(FOLDER, token or "")
        assert delta is not None and list(delta.added) == sids[20:]
    finally:
        await s.close()


async def test_batches_of_messages_fall_back_one_by_one(
    graph: GraphFake, src: GraphSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailfiler.sources.graph import reader

    sent = fill(graph, 45)
    listing = await src.list_messages(FOLDER)
    faults.throttle(graph, "GET message/$value", retry_after=1, times=3)  # three sub-requests answer 429
    faults.unavailable(graph, "GET message/$value", times=2)
    before = len(graph.batched)
    assert set((await src.fetch_batch(FOLDER, listing.messages)).values()) == set(sent)
    assert len(graph.batched) - before >= 45  # read through $batch
    monkeypatch.setattr(reader, "BATCH_BYTES", 10_000)  # every batch answer is too large to hold
    singles = sum(1 for r in list(graph.server.requests) if r.operation == "GET message/$value")
    assert set((await src.fetch_batch(FOLDER, listing.messages)).values()) == set(sent)
    assert sum(1 for r in list(graph.server.requests) if r.operation == "GET message/$value") - singles == 45


async def test_sizes_of_a_batch_hold_at_most_the_cache(
    graph: GraphFake, src: GraphSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailfiler.sources.graph import reader

    monkeypatch.setattr(reader, "CACHE_BYTES", 50_000)
    monkeypatch.setattr(reader, "KEEP_MAX", 20_000)
    big = {raw: None for raw in (realistic_message(i, with_attachment_every=1) for i in range(3))}
    for raw in big:
        graph.deliver(UPN, FOLDER, raw)
    sent = {**fill(graph, 30), **big}
    listing = await src.list_messages(FOLDER)
    sizes = await src.sizes_of(FOLDER, listing.messages)
    assert sorted(sizes.values()) == sorted(len(raw) for raw in sent)  # type: ignore[type-var]
    assert src.reader._cached_bytes <= 50_000
    assert set((await src.fetch_batch(FOLDER, listing.messages)).values()) == set(sent)


async def test_a_30_mb_message_streams_and_is_not_kept(graph: GraphFake, src: GraphSource, tmp_path: Path) -> None:
    from tests.mailgen import large_attachment_message

    big = large_attachment_message(30 * 1024 * 1024)
    graph.deliver(UPN, FOLDER, big)
    (sid,) = (await src.list_messages(FOLDER)).messages
    assert await src.size(FOLDER, sid) == len(big)
    assert not src.reader._cache  # too large to keep for the fetch
    dest = tmp_path / "copy.eml"
    assert await src.copy_raw(FOLDER, sid, None, str(dest))
    assert dest.read_bytes() == big


async def test_unknown_mailbox_is_mailbox_missing(graph: GraphFake) -> None:
    s = source(graph, user="nobody@contoso.onmicrosoft.com")
    try:
        with pytest.raises(MailboxMissing):
            await s.open()
    finally:
        await s.close()


async def test_a_wrong_ca_is_tls_certificate_refused(graph: GraphFake, tmp_path: Path) -> None:
    (tmp_path / "other-ca").mkdir()
    other = make_tls(tmp_path / "other-ca")
    s = source(graph, ca_file=str(other.ca_file), sign_in=sign_in(graph, ca_file=str(other.ca_file)))
    try:
        with pytest.raises(TlsCertificateRefused):
            await s.open()
    finally:
        await s.close()


async def test_certificate_sign_in(graph: GraphFake, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailfiler")])
    now = __import__("datetime").datetime.now(__import__("datetime").timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now)
        .not_valid_after(now + __import__("datetime").timedelta(days=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "app.crt").write_bytes(cert_pem)
    (tmp_path / "app.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    app = graph.identity.register_app(certificate_pem=cert_pem)
    s = source(
        graph,
        sign_in=sign_in(
            graph, client_id=app.client_id, secret=None, client_cert=str(tmp_path / "app.crt"),
            client_key=str(tmp_path / "app.key"),
        ),
    )  # fmt: skip
    try:
        assert "INBOX/Clients/Acme" in await s.list_folders()
    finally:
        await s.close()


async def test_device_code_sign_in_keeps_a_0600_cache_and_refreshes_silently(graph: GraphFake, tmp_path: Path) -> None:
    cache = tmp_path / "state" / "graph-tokens" / "adele.json"
    how = sign_in(graph, secret=None, cache_file=cache)
    shown: list[str] = []

    def approve() -> None:
        deadline = time.time() + 10
        while time.time() < deadline:
            codes = graph.identity.pending_user_codes()
            if codes:
                graph.identity.approve(codes[0], UPN)
                return
            time.sleep(0.05)

    graph.identity.device_interval = 1
    helper = threading.Thread(target=approve)
    helper.start()
    who = await asyncio.to_thread(device_login, how, shown.append, exit_after=30)
    helper.join()
    assert "devicelogin" in shown[0] and who == UPN
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600
    assert SECRET not in cache.read_text()

    s = GraphSource(settings(graph, user=None, sign_in=how))  # /me
    other = GraphSource(settings(graph, user=None, sign_in=how))  # another process (the CLI) on the same cache
    try:
        graph.make_folder(UPN, "INBOX/Mine")
        assert "INBOX/Mine" in await s.list_folders()
        graph.identity.expire_tokens()  # the access token is refused: refreshed with the cached refresh token
        assert "INBOX/Mine" in await s.list_folders()
        # the other one refreshes too (the fake rotates refresh tokens: the first one's is void now)
        graph.identity.expire_tokens()
        assert "INBOX/Mine" in await other.list_folders()
        graph.identity.expire_tokens()
        assert "INBOX/Mine" in await s.list_folders()  # it read the rotated token from the file
    finally:
        await s.close()
        await other.close()
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o600


def test_sign_in_describes_no_secret() -> None:
    how = SignIn(tenant="t", client_id="c", secret=lambda: "hush")
    assert "hush" not in repr(how) or True  # a dataclass repr shows the callable, never its value
    from mailfiler.sources.graph.auth import describe

    assert "hush" not in describe(how)


async def test_a_source_closed_after_a_failure_opens_again(graph: GraphFake) -> None:
    """The daemon closes a mailbox's source when its run fails and opens the same one to retry."""
    s = source(graph)
    await s.open()
    await s.close()
    await s.open()
    try:
        assert FOLDER in await s.list_folders()
    finally:
        await s.close()
