"""The Source contract for the IMAP backend, against a real Dovecot.

Three ways to watch, each running the whole contract:

* ``TestImapNotify``: Dovecot as it is (NOTIFY: one listener connection);
* ``TestImapIdlePoll``: NOTIFY not used, one IDLE connection, the other
  folders polled with STATUS (the strategy for Gmail and Exchange);
* ``TestImapPlainServer``: a second Dovecot that advertises neither NOTIFY,
  CONDSTORE, QRESYNC, MOVE nor ESEARCH.

The admin is a separate plain-imaplib client (APPEND, STORE, UID MOVE,
UID EXPUNGE) plus ``doveadm mailbox create`` for folders, so names reach the
server in UTF-8 independently of mailfiler's modified UTF-7 encoder.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailfiler.sources.imap import ImapSettings, ImapSource
from tests.contract.source_contract import AdminMessage, Backend, MailboxAdmin, SourceContract
from tests.servers.dovecot import AdminClient, DovecotServer, ImapUser, start_dovecot

PLAIN_SERVER_DROPS = {"NOTIFY", "CONDSTORE", "QRESYNC", "MOVE", "ESEARCH"}


class ImapAdmin(MailboxAdmin):
    def __init__(self, user: ImapUser) -> None:
        self.user = user
        self.client = AdminClient(user)

    async def create_folder(self, folder: str) -> None:
        self.user.create_folder(folder)

    async def put(self, folder: str, data: bytes, *, seen: bool = False) -> AdminMessage:
        return AdminMessage(folder, self.client.append(folder, data, "S" if seen else ""))

    async def remove(self, msg: AdminMessage) -> None:
        self.client.expunge(msg.folder, int(msg.ref))  # type: ignore[call-overload]

    async def move(self, msg: AdminMessage, folder: str) -> AdminMessage:
        return AdminMessage(folder, self.client.move(msg.folder, int(msg.ref), folder))  # type: ignore[call-overload]

    async def flag(self, msg: AdminMessage, flags: str = "S") -> AdminMessage:
        self.client.store(msg.folder, int(msg.ref), flags)  # type: ignore[call-overload]
        return msg

    async def tag(self, msg: AdminMessage, *tags: str, remove: bool = False) -> None:
        self.client.select(msg.folder)
        op = "-FLAGS" if remove else "+FLAGS"
        self.client._ok(self.client.imap.uid("STORE", str(msg.ref), op, f"({' '.join(tags)})"), "STORE keywords")

    async def snapshot(self) -> object:
        return self.client.snapshot()


def imap_backend(user: ImapUser, **settings: object) -> Iterator[Backend]:
    admin = ImapAdmin(user)
    try:
        kwargs = {**user.settings_kwargs(), **settings}
        yield Backend(
            ImapSource(ImapSettings(**kwargs)),  # type: ignore[arg-type]
            admin,
            marking=lambda: ImapSource(ImapSettings(**kwargs, keywords=("$Tracked", "$TrackFailed"))),  # type: ignore[arg-type]
        )
    finally:
        admin.client.close()


class ImapContract(SourceContract):
    # Dovecot batches its pushes: a change reaches an IDLE client 0.5 s later
    watch_latency = 2.5
    quiet_period = 1.2
    watch_ready_timeout = 10.0


class TestImapNotify(ImapContract):
    @pytest.fixture
    def backend(self, imap_user: ImapUser) -> Iterator[Backend]:
        yield from imap_backend(imap_user)


class TestImapIdlePoll(ImapContract):
    @pytest.fixture
    def backend(self, imap_user: ImapUser) -> Iterator[Backend]:
        yield from imap_backend(imap_user, use_notify=False, max_idle=1, poll_interval=0.3)


@pytest.fixture(scope="module")
def plain_dovecot() -> Iterator[DovecotServer]:
    yield from start_dovecot(tls=False, drop=PLAIN_SERVER_DROPS)


class TestImapPlainServer(ImapContract):
    @pytest.fixture
    def backend(self, plain_dovecot: DovecotServer) -> Iterator[Backend]:
        user = plain_dovecot.add_user()
        try:
            yield from imap_backend(user, max_idle=1, poll_interval=0.3)
        finally:
            plain_dovecot.remove_user_mail(user.name)

    async def test_the_server_hides_the_dropped_capabilities(self, backend: Backend) -> None:
        source = backend.source
        assert isinstance(source, ImapSource)
        await source.open()
        try:
            assert "IDLE" in source.capabilities
            assert not PLAIN_SERVER_DROPS & source.capabilities
            assert not (source.condstore or source.qresync or source.move or source.notify)
        finally:
            await source.close()
