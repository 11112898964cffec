"""track_batch: several messages in one transaction, each in its own savepoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailfiler.service.runtime import MailboxRuntime, sync_config
from mailfiler.store import models as m
from mailfiler.tracking.batch import Item, track_batch
from mailfiler.tracking.parse import ParsedMessage, parse_message
from mailfiler.tracking.pipeline import Outcome, Tracker
from tests.mailgen import realistic_message
from tests.store.helpers import Store, counts, mailbox_config

FOLDER = "Kunder/Contoso"


@pytest.fixture
def env(store: Store, tmp_path: Path) -> tuple[Tracker, MailboxRuntime]:
    config = store.config(
        records=[{"entity": "account", "key": "contoso", "name": "Contoso AB", "domains": ["contoso.com"]}],
        mailboxes=[mailbox_config("anna", "anna@ourco.se", tmp_path / "md", {FOLDER: "account:contoso"})],
    )
    return store.tracker(config), sync_config(store.db, config)["anna"]


def _items(rt: MailboxRuntime, msgs: list[ParsedMessage]) -> list[Item]:
    return [Item(rt.ctx, rt.folders[FOLDER], str(i), msg, token=f"t{i}") for i, msg in enumerate(msgs)]


def _cursor() -> tuple[int, str | None]:
    c = m.FolderCursor.get(m.FolderCursor.folder == FOLDER)
    return c.processed, c.token


def test_a_batch_tracks_every_message_and_commits_the_last_token(store: Store, env) -> None:
    tracker, rt = env
    msgs = [parse_message(realistic_message(i, with_attachment_every=2)) for i in range(6)]
    results = track_batch(tracker, _items(rt, msgs))
    assert [r.event for r in results if isinstance(r, Outcome)] == ["tracked"] * 6
    assert counts()["Activity"] == 6 and counts()["Location"] == 6 and counts()["Attachment"] == 3
    assert _cursor() == (6, "t5")
    # replayed (a crash before the caller noted the batch): nothing twice
    again = track_batch(tracker, _items(rt, msgs))
    assert {r.event for r in again if isinstance(r, Outcome)} == {"known"}
    assert counts()["Activity"] == 6 and _cursor() == (6, "t5")


def test_a_failing_message_rolls_back_alone_and_stops_the_batch(
    store: Store, env, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, rt = env
    msgs = [parse_message(realistic_message(i)) for i in range(5)]
    original = Tracker._add_parties

    def add_parties(self, activity, msg, **kwargs):
        original(self, activity, msg, **kwargs)  # its rows are written, then rolled back
        if msg.message_id == msgs[2].message_id:
            raise RuntimeError("boom")

    monkeypatch.setattr(Tracker, "_add_parties", add_parties)
    results = track_batch(tracker, _items(rt, msgs))
    assert [type(r).__name__ for r in results] == ["Outcome", "Outcome", "RuntimeError", "NoneType", "NoneType"]
    assert {a.message_id for a in m.Activity.select()} == {msgs[0].message_id, msgs[1].message_id}
    assert m.ActivityParty.select().join(m.Activity).where(m.Activity.message_id == msgs[2].message_id).count() == 0
    assert counts()["Location"] == 2
    # the token covers only what committed
    assert _cursor() == (2, "t1")
