"""Sanity checks for the test-mail generator and the Maildir helpers in tests/mailgen.py."""

from __future__ import annotations

import email
import email.policy
import os
import re
from pathlib import Path

import pytest

from tests import mailgen


def _parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def test_realistic_messages_parse_cleanly_with_unique_ids() -> None:
    ids = set()
    sizes = []
    for i in range(200):
        data = mailgen.realistic_message(i)
        sizes.append(len(data))
        msg = _parse(data)
        assert not msg.defects
        for name in ("From", "To", "Date", "Message-ID", "Subject"):
            assert msg[name], name
        assert msg["Message-ID"] == mailgen.message_id_for(i)
        assert re.fullmatch(rf"<{i}\.[0-9a-f]+@[\w.-]+>", msg["Message-ID"])
        assert msg["Date"].datetime.tzinfo is not None
        assert msg.get_body(("plain",)).get_content().strip()
        assert msg.get_body(("html",)).get_content().startswith("<!DOCTYPE html>")
        ids.add(msg["Message-ID"])
    assert len(ids) == 200
    assert 5_000 <= sum(sizes) / len(sizes) <= 20_000


def test_realistic_messages_are_deterministic_and_seeded() -> None:
    assert mailgen.realistic_message(7) == mailgen.realistic_message(7)
    assert mailgen.realistic_message(7, seed=1) != mailgen.realistic_message(7)
    assert mailgen.realistic_message(7) != mailgen.realistic_message(8)


def test_realistic_message_options() -> None:
    pool = ("kund.se",)
    with_att = _parse(mailgen.realistic_message(4, with_attachment_every=5, domain_pool=pool))
    (att,) = with_att.iter_attachments()
    assert att.get_content_type() == "application/pdf"
    assert att.get_content().startswith(b"%PDF-")
    assert with_att["From"].addresses[0].domain == "kund.se"
    without = _parse(mailgen.realistic_message(4, with_attachment_every=0))
    assert without.get_content_type() == "multipart/alternative"
    assert list(without.iter_attachments()) == []


def test_replies_reference_an_earlier_message() -> None:
    replies = [_parse(mailgen.realistic_message(i)) for i in range(1, 60)]
    replies = [m for m in replies if m["In-Reply-To"]]
    assert replies
    earlier = {mailgen.message_id_for(i) for i in range(60)}
    assert all(m["In-Reply-To"] in earlier for m in replies)


def test_malformed_corpus_has_every_named_entry() -> None:
    corpus = mailgen.malformed_corpus()
    assert tuple(corpus) == mailgen.MALFORMED_NAMES
    assert len(corpus) == 20
    assert corpus["empty"] == b""
    assert corpus["plain_text_no_headers"] == b"hello world\n"
    assert corpus["binary_png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert len(corpus["header_line_100k"].split(b"\n")[4]) >= 100_000
    assert corpus["nested_multipart_50"].count(b"multipart/mixed") == 50
    assert b"\x00" in corpus["nul_bytes_in_body"]
    assert b"=?utf-8?B?!!!?=" in corpus["encoded_word_garbage"]
    assert b"To: <<<@@>>" in corpus["address_garbage"]
    assert b"\r\n" in corpus["mixed_line_endings"]
    assert corpus["duplicate_message_id"].count(b"Message-ID:") == 2
    assert b"Message-ID:" not in corpus["no_message_id"]
    # The stdlib parser must not crash on any of them (the daemon has to cope with what it gets back).
    for data in corpus.values():
        _parse(data)


def test_rfc2231_filenames_decode() -> None:
    msg = _parse(mailgen.malformed_corpus()["rfc2231_non_ascii_filename"])
    names = [a.get_filename() for a in msg.iter_attachments()]
    assert names == ["Åkesson offert €.pdf", "Översikt för 2024.txt"]


def test_large_and_many_attachment_messages() -> None:
    big = _parse(mailgen.large_attachment_message(100_000))
    (att,) = big.iter_attachments()
    assert len(att.get_content()) == 100_000
    many = _parse(mailgen.many_attachments_message(25))
    assert len(list(many.iter_attachments())) == 25
    assert not many.defects


def test_drop_into_maildir_delivers_via_tmp(tmp_path: Path) -> None:
    folder = tmp_path / "Maildir"
    p1 = mailgen.drop_into_maildir(folder, b"one")
    p2 = mailgen.drop_into_maildir(folder, b"two")
    assert p1.parent == folder / "new"
    assert p1.read_bytes() == b"one"
    assert p1.name != p2.name
    assert re.fullmatch(r"\d+\.M\d+P\d+Q\d+\..+", p1.name)
    assert str(os.getpid()) in p1.name
    assert list((folder / "tmp").iterdir()) == []

    p3 = mailgen.drop_into_maildir(folder, b"three", flags="SF", name="fixed")
    assert p3 == folder / "cur" / "fixed:2,FS"
    assert mailgen.drop_into_maildir(folder, b"x", flags="").name.endswith(":2,")


def test_mark_seen_and_move(tmp_path: Path) -> None:
    inbox = mailgen.make_maildir_folder(tmp_path / "m")
    msg = mailgen.drop_into_maildir(inbox, b"hello")
    seen = mailgen.mark_seen(msg)
    assert not msg.exists()
    assert seen == inbox / "cur" / (msg.name + ":2,S")
    flagged = mailgen.drop_into_maildir(inbox, b"x", flags="F")
    assert mailgen.mark_seen(flagged).name.endswith(":2,FS")

    dest_dir = mailgen.maildirpp_folder_dir(inbox, "Kunder/Åkesson AB")
    moved = mailgen.move_message(seen, dest_dir)
    assert moved == dest_dir / "cur" / seen.name
    assert moved.read_bytes() == b"hello"
    unread = mailgen.drop_into_maildir(inbox, b"new one")
    assert mailgen.move_message(unread, dest_dir).parent == dest_dir / "new"


def test_folder_layouts() -> None:
    root = Path("/srv/mail/alice")
    assert mailgen.maildirpp_folder_dir(root, "INBOX") == root
    assert mailgen.maildirpp_folder_dir(root, "A/B") == root / ".A.B"
    assert mailgen.maildirpp_folder_dir(root, "Kunder/Åkesson AB") == root / ".Kunder.&AMU-kesson AB"
    assert mailgen.fs_folder_dir(root, "A/B") == root / "A" / "B"
    assert mailgen.fs_folder_dir(root, "INBOX") == root
    assert mailgen.imap_utf7_encode("Entwürfe & Co") == "Entw&APw-rfe &- Co"
    with pytest.raises(ValueError):
        mailgen.maildirpp_folder_dir(root, "a.b")
    with pytest.raises(ValueError):
        mailgen.fs_folder_dir(root, "A//B")
