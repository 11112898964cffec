"""The daemon syncs on a change in a vdir folder (watchfiles), not only on its interval."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemonproc import DaemonProc, World, query, scalar, wait_until

pytestmark = pytest.mark.timeout(120)

CARD = """BEGIN:VCARD\r
VERSION:3.0\r
UID:daemon-test-1\r
FN:Åsa Öberg\r
N:Öberg;Åsa;;;\r
EMAIL:asa@fabrikam.com\r
CATEGORIES:Tracked\r
END:VCARD\r
"""


def test_daemon_tracks_a_card_saved_into_the_address_book(tmp_path: Path) -> None:
    vdir = tmp_path / "dav"
    (tmp_path / "Maildir").mkdir()  # the mailbox root exists; mailfiler never creates it
    world = World(
        tmp_path / "w",
        tmp_path / "Maildir",
        [("Tracked/Contoso", "account:contoso")],
        mailbox_extra={
            "create_missing_folders": True,
            "sync": {
                "vdir": {"contacts": str(vdir / "contacts"), "calendar": str(vdir / "calendar")},
                "interval": 3600,  # only a change can explain a sync within the test
            },
        },
    )
    with DaemonProc(world.config, tmp_path / "daemon.log").start() as daemon:
        wait_until(
            lambda: (
                scalar(
                    world.db,
                    "SELECT COUNT(*) FROM sync_collection WHERE last_sync_at IS NOT NULL",
                    before_migration=True,
                )
                == 2
            ),
            timeout=30,
            what="the first sync",
            state=daemon.log_tail,
        )
        tmp = vdir / "contacts" / ".new.tmp"
        tmp.write_text(CARD, encoding="utf-8")
        tmp.rename(vdir / "contacts" / "daemon-test-1.vcf")
        rows = wait_until(
            lambda: query(world.db, "SELECT name, key FROM record WHERE entity = 'contact'"),
            timeout=20,
            what="the tracked contact in the CRM",
            state=daemon.log_tail,
        )
        assert rows == [("Åsa Öberg", "asa@fabrikam.com")]
        assert daemon.terminate() == 0
    assert any(e.get("event") == "sync-tracked" for e in daemon.events())
