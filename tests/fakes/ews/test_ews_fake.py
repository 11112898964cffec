"""The fake Exchange (tests/servers/ews) driven by the real exchangelib, as the EWS backend will be."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests.adapters
import requests.exceptions
from exchangelib import (
    DELEGATE,
    IMPERSONATION,
    Account,
    Build,
    CalendarItem,
    Configuration,
    Contact,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    Message,
    Version,
)
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorImpersonateUserDenied,
    ErrorInvalidSyncStateData,
    ErrorIrresolvableConflict,
    ErrorItemNotFound,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorSubscriptionNotFound,
    ErrorTimeoutExpired,
    TransportError,
    UnauthorizedError,
)
from exchangelib.indexed_properties import EmailAddress
from exchangelib.items import NEVER_OVERWRITE
from exchangelib.properties import Notification
from exchangelib.protocol import BaseProtocol, FailFast, FaultTolerance, close_connections

from tests.mailgen import malformed_corpus
from tests.servers.ews import EwsServer
from tests.servers.ews.soap import EwsError
from tests.servers.tls import make_tls

ALICE, SVC, BOB, CAROL = "alice@example.com", "svc@example.com", "bob@example.com", "carol@example.com"
USERS = [
    {"smtp": ALICE, "password": "pw-alice", "folders": ["Inbox/Clients/Contoso", "Inbox/Clients/Müller & Söhne"]},
    {"smtp": SVC, "username": "svc", "password": "pw-svc", "impersonate": [ALICE, CAROL]},
    {"smtp": BOB, "password": "pw-bob", "delegates": [ALICE]},
    {"smtp": CAROL, "password": "pw-carol"},
]
EXCHANGE_2016 = Version(build=Build(15, 1, 2507, 6))


def mime(n: int, subject: str = "Hello") -> bytes:
    return (
        f"From: Carol <carol@example.org>\r\nTo: {ALICE}\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
def server() -> Iterator[EwsServer]:
    with EwsServer(USERS) as fake:
        yield fake
    close_connections()  # exchangelib caches protocols (sessions, retry policy) per endpoint and credentials


def account(
    server: EwsServer,
    login: str = ALICE,
    password: str = "pw-alice",
    *,
    auth: str = "basic",
    mailbox: str = ALICE,
    access: str = DELEGATE,
    retry: FailFast | FaultTolerance | None = None,
    max_connections: int | None = None,
) -> Account:
    config = Configuration(
        max_connections=max_connections,
        service_endpoint=server.ews_url,
        credentials=Credentials(login, password),
        auth_type=auth,
        version=EXCHANGE_2016,
        retry_policy=retry or FailFast(),
    )
    return Account(mailbox, config=config, autodiscover=False, access_type=access)


def test_folder_tree_with_non_ascii_names_and_ids_that_survive_a_rename(server: EwsServer) -> None:
    acc = account(server)
    clients = acc.inbox / "Clients"
    assert sorted(f.name for f in clients.children) == ["Contoso", "Müller & Söhne"]
    contoso = clients / "Contoso"
    assert contoso.id == server.folder_id(ALICE, "Inbox/Clients/Contoso")
    server.rename_folder(ALICE, "Inbox/Clients/Contoso", "Contoso Ltd")
    old_key = contoso.changekey
    contoso.refresh()
    assert contoso.name == "Contoso Ltd"
    assert contoso.changekey != old_key


def test_sync_hierarchy_reports_creates_updates_and_deletes(server: EwsServer) -> None:
    acc = account(server)
    first = list(acc.msg_folder_root.sync_hierarchy())
    assert {"Contoso", "Müller & Söhne", "Inbox"} <= {f.name for kind, f in first if kind == "create"}
    state = acc.msg_folder_root.folder_sync_state
    server.create_folder(ALICE, "Inbox/Clients/Fabrikam")
    server.rename_folder(ALICE, "Inbox/Clients/Contoso", "Contoso Ltd")
    server.delete_folder(ALICE, "Inbox/Clients/Müller & Söhne")
    acc.msg_folder_root.folder_sync_state = state
    changes = list(acc.msg_folder_root.sync_hierarchy())
    kinds = sorted((kind, getattr(f, "name", None)) for kind, f in changes)
    assert kinds == [("create", "Fabrikam"), ("delete", None), ("update", "Contoso Ltd")]


def test_sync_items_in_pages_then_changes_of_every_kind(server: EwsServer) -> None:
    ids = [server.deliver(ALICE, mime(n), "Inbox/Clients/Contoso") for n in range(25)]
    acc = account(server)
    folder = acc.inbox / "Clients" / "Contoso"
    seen = list(folder.sync_items(max_changes_returned=10, only_fields=["message_id", "subject"]))
    assert [kind for kind, _ in seen] == ["create"] * 25
    assert [item.message_id for _, item in seen] == [f"<m{n}@example.org>" for n in range(25)]
    assert server.operations().count("SyncFolderItems") == 3  # 10 + 10 + 5, until IncludesLastItemInRange
    state = folder.item_sync_state
    assert list(folder.sync_items(sync_state=state)) == []

    server.set_categories(ids[0], ["Tracked in CRM"])
    server.set_read(ids[1])
    server.delete_item(ids[2])
    moved = server.move_item(ids[3], "Inbox")
    new = server.deliver(ALICE, mime(99), "Inbox/Clients/Contoso")
    changes = list(folder.sync_items(sync_state=state, only_fields=["categories"]))
    got = {(kind, item[0].id if kind == "read_flag_change" else item.id) for kind, item in changes}
    assert got == {
        ("update", ids[0]),
        ("read_flag_change", ids[1]),
        ("delete", ids[2]),
        ("delete", ids[3]),
        ("create", new),
    }
    inbox_changes = list(acc.inbox.sync_items(only_fields=["message_id"]))
    assert [(k, i.id, i.message_id) for k, i in inbox_changes] == [("create", moved, "<m3@example.org>")]


def test_invalid_sync_state_is_refused(server: EwsServer) -> None:
    server.deliver(ALICE, mime(1), "Inbox/Clients/Contoso")
    folder = account(server).inbox / "Clients" / "Contoso"
    list(folder.sync_items())
    state = folder.item_sync_state
    server.invalidate_sync_states(ALICE)
    with pytest.raises(ErrorInvalidSyncStateData):
        list(folder.sync_items(sync_state=state))
    with pytest.raises(ErrorInvalidSyncStateData):
        list(folder.sync_items(sync_state="bm90IG91cnM="))
    folder.item_sync_state = None
    assert [k for k, _ in folder.sync_items()] == ["create"]  # a full listing still works
    server.inject_error("SyncFolderItems", "ErrorInvalidSyncStateData")
    with pytest.raises(ErrorInvalidSyncStateData):
        list(folder.sync_items(sync_state=folder.item_sync_state))


def test_mime_fetched_in_batches_and_missing_items_reported(server: EwsServer) -> None:
    ids = [server.deliver(ALICE, mime(n), "Inbox") for n in range(30)]
    server.delete_item(ids[7])
    acc = account(server)
    before = len(server.operations())
    got = list(acc.fetch(ids=[(i, None) for i in ids], only_fields=["mime_content"], chunk_size=15))
    assert server.operations()[before:].count("GetItem") == 2  # 30 ids in 2 requests
    assert isinstance(got[7], ErrorItemNotFound)
    assert [g.mime_content for n, g in enumerate(got) if n != 7] == [mime(n) for n in range(30) if n != 7]
    first = next(iter(acc.fetch(ids=[(ids[0], None)])))  # every property exchangelib asks for by default
    assert (first.message_id, first.subject, first.author.email_address) == (
        "<m0@example.org>",
        "Hello 0",
        "carol@example.org",
    )
    assert (first.sender.email_address, first.display_to, first.is_read) == ("carol@example.org", ALICE, False)
    assert {h.name: h.value for h in first.headers}["Message-ID"] == "<m0@example.org>"
    server.inject_error("GetItem", "ErrorItemNotFound")
    assert isinstance(next(iter(acc.fetch(ids=[(ids[0], None)]))), ErrorItemNotFound)
    server.inject_drop("GetItem", after_bytes=2000)  # the connection breaks in the middle of a batch
    with pytest.raises(TransportError):
        list(acc.fetch(ids=[(i, None) for i in ids[:15]], only_fields=["mime_content"]))
    assert len(list(acc.fetch(ids=[(i, None) for i in ids[:15]], only_fields=["mime_content"]))) == 15


def test_categories_update_bumps_the_change_key_and_a_stale_one_conflicts(server: EwsServer) -> None:
    item_id = server.deliver(ALICE, mime(1), "Inbox")
    acc = account(server)
    item = next(iter(acc.fetch(ids=[(item_id, None)])))
    old_key = item.changekey
    item.categories = ["Tracked in CRM"]
    item.save(update_fields=["categories"], conflict_resolution=NEVER_OVERWRITE)
    assert item.changekey != old_key
    assert server.item(item_id).categories == ["Tracked in CRM"]
    assert server.item(item_id).is_read is False  # never marked read
    server.touch_item(item_id)  # Outlook changed it meanwhile
    item.categories = ["Not tracked (see CRM)"]
    with pytest.raises(ErrorIrresolvableConflict):
        item.save(update_fields=["categories"], conflict_resolution=NEVER_OVERWRITE)
    fresh = next(iter(acc.fetch(ids=[(item_id, None)])))
    fresh.categories = ["Not tracked (see CRM)"]
    fresh.save(update_fields=["categories"], conflict_resolution=NEVER_OVERWRITE)
    assert server.item(item_id).categories == ["Not tracked (see CRM)"]


def test_move_gives_a_new_id_and_delete(server: EwsServer) -> None:
    item_id = server.deliver(ALICE, mime(1), "Inbox")
    acc = account(server)
    item = next(iter(acc.fetch(ids=[(item_id, None)])))
    item.move(acc.inbox / "Clients" / "Contoso")
    assert item.id != item_id
    assert [i.id for i in server.items(ALICE, "Inbox/Clients/Contoso")] == [item.id]
    with pytest.raises(EwsError, match="ErrorItemNotFound"):
        server.item(item_id)
    item.delete()
    assert server.items(ALICE, "Inbox/Clients/Contoso") == []


def test_create_message_contact_calendar_item_and_folder(server: EwsServer) -> None:
    acc = account(server)
    message = Message(account=acc, folder=acc.inbox, mime_content=mime(5))
    message.save()
    assert server.item(message.id).headers["message-id"] == "<m5@example.org>"
    contact = Contact(account=acc, folder=acc.contacts, display_name="Ada Lovelace", given_name="Ada", surname="Lovelace",
                      email_addresses=[EmailAddress(email="ada@example.org", label="EmailAddress1")])  # fmt: skip
    contact.save()
    contact.surname = "King"
    contact.save(update_fields=["surname"], conflict_resolution=NEVER_OVERWRITE)
    got = next(iter(acc.fetch(ids=[contact])))
    assert (got.given_name, got.surname, got.email_addresses[0].email) == ("Ada", "King", "ada@example.org")
    tz = EWSTimeZone("UTC")
    start = EWSDateTime(2026, 12, 7, 9, 0, tzinfo=tz)
    event = CalendarItem(account=acc, folder=acc.calendar, subject="Review", start=start, end=start.replace(hour=10))
    event.save()
    got_event = next(iter(acc.fetch(ids=[event])))
    assert (got_event.subject, got_event.start, bool(got_event.uid)) == ("Review", start, True)
    new_folder = acc.inbox.__class__(parent=acc.inbox, name="Neu – Ärger")
    new_folder.save()
    assert server.folder_id(ALICE, "Inbox/Neu – Ärger") == new_folder.id
    new_folder.name = "Neu"
    new_folder.save(update_fields=["name"])
    new_folder.move(acc.inbox / "Clients")
    assert server.folder_id(ALICE, "Inbox/Clients/Neu") == new_folder.id
    new_folder.delete()
    with pytest.raises(EwsError, match="ErrorFolderNotFound"):
        server.folder(ALICE, "Inbox/Clients/Neu")


def _stream(acc: Account, subscription: str | list[str], minutes: int = 1) -> list[Notification]:
    ids = [subscription] if isinstance(subscription, str) else subscription
    return list(acc.inbox.get_streaming_events(ids, connection_timeout=minutes))


def test_streaming_notifications_closed_after_the_lifetime_and_reconnect(server: EwsServer) -> None:
    server.stream_lifetime = 1.0
    server.hub.heartbeat = 0.3
    acc = account(server, "svc", "pw-svc", auth="NTLM", access=IMPERSONATION)
    subscription = acc.inbox.subscribe_to_streaming()
    first = server.deliver(ALICE, mime(1), "Inbox")
    timer = threading.Timer(0.4, lambda: server.move_item(first, "Inbox/Clients/Contoso"))
    timer.start()
    t0 = time.monotonic()
    notifications = _stream(acc, subscription)
    timer.join()
    assert 0.9 < time.monotonic() - t0 < 5  # ended by ConnectionStatus=Closed, not by a timeout
    events = [type(e).__name__ for n in notifications for e in n.events]
    assert events == ["CreatedEvent", "NewMailEvent", "ModifiedEvent", "MovedEvent"]
    assert len(server.hub.delays) == 4 and max(server.hub.delays) < 2  # the fake's own notification delay
    moved = notifications[-1].events[-1]
    assert moved.old_item_id.id == first and moved.item_id.id != first
    server.deliver(ALICE, mime(2), "Inbox")  # reconnect: what happened meanwhile is queued
    again = [type(e).__name__ for n in _stream(acc, subscription) for e in n.events]
    assert again == ["CreatedEvent", "NewMailEvent", "ModifiedEvent"]
    acc.inbox.unsubscribe(subscription)
    assert server.subscriptions(ALICE) == []


def test_streaming_closed_on_demand_dropped_mid_stream_and_lost_events(server: EwsServer) -> None:
    acc = account(server)
    subscription = acc.inbox.subscribe_to_streaming()
    threading.Timer(0.3, server.close_streams).start()
    t0 = time.monotonic()
    assert _stream(acc, subscription) == []
    assert time.monotonic() - t0 < 5
    # exchangelib lets the broken chunked response through as requests' ChunkedEncodingError
    server.inject_drop("GetStreamingEvents", after_bytes=100)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _stream(acc, subscription)
    threading.Timer(0.3, server.drop_streams).start()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _stream(acc, subscription)
    server.lose_events(ALICE)
    with pytest.raises(Exception, match="lost"):
        _stream(acc, subscription)


def test_restart_cuts_streams_and_requests_and_keeps_the_mailboxes(server: EwsServer) -> None:
    ids = [server.deliver(ALICE, mime(n), "Inbox") for n in range(3)]
    acc = account(server)
    list(acc.inbox.sync_items(only_fields=["message_id"]))
    state = acc.inbox.item_sync_state
    subscription = acc.inbox.subscribe_to_streaming()
    failures: list[BaseException] = []

    def stream() -> None:
        try:
            _stream(acc, subscription)
        except Exception as e:  # noqa: BLE001  (what the stream ended with is the assertion)
            failures.append(e)

    streaming = threading.Thread(target=stream)
    streaming.start()
    deadline = time.monotonic() + 5
    while not server.hub.open_streams[ALICE] and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    server.restart(down_for=0.3)
    streaming.join(timeout=5)
    assert len(failures) == 1 and isinstance(failures[0], requests.exceptions.RequestException)
    assert time.monotonic() - t0 >= 0.3
    new = server.deliver(ALICE, mime(9), "Inbox")
    again = account(server)
    again.inbox.item_sync_state = state  # the sync state survived the restart
    assert [i.id for _, i in again.inbox.sync_items(only_fields=["message_id"])] == [new]
    assert len(ids) == 3 and server.subscriptions(ALICE)


def test_server_busy_back_off_is_honoured(server: EwsServer) -> None:
    acc = account(server, retry=FaultTolerance(max_wait=20))
    server.inject_busy("GetFolder", back_off_ms=700, times=1)
    t0 = time.monotonic()
    assert acc.root.get_folder(acc.inbox).name == "Inbox"
    assert time.monotonic() - t0 >= 0.7
    server.throttle_for(1.0, back_off_ms=300)  # every request refused for a second
    t0 = time.monotonic()
    acc.inbox.refresh()
    assert 1.0 <= time.monotonic() - t0 < 5
    assert server.faults.fired["*"] <= 5  # it waited as told, it did not hammer
    close_connections()  # exchangelib caches one protocol (and its retry policy) per endpoint and credentials
    strict = account(server)
    inbox = strict.inbox
    server.inject_busy("GetFolder", back_off_ms=100, times=1)
    with pytest.raises(ErrorServerBusy) as raised:
        inbox.refresh()
    assert raised.value.back_off == 0.1


def test_http_401_503_and_a_dropped_connection(server: EwsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(BaseProtocol, "RETRY_WAIT", 0.05)
    acc = account(server, retry=FaultTolerance(max_wait=10))
    acc.inbox.refresh()
    server.inject_unavailable("GetFolder", times=2)
    server.inject_unauthorized("GetFolder", times=1)
    acc.inbox.refresh()  # each retried by exchangelib's fault tolerance
    assert server.faults.fired["GetFolder"] == 3
    # a dropped connection is not retried with a session pool of 1: the backend must retry it
    server.inject_drop("GetFolder", times=1)
    with pytest.raises(ErrorTimeoutExpired):
        acc.inbox.refresh()
    acc.inbox.refresh()
    close_connections()
    strict = account(server)
    server.inject_unauthorized("GetFolder")
    with pytest.raises(UnauthorizedError):
        strict.inbox.refresh()


def test_basic_and_ntlm_credentials_and_impersonation_rights(server: EwsServer) -> None:
    for login, auth in (("EXAMPLE\\alice", "NTLM"), (ALICE, "NTLM"), ("alice", "basic")):
        assert account(server, login, "pw-alice", auth=auth).inbox.name == "Inbox"
    for auth in ("NTLM", "basic"):
        with pytest.raises(UnauthorizedError):
            account(server, ALICE, "wrong", auth=auth).inbox  # noqa: B018
    assert account(server, "EXAMPLE\\svc", "pw-svc", auth="NTLM", access=IMPERSONATION).inbox.name == "Inbox"
    assert server.requests[-1].headers["x-anchormailbox"] == ALICE
    with pytest.raises(ErrorImpersonateUserDenied):
        account(server, "EXAMPLE\\svc", "pw-svc", auth="NTLM", mailbox=BOB, access=IMPERSONATION).inbox  # noqa: B018
    with pytest.raises(ErrorImpersonateUserDenied):
        account(server, BOB, "pw-bob", access=IMPERSONATION).inbox  # noqa: B018


def test_delegate_access_and_the_anchor_mailbox(server: EwsServer) -> None:
    assert account(server, ALICE, "pw-alice", mailbox=BOB).inbox.name == "Inbox"  # Bob granted Alice access
    with pytest.raises(ErrorAccessDenied):
        account(server, BOB, "pw-bob", mailbox=ALICE).inbox  # noqa: B018
    with pytest.raises(ErrorNonExistentMailbox):
        account(server, mailbox="nobody@example.com").inbox  # noqa: B018  (X-AnchorMailbox cannot be routed)


def test_find_items_in_pages_and_a_calendar_view(server: EwsServer) -> None:
    acc = account(server)
    for n in range(7):
        Contact(account=acc, folder=acc.contacts, display_name=f"Contact {n}", given_name=f"C{n}").save()
    assert sorted(c.display_name for c in acc.contacts.all().only("display_name")) == [f"Contact {n}" for n in range(7)]
    paged = acc.contacts.all().only("display_name")
    paged.page_size = 3
    before = server.operations().count("FindItem")
    assert len(list(paged)) == 7
    assert server.operations().count("FindItem") - before == 3
    tz = EWSTimeZone("UTC")
    for day in (1, 10):
        start = EWSDateTime(2026, 12, day, 9, 0, tzinfo=tz)
        CalendarItem(
            account=acc, folder=acc.calendar, subject=f"Day {day}", start=start, end=start.replace(hour=10)
        ).save()
    window = acc.calendar.view(start=EWSDateTime(2026, 12, 5, tzinfo=tz), end=EWSDateTime(2026, 12, 20, tzinfo=tz))
    assert [e.subject for e in window] == ["Day 10"]


def test_streaming_affinity_and_the_connection_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    with EwsServer(USERS, backends=4) as server:  # alice and carol live on different backends
        assert server.backend_of(ALICE) != server.backend_of(CAROL)
        alice = account(server, "svc", "pw-svc", access=IMPERSONATION, max_connections=5)
        first = alice.inbox.subscribe_to_streaming()
        assert alice.affinity_cookie  # from Set-Cookie: X-BackEndOverrideCookie
        close_connections()  # new sessions: no cookie replayed
        stray = account(server, "svc", "pw-svc", mailbox=CAROL, access=IMPERSONATION)
        lost = stray.inbox.subscribe_to_streaming()  # anchored to Carol: another backend
        with pytest.raises(ErrorSubscriptionNotFound):
            _stream(alice, [first, lost])
        carol = account(server, "svc", "pw-svc", mailbox=CAROL, access=IMPERSONATION)
        carol.affinity_cookie = alice.affinity_cookie  # replay the cookie: the backend of Alice's subscription
        grouped = carol.inbox.subscribe_to_streaming()
        server.stream_lifetime = 0.3
        server.deliver(CAROL, mime(1), "Inbox")
        notifications = _stream(alice, [first, grouped])
        assert [n.subscription_id for n in notifications] == [grouped]

    close_connections()


def test_at_most_three_streams_per_account(server: EwsServer) -> None:
    """Exchange Server's HangingConnectionLimit (raw HTTP: exchangelib shrinks its pool and retries)."""
    subscription = account(server).inbox.subscribe_to_streaming()
    body = (
        '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"'
        ' xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Body><m:GetStreamingEvents>'
        f"<m:SubscriptionIds><t:SubscriptionId>{subscription}</t:SubscriptionId></m:SubscriptionIds>"
        "<m:ConnectionTimeout>1</m:ConnectionTimeout></m:GetStreamingEvents></s:Body></s:Envelope>"
    ).encode()
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(httpx.Client(auth=(ALICE, "pw-alice"), timeout=10)) for _ in range(4)]
        streams = [stack.enter_context(c.stream("POST", server.ews_url, content=body)) for c in clients[:3]]
        readers = [s.iter_bytes() for s in streams]
        assert all(next(r).startswith(b"<?xml") for r in readers)  # three open streams
        refused = clients[3].post(server.ews_url, content=body)
        assert b"ErrorExceededConnectionCount" in refused.content
        server.close_streams()
        assert all(b"<m:ConnectionStatus>Closed" in b"".join(r) for r in readers)
    deadline = time.monotonic() + 5
    while server.hub.open_streams[ALICE] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.hub.open_streams[ALICE] == 0  # the slots are free again


def _ca_adapter(ca: Path) -> type[requests.adapters.HTTPAdapter]:
    class CaAdapter(requests.adapters.HTTPAdapter):
        def cert_verify(self, conn, url, verify, cert):  # type: ignore[no-untyped-def]
            super().cert_verify(conn=conn, url=url, verify=str(ca), cert=cert)

    return CaAdapter


def test_tls_with_the_test_ca_and_refused_with_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls(tmp_path)
    with EwsServer(USERS, tls=tls) as fake:
        monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", _ca_adapter(tls.ca_file))
        assert account(fake, auth="NTLM").inbox.name == "Inbox"
        close_connections()
        monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", _ca_adapter(tls.wrong_ca_file))
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            account(fake).inbox  # noqa: B018


def test_inbox_rules_round_trip(server: EwsServer) -> None:
    from exchangelib.properties import Actions, Conditions, Rule

    acc = account(server)
    rule = Rule(account=acc, display_name="To Contoso", priority=1, is_enabled=True,
                conditions=Conditions(contains_sender_strings=["contoso.com"]),
                actions=Actions(move_to_folder=acc.inbox / "Clients" / "Contoso"))  # fmt: skip
    rule.save()
    assert [r.display_name for r in acc.rules] == ["To Contoso"]
    rule.delete()
    assert acc.rules == []


def test_runs_on_its_own_from_a_users_file(tmp_path: Path) -> None:
    users = tmp_path / "users.yaml"
    users.write_text(f"version: '2019'\nusers:\n  - {{smtp: {ALICE}, password: pw-alice, folders: [Inbox/Tracked]}}\n")
    with subprocess.Popen(
        [sys.executable, "-m", "tests.servers.ews", "--port", "0", "--users", str(users)],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[3],
    ) as proc:  # fmt: skip
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            url = line.split("EWS at ")[1].split(")")[0]
            config = Configuration(service_endpoint=url, credentials=Credentials(ALICE, "pw-alice"), auth_type="NTLM",
                                   version=Version(build=Build(15, 2, 1544, 4)), retry_policy=FailFast())  # fmt: skip
            acc = Account(ALICE, config=config, autodiscover=False, access_type=DELEGATE)
            assert (acc.inbox / "Tracked").name == "Tracked"
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


def test_malformed_mail_is_stored_and_fetched_byte_for_byte(server: EwsServer) -> None:
    corpus = {name: raw for name, raw in malformed_corpus().items() if raw}  # Exchange holds no empty item
    corpus["control characters"] = b"Subject: a\x00b\x1bc \xff\xfe\r\nMessage-ID: <ctl@x>\r\n\r\nbody\x00\r\n"
    ids = {name: server.deliver(ALICE, raw, "Inbox") for name, raw in corpus.items()}
    acc = account(server)
    got = list(acc.fetch(ids=[(i, None) for i in ids.values()], only_fields=["mime_content", "subject", "body"]))
    assert [g.mime_content for g in got] == list(corpus.values())
    assert got[-1].subject == "abc \ufffd\ufffd"
    assert len(list(acc.inbox.sync_items(only_fields=["subject", "body"]))) == len(corpus)


def test_items_changed_after_a_page_boundary_are_still_creates_for_a_client_paging_through(server: EwsServer) -> None:
    """Exchange keeps per client what it was told: an item created before the state of a page
    boundary but changed after it is a Create on a later page, not an Update of an item the
    client never saw (found by the EWS backend's crash tests: categories set on tracked mail)."""
    ids = [server.deliver(ALICE, mime(n), "Inbox/Clients/Contoso") for n in range(20)]
    for item_id in ids[:12]:
        server.set_categories(item_id, ["Tracked in CRM"])
    folder = account(server).inbox / "Clients" / "Contoso"
    seen = list(folder.sync_items(max_changes_returned=7, only_fields=["message_id"]))
    creates = [item.id for kind, item in seen if kind == "create"]
    assert sorted(creates) == sorted(ids) and len(creates) == 20
    assert list(folder.sync_items(sync_state=folder.item_sync_state)) == []
