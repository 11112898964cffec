"""Facts from a parsed message, and the auto-submitted detector."""

from __future__ import annotations

import pytest

from mailfiler.rules import Facts, auto_submitted_reason, direction_of, header_pairs, is_auto_submitted
from mailfiler.tracking.parse import parse_message
from tests.rules.helpers import addrs, facts

RAW = (
    b'From: "Smith, Bob" <Bob@Contoso.com>\r\n'
    b"To: alice@example.com, Carol <carol@fabrikam.com>\r\n"
    b"Cc: dave@contoso.com\r\n"
    b"Subject: =?utf-8?q?=C3=85kesson_CAS-01001?=\r\n"
    b"X-Ticket-Id: =?iso-8859-1?q?caf=E9?=\r\n"
    b"X-Folded: one\r\n two\r\n"
    b"Message-ID: <m1@contoso.com>\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"--XX\r\nContent-Type: text/plain\r\n\r\nHello, order #42\r\n"
    b"--XX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\nPDF\r\n"
    b"--XX--\r\n"
)


def test_from_parsed() -> None:
    msg = parse_message(RAW)
    f = Facts.from_parsed(
        msg,
        header_pairs(RAW),
        mailbox="alice",
        folder="Clients/Contoso",
        direction="incoming",
        sender_entities=["Contact"],
        recipient_entities={"user", "account"},
    )
    assert [a.address for a in f.from_] == ["bob@contoso.com"] and f.from_[0].name == "Smith, Bob"
    assert [a.address for a in f.to] == ["alice@example.com", "carol@fabrikam.com"]
    assert [a.address for a in f.cc] == ["dave@contoso.com"]
    assert f.subject == "Åkesson CAS-01001"
    assert "order #42" in f.body
    assert f.has_attachment and f.size == len(RAW)
    assert f.content_type == "multipart/mixed"
    assert f.header("x-ticket-id") == ["café"]  # RFC 2047 decoded, any case
    assert f.header("X-FOLDED") == ["one two"]  # unfolded
    assert f.sender_entities == {"contact"} and f.recipient_entities == {"user", "account"}


def test_from_parsed_defaults_to_the_headers_the_parser_kept() -> None:
    msg = parse_message(RAW)
    f = Facts.from_parsed(msg, mailbox="alice", folder=None, direction="incoming")
    assert f.header("x-ticket-id") == ["café"] and f.header("X-FOLDED") == ["one two"]
    assert f.content_type == "multipart/mixed"


def test_from_parsed_caps_and_survives_broken_headers() -> None:
    raw = b"From: a@b.c\nSubject: x\nX-Long: " + b"y" * 100_000 + b"\nX-Bad: =?utf-8?q?\xff\xfe?=\n\n" + b"z" * 200_000
    f = Facts.from_parsed(parse_message(raw), header_pairs(raw), mailbox="m", folder=None, direction="incoming")
    assert len(f.header("x-long")[0]) == 8 * 1024
    assert len(f.body) == 64 * 1024
    assert f.header("x-bad")  # kept, whatever it decodes to
    f.header("x-bad")[0].encode("utf-8")  # and storable


def test_direction_of() -> None:
    assert direction_of(addrs("Alice@Example.com"), "alice@example.com") == "outgoing"
    assert direction_of(addrs("bob@x.com"), "alice@example.com") == "incoming"
    assert direction_of((), None) == "incoming"


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"headers": {"Auto-Submitted": "auto-replied"}}, "Auto-Submitted: auto-replied"),
        ({"headers": {"Auto-Submitted": "Auto-Generated; owner-email=x@y"}}, "Auto-Submitted: auto-generated"),
        ({"headers": {"Auto-Submitted": "no"}}, None),
        ({"content_type": "multipart/report"}, "multipart/report"),
        ({"from_": "MAILER-DAEMON@mx.example.com"}, "sent by mailer-daemon"),
        ({"from_": "postmaster@example.com"}, "sent by postmaster"),
        ({"headers": {"Return-Path": "<>"}}, "Return-Path: <>"),
        ({"headers": {"X-Auto-Response-Suppress": "All"}}, "X-Auto-Response-Suppress"),
        ({"headers": {"Precedence": "bulk"}}, "Precedence: bulk"),
        ({"headers": {"Precedence": "Auto_Reply"}}, "Precedence: auto_reply"),
        ({"headers": {"Precedence": "list"}}, None),
        ({"headers": {"X-Autoreply": "yes"}}, "X-Autoreply"),
        ({"from_": "bob@contoso.com", "subject": "Out of office"}, None),
    ],
)
def test_auto_submitted(kw: dict, reason: str | None) -> None:
    f = facts(**kw)
    assert auto_submitted_reason(f) == reason
    assert is_auto_submitted(f) is (reason is not None)
