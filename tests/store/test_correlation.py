"""Correlation through the tracking transaction, on SQLite and PostgreSQL.

A message filed into a tracked folder without a regarding inherits the
regarding of the tracked message it replies to; the method is recorded."""

from __future__ import annotations

from pathlib import Path

from mailfiler.service.runtime import sync_config
from mailfiler.store import models as m
from mailfiler.tracking.correlate import format_token
from tests.store.helpers import Store, mailbox_config, make_message, track_raw


def _setup(store: Store, tmp_path: Path, **config: object):
    cfg = store.config(
        records=[{"entity": "account", "key": "contoso", "name": "Contoso", "domains": ["contoso.com"]}],
        mailboxes=[
            mailbox_config(
                "alice", "alice@example.com", tmp_path / "M", {"Clients/Contoso": "account:contoso", "Unfiled": None}
            )
        ],
        **config,
    )
    rt = sync_config(store.db, cfg)["alice"]
    return store.tracker(cfg), rt


def _activity(message_id: str) -> m.Activity:
    return m.Activity.get(m.Activity.message_id == message_id)


def test_reply_inherits_by_in_reply_to(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<root@x>"))
    reply = make_message("<reply@x>", subject="Re: Offert 2024").replace(
        b"Message-ID: <reply@x>", b"Message-ID: <reply@x>\nIn-Reply-To: <root@x>"
    )
    track_raw(tracker, rt, "Unfiled", "s2", reply)
    act = _activity("<reply@x>")
    assert act.regarding.ref == "account:contoso"
    assert act.correlation == "in-reply-to"
    assert act.correlated_activity.message_id == "<root@x>"
    assert act.subject_key == "offert 2024"


def test_references_newest_first_and_unknown_references_skipped(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<root@x>"))
    raw = make_message("<r3@x>", subject="Re: x").replace(
        b"Message-ID: <r3@x>", b"Message-ID: <r3@x>\nIn-Reply-To: <unknown@x>\nReferences: <root@x> <unknown@x>"
    )
    track_raw(tracker, rt, "Unfiled", "s3", raw)
    act = _activity("<r3@x>")
    assert (act.correlation, act.regarding.ref) == ("references", "account:contoso")


def test_folder_regarding_beats_correlation(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    track_raw(tracker, rt, "Unfiled", "s1", make_message("<root@x>"))
    reply = make_message("<reply@x>").replace(b"Message-ID: <reply@x>", b"Message-ID: <reply@x>\nIn-Reply-To: <root@x>")
    track_raw(tracker, rt, "Clients/Contoso", "s2", reply)
    act = _activity("<reply@x>")
    assert (act.correlation, act.regarding.ref) == ("folder", "account:contoso")


def test_forwards_not_replies_when_configured(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path, correlation={"forwards_as_replies": False})
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<root@x>"))
    fwd = make_message("<fwd@x>", subject="VS: Offert 2024").replace(
        b"Message-ID: <fwd@x>", b"Message-ID: <fwd@x>\nIn-Reply-To: <root@x>"
    )
    track_raw(tracker, rt, "Unfiled", "s2", fwd)
    act = _activity("<fwd@x>")
    assert act.regarding is None and act.correlation is None


def test_token_in_subject(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path, correlation={"token": {"enabled": True, "prefix": "CRM"}})
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<root@x>"))
    token = format_token("CRM", _activity("<root@x>").id)
    track_raw(tracker, rt, "Unfiled", "s2", make_message("<t@x>", subject=f"Order {token}"))
    act = _activity("<t@x>")
    assert (act.correlation, act.regarding.ref) == ("token", "account:contoso")


def test_smart_matching_needs_two_shared_addresses(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path, correlation={"smart": {"enabled": True}})
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<root@x>", subject="Offert 2024"))
    # one shared address only (the sender): no match
    track_raw(
        tracker,
        rt,
        "Unfiled",
        "s2",
        make_message("<a@x>", subject="SV: Offert 2024", to=("someone@else.org",)),
    )
    assert _activity("<a@x>").regarding is None
    # sender and recipient shared: smart match
    track_raw(tracker, rt, "Unfiled", "s3", make_message("<b@x>", subject="SV: offert  2024"))
    act = _activity("<b@x>")
    assert (act.correlation, act.regarding.ref) == ("smart", "account:contoso")


def test_smart_matching_is_off_by_default(store: Store, tmp_path: Path) -> None:
    tracker, rt = _setup(store, tmp_path)
    track_raw(tracker, rt, "Clients/Contoso", "s1", make_message("<root@x>", subject="Offert 2024"))
    track_raw(tracker, rt, "Unfiled", "s2", make_message("<b@x>", subject="SV: Offert 2024"))
    assert _activity("<b@x>").regarding is None
