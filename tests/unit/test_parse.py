"""The parser degrades on hostile mail instead of failing."""

from __future__ import annotations

import pytest

from mailfiler.errors import EmptyMessage, NotAMessage
from mailfiler.tracking.parse import clean_text, parse_message
from tests import mailgen

BASIC = (
    b"From: Bob Smith <Bob@Contoso.com>\r\n"
    b'To: alice@example.com, "X" <x@fabrikam.com>\r\n'
    b"Cc: bob@contoso.com\r\n"
    b"Subject: =?utf-8?q?H=C3=A9llo?=\r\n"
    b"Date: Mon, 2 Nov 2026 10:00:00 +0100\r\n"
    b"Message-ID: <abc@x>\r\n"
    b"In-Reply-To: <parent@x>\r\n"
    b"References: <root@x> <parent@x>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n"
    b"--BB\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhi there\r\n"
    b"--BB\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--BB--\r\n"
)


def test_fields() -> None:
    msg = parse_message(BASIC)
    assert msg.message_id == "<abc@x>"
    assert not msg.synthetic_id
    assert msg.subject == "Héllo"
    assert msg.sent_at is not None and msg.sent_at.hour == 9  # stored as UTC
    assert msg.sender == "bob@contoso.com"
    assert [a.address for a in msg.addresses["to"]] == ["alice@example.com", "x@fabrikam.com"]
    assert msg.in_reply_to == "<parent@x>"
    assert msg.references == ["<root@x>", "<parent@x>"]
    assert msg.body_text.strip() == "hi there"
    assert [(a.filename, a.data) for a in msg.attachments] == [("a.pdf", b"hello")]


def test_synthetic_id_is_stable_and_ignores_added_headers() -> None:
    raw = BASIC.replace(b"Message-ID: <abc@x>\r\n", b"")
    first = parse_message(raw)
    again = parse_message(b"Status: RO\r\n" + raw)
    assert first.synthetic_id and first.message_id.endswith("@synthetic.mailfiler.invalid>")
    assert first.message_id == again.message_id
    other = parse_message(raw.replace(b"hi there", b"something else"))
    assert other.message_id != first.message_id


def test_html_only_body_becomes_text() -> None:
    raw = (
        b"From: a@b.c\nSubject: x\nContent-Type: text/html; charset=utf-8\n\n"
        b"<html><head><style>p{}</style></head><body><p>Hello &amp; welcome</p><div>line two</div></body></html>"
    )
    msg = parse_message(raw)
    assert msg.body_text == "Hello & welcome\nline two"
    assert msg.body_html is not None


@pytest.mark.parametrize("raw", [b"", b"   \n\n"])
def test_empty(raw: bytes) -> None:
    with pytest.raises(EmptyMessage):
        parse_message(raw)


@pytest.mark.parametrize("raw", [b"hello world\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"Foo: bar\n\nbody"])
def test_not_mail(raw: bytes) -> None:
    with pytest.raises(NotAMessage):
        parse_message(raw)


def test_every_malformed_mail_parses_or_is_rejected_cleanly() -> None:
    for name, raw in mailgen.malformed_corpus().items():
        try:
            msg = parse_message(raw)
        except (EmptyMessage, NotAMessage):
            continue
        # whatever was read must be storable (no NUL, no lone surrogates)
        for text in [
            msg.subject,
            msg.body_text,
            msg.message_id,
            *(a.address for v in msg.addresses.values() for a in v),
        ]:
            assert text == clean_text(text), name
            text.encode("utf-8")


def test_clean_text() -> None:
    assert clean_text("a\x00b") == "ab"
    assert clean_text("caf\udce9") == "caf\ufffd"


def test_addresses_survive_8bit_garbage_in_the_display_name() -> None:
    # a stray "(" makes the stdlib parsers swallow the address as a comment
    raw = b"From: anna@contoso.com\nTo: Caf\xc3( \xff\xfe <erik@fabrikam.com>\nSubject: x\n\nbody\n"
    msg = parse_message(raw)
    assert [a.address for a in msg.addresses["to"]] == ["erik@fabrikam.com"]
