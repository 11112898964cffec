"""The CalDAV and CardDAV targets against a real Radicale: the target contract,
and what only a server does (sync tokens, ETags on the wire, TLS, logins,
errors, batching)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from mailfiler.errors import SyncError, SyncItemNotFound, SyncTargetUnavailable
from mailfiler.sync.dav import CalDavTarget, CardDavTarget, DavTarget, parse_multistatus
from mailfiler.sync.target import Target
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
