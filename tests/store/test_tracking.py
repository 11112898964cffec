"""The tracking transaction (Tracker.track) on SQLite and PostgreSQL, with the
mailbox and folder contexts built from a Config by service.runtime.sync_config."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mailfiler.config.schema import Config
from mailfiler.service.runtime import MailboxRuntime, sync_config
from mailfiler.store import models as m
from mailfiler.store.blobs import INLINE_MAX, BlobStore
from mailfiler.store.records import get_by_ref
from mailfiler.tracking.folders import known_source_ids, mark_gone, relink_folder
from mailfiler.tracking.parse import parse_message
from mailfiler.tracking.pipeline import Tracker
from mailfiler.tracking.shunt import ShuntStore
from tests.mailgen import malformed_corpus, realistic_message
from tests.store.helpers import Store, counts, mailbox_config, make_message, track_raw

ANNA = "anna@ourco.se"
ERIK = "erik@ourco.se"

ANNA_FOLDERS = {
    "INBOX": None,
    "Sent": None,
    "Archive": None,
    "Kunder/Contoso": "account:contoso",
    "Kunder/Fabrikam": "account:fabrikam",
}
ERIK_FOLDERS = {"INBOX": None, "Kunder/Contoso": "account:contoso", "Kunder/Fabrikam": "account:fabrikam"}

RECORDS = [
    {"entity": "account", "key": "contoso", "name": "Contoso AB", "domains": ["contoso.com"]},
    {"entity": "account", "key": "fabrikam", "name": "Fabrikam Inc.", "domains": ["fabrikam.com"]},
    {"entity": "contact", "key": "bob", "name": "Bob", "emails": ["bob@contoso.com"], "parent": "account:contoso"},
    {"entity": "user", "key": ANNA, "name": "Anna", "emails": [ANNA, "anna.alias@ourco.se"]},
]


def make_config(store: Store, tmp_path: Path, *, anna: dict | None = None, records: list | None = None) -> Config:
    return store.config(
        records=RECORDS if records is None else records,
        mailboxes=[
            mailbox_config("anna", ANNA, tmp_path / "maildirs/anna", ANNA_FOLDERS if anna is None else anna),
            mailbox_config("erik", ERIK, tmp_path / "maildirs/erik", ERIK_FOLDERS),
        ],
    )


@pytest.fixture
def env(store: Store, tmp_path: Path) -> tuple[Tracker, dict[str, MailboxRuntime]]:
    config = make_config(store, tmp_path)
    return store.tracker(config), sync_config(store.db, config)


def activity(mid: str) -> m.Activity:
    return m.Activity.get(m.Activity.message_id == mid)


def regarding(mid: str) -> str | None:
    a = activity(mid)
    return a.regarding.ref if a.regarding_id else None


def parties(mid: str) -> set[tuple[str, str, str | None]]:
    return {
        (p.role, p.address, p.record.ref if p.record_id else None)
        for p in m.ActivityParty.select().where(m.ActivityParty.activity == activity(mid))
    }


def locations(mid: str, *, present_only: bool = True) -> set[tuple[str, str, str]]:
    q = m.Location.select().where(m.Location.activity == activity(mid))
    if present_only:
        q = q.where(m.Location.gone_at.is_null())
    return {(loc.mailbox.name, loc.folder, loc.source_id) for loc in q}


# --------------------------------------------------------------------------- one activity per message


def test_one_activity_per_message_id_across_mailboxes_and_folders(store: Store, env) -> None:
    tracker, rts = env
    raw = make_message("<m1@contoso.com>", sender="Bob <bob@contoso.com>", to=[ANNA], cc=[ERIK])
    first = track_raw(tracker, rts["anna"], "INBOX", "1", raw)
    assert first.event == "tracked"
    before = counts()
    second = track_raw(tracker, rts["erik"], "INBOX", "a", raw)
    third = track_raw(tracker, rts["anna"], "Archive", "2", raw)
    assert second.event == third.event == "located"
    assert first.activity_id == second.activity_id == third.activity_id
    after = counts()
    assert after["Activity"] == 1
    assert after["ActivityParty"] == before["ActivityParty"]  # nobody new
    assert after["Location"] == 3
    assert locations("<m1@contoso.com>") == {("anna", "INBOX", "1"), ("erik", "INBOX", "a"), ("anna", "Archive", "2")}
    a = activity("<m1@contoso.com>")
    assert a.owner_mailbox.name == "anna"
    assert a.direction == "incoming"
    assert parties("<m1@contoso.com>") == {
        ("from", "bob@contoso.com", "contact:bob"),
        ("to", ANNA, f"user:{ANNA}"),
        ("cc", ERIK, f"user:{ERIK}"),
    }
    # the folder cursors count what they processed
    cursors = {(c.mailbox.name, c.folder): c.processed for c in m.FolderCursor.select()}
    assert cursors == {("anna", "INBOX"): 1, ("erik", "INBOX"): 1, ("anna", "Archive"): 1}


def test_replaying_a_message_is_known_and_writes_nothing(store: Store, env) -> None:
    tracker, rts = env
    raw = make_message("<m1@contoso.com>", attachments=[("a.pdf", b"%PDF-1.4 x")])
    track_raw(tracker, rts["anna"], "INBOX", "1", raw)
    before = counts()
    stamp = activity("<m1@contoso.com>").updated_at
    outcome = track_raw(tracker, rts["anna"], "INBOX", "1", raw)
    assert outcome.event == "known"
    assert counts() == before
    assert activity("<m1@contoso.com>").updated_at == stamp


def test_second_sighting_adds_missing_parties_never_a_second_activity(store: Store, env) -> None:
    tracker, rts = env
    mid = "<sent-with-bcc@ourco.se>"
    # the recipient's copy has no Bcc; the sender's Sent copy has it
    inbound = make_message(mid, sender=f"Anna <{ANNA}>", to=[ERIK], subject="Avtal")
    sent = make_message(
        mid, sender=f"Anna <{ANNA}>", to=[ERIK], bcc=["Bob <bob@contoso.com>", "x@fabrikam.com"], subject="Avtal"
    )
    assert track_raw(tracker, rts["erik"], "INBOX", "e1", inbound).event == "tracked"
    assert parties(mid) == {("from", ANNA, f"user:{ANNA}"), ("to", ERIK, f"user:{ERIK}")}
    assert track_raw(tracker, rts["anna"], "Sent", "s1", sent).event == "located"
    assert parties(mid) == {
        ("from", ANNA, f"user:{ANNA}"),
        ("to", ERIK, f"user:{ERIK}"),
        ("bcc", "bob@contoso.com", "contact:bob"),
        ("bcc", "x@fabrikam.com", "account:fabrikam"),
    }
    assert m.Activity.select().count() == 1
    # a third sighting of either copy adds nothing
    n = m.ActivityParty.select().count()
    track_raw(tracker, rts["anna"], "Archive", "s2", inbound)
    assert m.ActivityParty.select().count() == n


def test_message_without_message_id_gets_one_synthetic_activity(store: Store, env) -> None:
    tracker, rts = env
    raw = make_message(None, subject="Utan id")
    a = track_raw(tracker, rts["anna"], "INBOX", "1", raw)
    b = track_raw(tracker, rts["erik"], "INBOX", "1", raw)
    assert a.activity_id == b.activity_id
    row = m.Activity.get_by_id(a.activity_id)
    assert row.synthetic_id
    assert row.message_id.endswith("@synthetic.mailfiler.invalid>")


# --------------------------------------------------------------------------- direction


DIRECTIONS = [
    (f"Anna <{ANNA}>", "outgoing"),
    ("Anna <Anna@OurCo.SE>", "outgoing"),
    ("Anna <anna.alias@ourco.se>", "outgoing"),  # an address of the owner's user record
    ("Bob <bob@contoso.com>", "incoming"),
    (f"Erik <{ERIK}>", "incoming"),  # another user: not this mailbox's owner
]


def test_direction_is_outgoing_when_the_owner_sent_it(store: Store, env) -> None:
    tracker, rts = env
    for n, (sender, _) in enumerate(DIRECTIONS):
        track_raw(
            tracker, rts["anna"], "Sent", str(n), make_message(f"<d{n}@x>", sender=sender, to=["bob@contoso.com"])
        )
    assert [activity(f"<d{n}@x>").direction for n in range(len(DIRECTIONS))] == [d for _, d in DIRECTIONS]


# --------------------------------------------------------------------------- attachments


def test_attachments_deduplicated_by_sha256(store: Store, env) -> None:
    tracker, rts = env
    # one over blobs.INLINE_MAX (a file), one under it (in its row)
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 600
    assert len(pdf) > INLINE_MAX
    other = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100
    track_raw(tracker, rts["anna"], "INBOX", "1", make_message("<a1@x>", attachments=[("offert.pdf", pdf)]))
    track_raw(
        tracker,
        rts["erik"],
        "INBOX",
        "1",
        make_message("<a2@x>", attachments=[("Offert (kopia).pdf", pdf), ("bild.png", other)]),
    )
    # the same message again in another folder: no new attachment rows
    track_raw(tracker, rts["anna"], "Archive", "9", make_message("<a1@x>", attachments=[("offert.pdf", pdf)]))

    digest_pdf, digest_png = hashlib.sha256(pdf).hexdigest(), hashlib.sha256(other).hexdigest()
    assert {(b.sha256, b.size) for b in m.Blob.select()} == {(digest_pdf, len(pdf)), (digest_png, len(other))}
    rows = [
        (a.activity.message_id, a.position, a.filename, a.blob_id, a.size)
        for a in m.Attachment.select().order_by(m.Attachment.activity, m.Attachment.position)
    ]
    assert rows == [
        ("<a1@x>", 0, "offert.pdf", digest_pdf, len(pdf)),
        ("<a2@x>", 0, "Offert (kopia).pdf", digest_pdf, len(pdf)),
        ("<a2@x>", 1, "bild.png", digest_png, len(other)),
    ]
    files = sorted(p for p in (store.state_dir / "blobs").rglob("*") if p.is_file())
    assert [p.name for p in files] == [digest_pdf]
    for p in files:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name
    stored = {b.sha256: b.data for b in m.Blob.select()}
    assert stored[digest_pdf] is None
    assert bytes(stored[digest_png]) == other
    blobs = BlobStore(store.state_dir)
    assert blobs.get(digest_pdf) == pdf
    assert blobs.get(digest_png) == other


# --------------------------------------------------------------------------- re-linking


def test_folder_with_regarding_relinks_folder_without_keeps(store: Store, env) -> None:
    tracker, rts = env
    raw = make_message("<r1@x>", sender="bob@contoso.com", to=[ANNA])
    assert track_raw(tracker, rts["anna"], "INBOX", "1", raw).regarding is None
    assert regarding("<r1@x>") is None

    out = track_raw(tracker, rts["anna"], "Kunder/Contoso", "2", raw)
    assert (out.event, out.regarding) == ("relinked", "account:contoso")
    a = activity("<r1@x>")
    assert (regarding("<r1@x>"), a.correlation, a.correlation_folder.folder) == (
        "account:contoso",
        "folder",
        "Kunder/Contoso",
    )

    out = track_raw(tracker, rts["anna"], "Archive", "3", raw)
    assert (out.event, out.regarding) == ("located", "account:contoso")
    assert regarding("<r1@x>") == "account:contoso"

    # the same user filing it under another customer moves the regarding
    out = track_raw(tracker, rts["anna"], "Kunder/Fabrikam", "4", raw)
    assert (out.event, out.regarding) == ("relinked", "account:fabrikam")
    assert regarding("<r1@x>") == "account:fabrikam"
    assert m.Activity.select().count() == 1


def test_tracked_first_in_a_folder_with_regarding(store: Store, env) -> None:
    tracker, rts = env
    out = track_raw(tracker, rts["erik"], "Kunder/Fabrikam", "1", make_message("<f@x>"))
    assert (out.event, out.regarding) == ("tracked", "account:fabrikam")
    a = activity("<f@x>")
    assert (a.correlation, a.correlation_folder.mailbox.name) == ("folder", "erik")


@pytest.mark.parametrize(("first", "second"), [("anna", "erik"), ("erik", "anna")])
def test_first_filed_wins_across_mailboxes(store: Store, env, first: str, second: str) -> None:
    tracker, rts = env
    raw = make_message("<ff@x>", sender="bob@contoso.com", to=[ANNA, ERIK])
    assert track_raw(tracker, rts[first], "Kunder/Contoso", "1", raw).event == "tracked"
    out = track_raw(tracker, rts[second], "Kunder/Fabrikam", "1", raw)
    assert out.event == "kept-regarding"
    assert out.regarding == "account:contoso"
    assert f"set by mailbox {first}" in out.detail
    a = activity("<ff@x>")
    assert regarding("<ff@x>") == "account:contoso"
    assert (a.correlation_folder.mailbox.name, a.correlation_folder.folder) == (first, "Kunder/Contoso")
    # the second mailbox still knows where its copy is
    assert locations("<ff@x>") == {(first, "Kunder/Contoso", "1"), (second, "Kunder/Fabrikam", "1")}


def test_folder_decision_beats_an_undecided_message_from_another_mailbox(store: Store, env) -> None:
    tracker, rts = env
    raw = make_message("<u@x>", sender="bob@contoso.com", to=[ANNA, ERIK])
    track_raw(tracker, rts["erik"], "INBOX", "1", raw)  # no regarding: decides nothing
    out = track_raw(tracker, rts["anna"], "Kunder/Fabrikam", "1", raw)
    assert (out.event, regarding("<u@x>")) == ("relinked", "account:fabrikam")


def test_relink_folder_after_a_regarding_change(store: Store, tmp_path: Path) -> None:
    records = [*RECORDS, {"entity": "account", "key": "contoso-group", "name": "Contoso Group"}]
    config = make_config(store, tmp_path, records=records)
    rts = sync_config(store.db, config)
    tracker = store.tracker(config)
    for i in (1, 2, 3):
        track_raw(tracker, rts["anna"], "Kunder/Contoso", str(i), make_message(f"<c{i}@x>"))
    mark_gone(store.db, rts["anna"].ctx.row, "Kunder/Contoso", ["3"])  # c3 left the folder
    assert known_source_ids(rts["anna"].ctx.row, "Kunder/Contoso") == {"1", "2"}
    # c4: erik filed it first under Fabrikam; it also sits in anna's Contoso folder
    track_raw(tracker, rts["erik"], "Kunder/Fabrikam", "1", make_message("<c4@x>"))
    assert track_raw(tracker, rts["anna"], "Kunder/Contoso", "4", make_message("<c4@x>")).event == "kept-regarding"
    # c5: in anna's folder, but decided by a rule-like (non-folder) correlation
    track_raw(tracker, rts["anna"], "Kunder/Contoso", "5", make_message("<c5@x>"))
    m.Activity.update(correlation="in-reply-to", correlation_folder=None).where(
        m.Activity.message_id == "<c5@x>"
    ).execute()

    anna = {**ANNA_FOLDERS, "Kunder/Contoso": "account:contoso-group"}
    rts = sync_config(store.db, make_config(store, tmp_path, anna=anna, records=records))
    assert rts["anna"].folders["Kunder/Contoso"].regarding.ref == "account:contoso-group"
    assert (
        m.TrackedFolder.get(
            m.TrackedFolder.folder == "Kunder/Contoso", m.TrackedFolder.mailbox == rts["anna"].ctx.row
        ).regarding_ref
        == "account:contoso-group"
    )
    assert {mid: regarding(mid) for mid in ("<c1@x>", "<c2@x>", "<c3@x>", "<c4@x>", "<c5@x>")} == {
        "<c1@x>": "account:contoso-group",
        "<c2@x>": "account:contoso-group",
        "<c3@x>": "account:contoso",  # gone from the folder: not re-linked
        "<c4@x>": "account:fabrikam",  # first filed wins
        "<c5@x>": "account:contoso-group",
    }
    assert activity("<c1@x>").correlation == "folder"
    # re-linking again is a no-op
    frow = rts["anna"].folders["Kunder/Contoso"].row
    assert relink_folder(store.db, frow, get_by_ref("account:contoso-group").id) == 0


def test_removing_a_folders_regarding_keeps_what_its_messages_have(store: Store, tmp_path: Path) -> None:
    config = make_config(store, tmp_path)
    rts = sync_config(store.db, config)
    track_raw(store.tracker(config), rts["anna"], "Kunder/Contoso", "1", make_message("<k@x>"))
    rts = sync_config(store.db, make_config(store, tmp_path, anna={**ANNA_FOLDERS, "Kunder/Contoso": None}))
    assert rts["anna"].folders["Kunder/Contoso"].regarding is None
    assert regarding("<k@x>") == "account:contoso"


def test_folder_relinked_once_its_missing_regarding_record_is_imported(store: Store, tmp_path: Path) -> None:
    anna = {**ANNA_FOLDERS, "Kunder/Northwind": "account:northwind"}
    config = make_config(store, tmp_path, anna=anna)
    rts = sync_config(store.db, config)
    assert rts["anna"].folders["Kunder/Northwind"].regarding is None
    out = track_raw(store.tracker(config), rts["anna"], "Kunder/Northwind", "1", make_message("<n@x>"))
    assert (out.event, regarding("<n@x>")) == ("tracked", None)

    records = [*RECORDS, {"entity": "account", "key": "northwind", "name": "Northwind Traders"}]
    sync_config(store.db, make_config(store, tmp_path, anna=anna, records=records))
    assert regarding("<n@x>") == "account:northwind"


# --------------------------------------------------------------------------- hostile text


def test_malformed_corpus_is_stored(store: Store, env) -> None:
    tracker, rts = env
    stored = 0
    for name, raw in malformed_corpus().items():
        if name in ("empty", "binary_png", "plain_text_no_headers"):
            continue  # not mail: shunted before the store is involved
        track_raw(tracker, rts["anna"], "INBOX", name, raw)
        stored += 1
    assert m.Location.select().count() == stored
    for a in m.Activity.select():
        for text in (a.subject, a.body_text, a.body_html or "", a.message_id):
            assert "\x00" not in text
            text.encode("utf-8")  # no lone surrogates


HOSTILE = (
    b'From: "J\xf6rgen\x00 \xc3\x41" <jorgen@contoso.com>\n'
    b'To: Caf\xc3\x41 \xff <erik@fabrikam.com>, "N\x00L" <nul@fabrikam.com>\n'
    b"Subject: Offert\x00 f\xf6r \xe5r 2024 \xc3\x41\n"
    b"Date: Tue, 02 Jan 2024 09:15:00 +0100\n"
    b"Message-ID: <hostile\x00id@malformed.example.org>\n"
    b"In-Reply-To: <parent\x00\xff@malformed.example.org>\n"
    b"References: <r\x001@x.org> <r\xe52@x.org>\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b"\n\n'
    b"--b\nContent-Type: text/plain; charset=utf-8\n\nHej\x00 v\xc3\xa4rlden \xff\xfe\n"
    b"--b\nContent-Type: text/html; charset=latin-1\n\n<p>H\xe4r\x00</p>\n"
    b'--b\nContent-Type: applic\xe5tion/p\x00df; name="f\x00\xe5.pdf"\n'
    b'Content-Disposition: attachment; filename="f\x00\xe5.pdf"\n\n%PDF\x00\n'
    b"--b\nContent-Type: application/" + b"x" * 400 + b"\n"
    b'Content-Disposition: attachment; filename="long-type.bin"\n\nxx\n'
    b"--b--\n"
)


def test_nul_bytes_and_8bit_header_garbage_are_stored(store: Store, env) -> None:
    tracker, rts = env
    out = track_raw(tracker, rts["anna"], "INBOX", "1", HOSTILE)
    a = m.Activity.get_by_id(out.activity_id)
    assert a.message_id == "<hostileid@malformed.example.org>"
    assert a.subject.startswith("Offert f")
    assert "\x00" not in a.subject + a.body_text + (a.body_html or "") + (a.in_reply_to or "") + (a.references or "")
    got = {(p.role, p.address) for p in m.ActivityParty.select()}
    assert {("from", "jorgen@contoso.com"), ("to", "erik@fabrikam.com"), ("to", "nul@fabrikam.com")} <= got
    for p in m.ActivityParty.select():
        assert "\x00" not in p.display_name
    atts = list(m.Attachment.select().order_by(m.Attachment.position))
    assert len(atts) == 2
    for att in atts:
        assert "\x00" not in att.filename + att.content_type
        att.content_type.encode("utf-8")
    # the same message replayed finds its row by the cleaned Message-ID
    assert track_raw(tracker, rts["anna"], "INBOX", "1", HOSTILE).event == "known"


# --------------------------------------------------------------------------- atomicity


class Boom(RuntimeError):
    pass


def _fail_after(monkeypatch: pytest.MonkeyPatch, target: object, name: str) -> None:
    original = getattr(target, name)

    def failing(*args, **kwargs):
        original(*args, **kwargs)
        raise Boom(f"forced failure after {name}")

    monkeypatch.setattr(target, name, failing)


@pytest.mark.parametrize("step", ["_create_activity", "_add_parties", "_bump_cursor"])
def test_failure_inside_the_transaction_leaves_no_partial_rows(
    store: Store, env, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    tracker, rts = env
    pdf = b"%PDF-1.4 attachment"
    raw = make_message("<boom@x>", sender="bob@contoso.com", to=[ANNA], attachments=[("a.pdf", pdf)])
    before = counts()
    _fail_after(monkeypatch, Tracker, step)
    with pytest.raises(Boom):
        track_raw(tracker, rts["anna"], "Kunder/Contoso", "1", raw)
    assert counts() == before
    assert m.Activity.get_or_none(m.Activity.message_id == "<boom@x>") is None
    # the blob file may stay behind (written before the transaction), never a row without its file
    monkeypatch.undo()
    assert track_raw(tracker, rts["anna"], "Kunder/Contoso", "1", raw).event == "tracked"
    assert counts()["Activity"] == before["Activity"] + 1


def test_failure_on_a_second_sighting_rolls_back_relink_parties_and_location(
    store: Store, env, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker, rts = env
    mid = "<second@x>"
    track_raw(tracker, rts["anna"], "INBOX", "1", make_message(mid, sender="bob@contoso.com", to=[ANNA]))
    before = counts()
    _fail_after(monkeypatch, Tracker, "_bump_cursor")
    with pytest.raises(Boom):
        track_raw(
            tracker,
            rts["anna"],
            "Kunder/Fabrikam",
            "2",
            make_message(mid, sender="bob@contoso.com", to=[ANNA], bcc=["x@fabrikam.com"]),
        )
    assert counts() == before
    assert regarding(mid) is None
    assert locations(mid) == {("anna", "INBOX", "1")}
    assert m.FolderCursor.get_or_none(m.FolderCursor.folder == "Kunder/Fabrikam") is None


def test_tracking_resolves_a_pending_shunt(store: Store, env) -> None:
    tracker, rts = env
    mailbox = rts["anna"].ctx.row
    ShuntStore(store.db, store.state_dir).keep(mailbox, "INBOX", "1", reason="processing-failed", detail="x", raw=b"x")
    assert known_source_ids(mailbox, "INBOX") == {"1"}
    track_raw(tracker, rts["anna"], "INBOX", "1", make_message("<s@x>"))
    shunt = m.Shunt.get()
    assert shunt.resolved_at is not None


def test_parse_then_track_the_mailgen_corpus_on_both_backends(store: Store, env) -> None:
    tracker, rts = env
    for i in range(10):
        tracker.track(rts["anna"].ctx, rts["anna"].folders["INBOX"], str(i), parse_message(realistic_message(i)))
    assert m.Activity.select().count() == 10
    assert m.Attachment.select().count() == 2
