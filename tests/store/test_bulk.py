"""The writer's batch mode (Writer.apply_batch, the bulk write of a backfill batch) writes
exactly the rows its single mode writes message by message (Tracker.track), in SQLite and
PostgreSQL, also for a folder the rules decide, and steps aside for every batch that is
not its case."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from mailfiler.service.runtime import MailboxRuntime, sync_config
from mailfiler.store import models as m
from mailfiler.tracking.batch import Item, may_batch, track_batch
from mailfiler.tracking.parse import AttachmentPart, ParsedMessage, parse_message
from mailfiler.tracking.pipeline import Outcome, Tracker
from mailfiler.tracking.writer import Writer, batchable
from tests.mailgen import realistic_message
from tests.store.helpers import Store, mailbox_config, make_message

FOLDER, UNFILED = "Kunder/Contoso", "Unfiled"


@pytest.fixture
def env(store: Store, tmp_path: Path) -> tuple[Tracker, MailboxRuntime]:
    config = store.config(
        records=[
            {"entity": "account", "key": "contoso", "name": "Contoso AB", "domains": ["contoso.com"]},
            {"entity": "contact", "key": "erik", "name": "Erik", "emails": ["erik@fabrikam.com"]},
            # two records on one domain: a party linked to both (ambiguous_addresses: all)
            {"entity": "account", "key": "fabrikam", "name": "Fabrikam", "domains": ["fabrikam.com"]},
            {"entity": "account", "key": "fabrikam-2", "name": "Fabrikam 2", "domains": ["fabrikam.com"]},
        ],
        mailboxes=[
            mailbox_config("anna", "anna@contoso.com", tmp_path / "md", {FOLDER: "account:contoso", UNFILED: None})
        ],
    )
    return store.tracker(config), sync_config(store.db, config)["anna"]


def _corpus() -> list[ParsedMessage]:
    msgs = [parse_message(realistic_message(i, with_attachment_every=3)) for i in range(40)]
    msgs += [
        # outgoing (from the owner), one address in two roles, Bcc, a reply
        parse_message(
            make_message(
                "<out@contoso.com>",
                sender="Anna <anna@contoso.com>",
                to=["Erik <erik@fabrikam.com>", "x@fabrikam.com"],
                cc=["erik@fabrikam.com"],
                bcc=["boss@contoso.com"],
                subject="Re: Offert",
            )
        ),
        # no Message-ID: a synthetic one; the same attachment as another message (one blob)
        parse_message(make_message(None, subject="utan id", attachments=[("a.pdf", b"%PDF-1.4 same")])),
        parse_message(make_message("<same-blob@x>", attachments=[("b.pdf", b"%PDF-1.4 same"), ("c.txt", b"c")])),
        # over blobs.INLINE_MAX: a file, its row without data
        parse_message(make_message("<large-blob@x>", attachments=[("scan.tif", bytes(range(256)) * 600)])),
    ]
    return msgs


def _items(rt: MailboxRuntime, msgs: list[ParsedMessage], folder: str = FOLDER) -> list[Item]:
    fctx = rt.folders[folder]
    return [Item(rt.ctx, fctx, f"s{i}", msg, may_be_shunted=False, token=f"t{i}") for i, msg in enumerate(msgs)]


def _rows() -> dict[str, Any]:
    """Everything tracking wrote, keyed by Message-ID (ids and times left out)."""
    out: dict[str, Any] = {}
    skip = {"id", "first_seen_at", "updated_at"}
    for a in m.Activity.select():
        row = {k: v for k, v in a.__data__.items() if k not in skip}
        row["parties"] = sorted(
            (p.role, p.address, p.display_name, p.record.ref if p.record_id else None)
            for p in m.ActivityParty.select().where(m.ActivityParty.activity == a)
        )
        row["attachments"] = sorted(
            (t.position, t.filename, t.content_type, t.size, t.blob_id)
            for t in m.Attachment.select().where(m.Attachment.activity == a)
        )
        row["locations"] = sorted(
            (loc.mailbox.name, loc.folder, loc.source_id, loc.gone_at)
            for loc in m.Location.select().where(m.Location.activity == a)
        )
        for key in ("regarding", "correlation_folder", "owner_mailbox", "correlated_activity"):
            row.pop(key, None)
        row["regarding"] = a.regarding.ref if a.regarding_id else None
        row["correlation_folder"] = a.correlation_folder.folder if a.correlation_folder_id else None
        out[a.message_id] = row
    out["blobs"] = sorted(
        (b.sha256, b.size, hashlib.sha256(bytes(b.data)).hexdigest() if b.data is not None else None)
        for b in m.Blob.select()
    )
    out["cursor"] = [(c.folder, c.processed, c.token) for c in m.FolderCursor.select().order_by(m.FolderCursor.folder)]
    return out


def _wipe() -> None:
    for model in (m.Attachment, m.ActivityParty, m.Location, m.Activity, m.Blob, m.FolderCursor):
        model.delete().execute()


def _spy(monkeypatch: pytest.MonkeyPatch, fail: bool = False) -> list[int]:
    """Record the size of each batch the writer's batch mode writes (and make it fail after writing)."""
    written: list[int] = []
    real = Writer.apply_batch

    def apply_batch(self, plans, blob_ids):  # type: ignore[no-untyped-def]
        written.append(len(plans))
        outcomes = real(self, plans, blob_ids)
        if fail:  # its rows are written, then the savepoint rolls them back
            raise RuntimeError("disk full")
        return outcomes

    monkeypatch.setattr(Writer, "apply_batch", apply_batch)
    return written


def _batchable(tracker: Tracker, items: list[Item]) -> bool:
    """Whether track_batch would write these items in batch mode (plans only: nothing written)."""
    plans = [tracker.plan(i.mailbox, i.folder, i.source_id, i.msg, token=i.token, may_be_shunted=False) for i in items]
    return may_batch(items) and batchable(plans, tracker.correlation)


def test_bulk_writes_the_rows_tracking_one_by_one_writes(store: Store, env, monkeypatch: pytest.MonkeyPatch) -> None:
    tracker, rt = env
    msgs = _corpus()
    for item in _items(rt, msgs):
        tracker.track(item.mailbox, item.folder, item.source_id, item.msg, may_be_shunted=False, token=item.token)
    one_by_one = _rows()
    # both kinds of blob are in the comparison: in their row, and in a file (data NULL)
    assert {b[2] is None for b in one_by_one["blobs"]} == {True, False}
    _wipe()
    written = _spy(monkeypatch)
    results = track_batch(tracker, _items(rt, msgs))
    assert written == [len(msgs)], "the batch was written in bulk"
    assert all(isinstance(r, Outcome) and r.event == "tracked" for r in results)
    assert {r.regarding for r in results if isinstance(r, Outcome)} == {"account:contoso"}
    assert _rows() == one_by_one


RULES = """\
rules:
  - name: unfiled-is-contoso
    when: {folder: Unfiled}
    then: {regarding: {entity: account, key: contoso}, categories: [unfiled], owner: anna@contoso.com}
"""


def test_a_batch_the_rules_decide_is_written_in_bulk_with_the_same_rows(
    store: Store, env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder without a regarding (the rules decide, then correlation): the batch is
    written in batch mode too, with the rows single mode writes; a batch with a reply to
    one of its own messages is planned and written one by one (its correlation needs
    the parent written first)."""
    from mailfiler.rules import load_rules

    tracker, rt = env
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES, encoding="utf-8")
    tracker.rules = load_rules([rules_file], known_entities=["account", "contact", "lead", "opportunity", "case"])
    msgs = [msg for msg in _corpus() if msg.in_reply_to is None]
    for item in _items(rt, msgs, UNFILED):
        tracker.track(item.mailbox, item.folder, item.source_id, item.msg, may_be_shunted=False, token=item.token)
    one_by_one = _rows()
    assert {row["correlation"] for key, row in one_by_one.items() if key.startswith("<")} == {"rule:unfiled-is-contoso"}
    _wipe()
    written = _spy(monkeypatch)
    results = track_batch(tracker, _items(rt, msgs, UNFILED))
    assert written == [len(msgs)], "the batch was written in bulk"
    assert all(isinstance(r, Outcome) and r.event == "tracked" for r in results)
    assert _rows() == one_by_one
    # without a rule: correlation decides, and a reply to a message of the same batch waits for it
    _wipe()
    tracker.rules = None
    threaded = [parse_message(realistic_message(i)) for i in range(12)]
    assert any(msg.in_reply_to in {p.message_id for p in threaded} for msg in threaded)
    assert not _batchable(tracker, _items(rt, threaded, UNFILED))
    track_batch(tracker, _items(rt, threaded, UNFILED))
    assert written == [len(msgs)]
    replies = m.Activity.select().where(m.Activity.correlated_activity.is_null(False))
    assert replies.count() == sum(1 for msg in threaded if msg.in_reply_to in {p.message_id for p in threaded})


def test_bulk_steps_aside_for_other_batches(store: Store, env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Known mail, the same message twice, an invitation: message by message, as before."""
    tracker, rt = env
    used = _spy(monkeypatch)
    msgs = [parse_message(realistic_message(i)) for i in range(4)]
    assert not may_batch(_items(rt, [msgs[0], msgs[1], msgs[0]]))
    invite = dataclasses.replace(
        msgs[3],
        message_id="<invite@contoso.com>",
        attachments=[AttachmentPart("invite.ics", "text/calendar", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n")],
    )
    assert _batchable(tracker, _items(rt, [msgs[0], msgs[1]]))
    assert not _batchable(tracker, _items(rt, [msgs[0], invite]))
    track_batch(tracker, _items(rt, msgs[:2]))
    assert used == [2]
    # the same messages again (a replay after a crash): known, so one by one
    again = track_batch(tracker, _items(rt, msgs[:3]))
    assert used == [2] and [r.event for r in again if isinstance(r, Outcome)] == ["known", "known", "tracked"]
    assert m.Activity.select().count() == 3


def test_a_failed_bulk_write_leaves_nothing_and_goes_one_by_one(
    store: Store, env, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, rt = env
    msgs = [parse_message(realistic_message(i, with_attachment_every=2)) for i in range(6)]
    written = _spy(monkeypatch, fail=True)
    results = track_batch(tracker, _items(rt, msgs))
    assert written == [6]
    assert [r.event for r in results if isinstance(r, Outcome)] == ["tracked"] * 6
    assert m.Activity.select().count() == 6 and m.Location.select().count() == 6
    cursor = m.FolderCursor.get(m.FolderCursor.folder == FOLDER)
    assert (cursor.processed, cursor.token) == (6, "t5")
