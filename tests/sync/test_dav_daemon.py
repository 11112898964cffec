"""The daemon polls a CardDAV server with its sync token: a card the user saves in
their client reaches the CRM within the server's interval."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.daemonproc import DaemonProc, World, query, scalar, wait_until
from tests.servers.radicale import DavUser, dav_user, radicale

__all__ = ["dav_user", "radicale"]

pytestmark = pytest.mark.timeout(120)

CARD = (
    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:daemon-dav-1\r\nFN:Åsa Öberg\r\nN:Öberg;Åsa;;;\r\n"
    "EMAIL:asa@fabrikam.com\r\nCATEGORIES:Tracked\r\nEND:VCARD\r\n"
)


def test_daemon_polls_the_server_and_tracks_a_saved_card(tmp_path: Path, dav_user: DavUser) -> None:
    url = dav_user.url("crm-contacts")
    (tmp_path / "Maildir").mkdir()  # the mailbox root exists; mailfiler never creates it
    world = World(
        tmp_path / "w",
        tmp_path / "Maildir",
        [("Tracked/Contoso", "account:contoso")],
        mailbox_extra={
            "create_missing_folders": True,
            "sync": {
                "carddav": {
                    "url": url,
                    "username": dav_user.name,
                    "password_file": str(dav_user.password_file),
                    "interval": 5,
                },
                "interval": 3600,  # only the server's own interval can explain a second sync
            },
        },
    )
    with DaemonProc(world.config, tmp_path / "daemon.log").start() as daemon:
        wait_until(
            lambda: (
                scalar(world.db, "SELECT COUNT(*) FROM sync_collection WHERE token IS NOT NULL", before_migration=True)
                == 1
            ),
            timeout=30,
            what="the first sync (the address book made, a token kept)",
            state=daemon.log_tail,
        )

        async def save() -> int:
            async with httpx.AsyncClient(auth=(dav_user.name, dav_user.password)) as client:
                return (await client.put(url + "asa.vcf", content=CARD.encode())).status_code

        assert asyncio.run(save()) == 201
        rows = wait_until(
            lambda: query(world.db, "SELECT name, key FROM record WHERE entity = 'contact'"),
            timeout=20,
            what="the tracked contact in the CRM",
            state=daemon.log_tail,
        )
        assert rows == [("Åsa Öberg", "asa@fabrikam.com")]
        assert daemon.terminate() == 0
    assert any(e.get("event") == "sync-tracked" for e in daemon.events())
    assert dav_user.password not in (tmp_path / "daemon.log").read_text(encoding="utf-8")
