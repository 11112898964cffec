"""The boundary cases of parse.fast_parse (fastmime's MIME split without the feed parser).

Each case states whether the fast path takes the message or declines it; either way
parse_message must give what the oracle (the old policy.default parser) and the feed
parser path give, and when the fast path answers, its answer must be theirs.
"""

from __future__ import annotations

import base64
import dataclasses
import quopri
import random
from collections.abc import Callable
from email.message import Message

import pytest

from mailfiler.tracking import fastmime
from mailfiler.tracking import headervalues as hv
from mailfiler.tracking import parse as new
from tests import mailgen
from tests.unit import parse_oracle as old

HDR = (
    b"From: Anna Andersson <anna@contoso.com>\nTo: erik@fabrikam.com\n"
    b"Date: Tue, 02 Jan 2024 09:15:00 +0100\nMessage-ID: <fast@x.example>\nSubject: s\n"
)
TEXT = b"Content-Type: text/plain; charset=utf-8\n"
HTML = b"Content-Type: text/html; charset=utf-8\n"


def _outcome(parse: Callable[[bytes], object], raw: bytes) -> object:
    try:
        return dataclasses.asdict(parse(raw))
    except Exception as exc:  # noqa: BLE001 - the exception itself is the outcome compared
        return ("raises", type(exc).__name__)


def _assert_same(raw: bytes, *, fast: bool) -> None:
    expected = _outcome(old.parse_message, raw)
    assert _outcome(new.parse_with_feedparser, raw) == expected
    assert _outcome(new.parse_message, raw) == expected
    result = new.fast_parse(raw)
    assert (result is not None) == fast, "fast path taken" if result is not None else "fast path declined"
    if result is not None:
        assert dataclasses.asdict(result) == expected


def _multipart(subtype: bytes, boundary: bytes, *parts: bytes, pre: bytes = b"", post: bytes = b"") -> bytes:
    body = pre + b"".join(b"--" + boundary + b"\n" + p + b"\n" for p in parts) + b"--" + boundary + b"--\n" + post
    return b"Content-Type: multipart/" + subtype + b'; boundary="' + boundary + b'"\n\n' + body


def _message(entity: bytes, headers: bytes = HDR) -> bytes:
    return headers + b"MIME-Version: 1.0\n" + entity


def _crlf(raw: bytes) -> bytes:
    return raw.replace(b"\n", b"\r\n")


ALT = _multipart(b"alternative", b"alt", TEXT + b"\nplain text\n", HTML + b"\n<p>html</p>\n")
PDF = (
    b'Content-Type: application/pdf; name="a.pdf"\nContent-Disposition: attachment; filename="a.pdf"\n'
    b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"%PDF-1.4 \x00\xff binary" * 20)
)

TAKEN = {
    "plain": HDR + b"\nBody.\n",
    "plain_crlf": _crlf(HDR + b"\nBody.\nline two\n"),
    "no_trailing_newline": HDR + b"\nBody without newline",
    "empty_body": HDR + b"\n",
    "header_only_no_blank_line": HDR + b"X-Last: no newline at the end",
    "folded_headers": b"From: a@contoso.com\nSubject: a long\n\tfolded subject\n  more\nX-Empty:\nX-Tight:value  \n\nb\n",
    "folded_headers_crlf": _crlf(b"From: a@contoso.com\nSubject: a long\n folded\nTo:\n b@contoso.com\n\nb\n"),
    "encoded_words": b"From: =?utf-8?q?J=C3=B6rgen_=C3=85kesson?= <j@contoso.com>\nTo: =?utf-8?b?w4VzYQ==?= <a@b.c>\n"
    b"Subject: =?utf-8?q?Offert_f=C3=B6r?=\n =?utf-8?q?_=C3=A5r?= tail\n\nb\n",
    "eight_bit_headers": "From: Jörgen <j@contoso.com>\nSubject: Möte på fredag\n\nb\n".encode(),
    "latin1_headers": "From: Jörgen <j@contoso.com>\nSubject: Möte på fredag\n\nb\n".encode("latin-1"),
    "eight_bit_body_utf8": _message(TEXT + b"Content-Transfer-Encoding: 8bit\n\n" + "Hej på dig\n".encode()),
    "eight_bit_body_no_charset": _message(b"\n" + "Hej på dig\n".encode()),
    "latin1_body": _message(b"Content-Type: text/plain; charset=iso-8859-1\n\n" + "på\n".encode("latin-1")),
    "qp_soft_breaks": _message(
        TEXT + b"Content-Transfer-Encoding: quoted-printable\n\n" + quopri.encodestring("å".encode() * 100 + b"\n")
    ),
    "qp_soft_breaks_crlf": _crlf(
        _message(TEXT + b"Content-Transfer-Encoding: quoted-printable\n\nsoft =\nbreak caf=C3=A9 =\n")
    ),
    "qp_odd_sequences": _message(TEXT + b"Content-Transfer-Encoding: Quoted-Printable\n\n=ZZ =4 trailing   \n=3D=\n"),
    "base64_body": _message(TEXT + b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes("å".encode() * 90)),
    "base64_padding_1": _message(TEXT + b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"ab")),
    "base64_padding_2": _message(TEXT + b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"abcd")),
    "base64_no_newline": _message(TEXT + b"Content-Transfer-Encoding: base64\n\n" + base64.b64encode(b"abc")),
    "base64_crlf": _crlf(_message(TEXT + b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"x" * 200))),
    "html_only": _message(HTML + b"\n<p>Hej &amp; <b>v\xc3\xa4lkommen</b></p>\n"),
    "alternative": _message(ALT),
    "alternative_crlf": _crlf(_message(ALT)),
    "alternative_html_first": _message(_multipart(b"alternative", b"a", HTML + b"\n<p>x</p>", TEXT + b"\nplain")),
    "nested_mixed_alternative": _message(_multipart(b"mixed", b"outer", ALT, PDF)),
    "nested_mixed_alternative_crlf": _crlf(_message(_multipart(b"mixed", b"outer", ALT, PDF))),
    "nested_three_levels": _message(
        _multipart(b"mixed", b"l1", _multipart(b"related", b"l2", ALT, b"Content-Type: image/png\n\nPNG"), PDF)
    ),
    "nested_boundary_prefix": _message(
        _multipart(b"mixed", b"b", _multipart(b"alternative", b"b2", TEXT + b"\nx", HTML + b"\ny"), TEXT + b"\nz")
    ),
    "preamble_epilogue": _message(
        _multipart(b"mixed", b"pe", TEXT + b"\nbody", pre=b"This is a MIME message.\n--not it\n\n", post=b"bye\n")
    ),
    "epilogue_with_delimiters": _message(_multipart(b"mixed", b"ed", TEXT + b"\nbody", post=b"--ed\nafter\n--ed--\n")),
    "nested_epilogue": _message(
        _multipart(b"mixed", b"o", _multipart(b"alternative", b"i", TEXT + b"\nx", post=b"inner epilogue\n"), PDF)
    ),
    "delimiter_whitespace": _message(
        b'Content-Type: multipart/mixed; boundary="ws"\n\n--ws \t\n' + TEXT + b"\nbody\n--ws--  \n"
    ),
    "delimiter_lookalikes": _message(_multipart(b"mixed", b"lk", TEXT + b"\n--lkx\n--lk--x\n-- \n--\nbody")),
    "part_without_headers": _message(_multipart(b"mixed", b"nh", b"\nno headers: text/plain", PDF)),
    "part_blank_lines": _message(_multipart(b"mixed", b"bl", TEXT + b"\n\n\nbody\n\n")),
    "part_empty_body": _message(_multipart(b"mixed", b"eb", TEXT + b"\n", TEXT)),
    "close_without_newline": _message(b'Content-Type: multipart/mixed; boundary="cn"\n\n--cn\n\nx\n--cn--'),
    "boundary_unquoted": _message(
        b"Content-Type: multipart/mixed; boundary=simple\n\n--simple\n" + TEXT + b"\nx\n--simple--\n"
    ),
    "boundary_specials": _message(_multipart(b"mixed", b"=_a?b c'(d)+,./:", TEXT + b"\nx")),
    "boundary_folded_header": _message(
        b'Content-Type: multipart/mixed;\n\tboundary="fold"\n\n--fold\n' + TEXT + b"\nx\n--fold--\n"
    ),
    "ctype_uppercase_spaces": _message(
        b'Content-Type: Multipart/Mixed ;  Boundary = "up"\n\n--up\nContent-Type: TEXT/PLAIN\n\nx\n--up--\n'
    ),
    "duplicate_content_type": _message(b"Content-Type: text/html\nContent-Type: text/plain\n\n<p>x</p>\n"),
    "attachments_named": _message(
        _multipart(
            b"mixed",
            b"at",
            TEXT + b"\nbody",
            b"Content-Type: application/pdf\nContent-Disposition: attachment; filename*=iso-8859-1''%C5r.pdf\n"
            b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"pdf"),
            b'Content-Type: text/plain\nContent-Disposition: inline; filename="notes.txt"\n\nnotes',
            b"Content-Type: text/plain\nContent-Disposition: attachment\n\nx",
            b"Content-Type: image/png; name=p.png\nContent-Transfer-Encoding: 7bit\n\nnot really",
        )
    ),
    "rfc2231_charset": _message(b"Content-Type: text/plain; charset*=utf-8''utf-8\n\nb\n"),
    "no_message_id": b"From: a@contoso.com\nSubject: x\n\nBody.\n",
    "multipart_cte_8bit": _message(b"Content-Transfer-Encoding: 8bit\n" + _multipart(b"mixed", b"c8", TEXT + b"\nx")),
}

DECLINED = {
    "bare_cr": HDR + b"\nline\rmore\n",
    "nul": HDR + b"\nnul \x00 here\n",
    "unix_from": b"From someone@x Tue Jan  2 09:15:00 2024\n" + HDR + b"\nb\n",
    "not_a_header_line": HDR + b"this is not a header\n\nb\n",
    "continuation_first": b" folded\n" + HDR + b"\nb\n",
    "space_before_colon": b"From : a@b.c\nSubject : s\n\nbody",
    "colon_first": HDR + b": no name\n\nb\n",
    "eight_bit_header_name": HDR + b"X-\xe5: v\n\nb\n",
    "not_mail": b"just some text\n",
    "base64_missing_padding": _message(TEXT + b"Content-Transfer-Encoding: base64\n\nYWJj\nZA\n"),
    "base64_invalid_chars": _message(TEXT + b"Content-Transfer-Encoding: base64\n\nYW*J j\n"),
    "uuencode": _message(
        b"Content-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n\nbegin 644 a\n#86)C\n`\nend\n"
    ),
    "unknown_charset": _message(b'Content-Type: text/plain; charset="x-unknown"\n\nb\n'),
    "missing_close": _message(b'Content-Type: multipart/mixed; boundary="mc"\n\n--mc\n\nx\n'),
    "missing_start": _message(b'Content-Type: multipart/mixed; boundary="ms"\n\nx\n--ms--\n'),
    "close_only": _message(b'Content-Type: multipart/mixed; boundary="co"\n\n--co--\n'),
    "repeated_delimiter": _message(b'Content-Type: multipart/mixed; boundary="rd"\n\n--rd\n--rd\n\nx\n--rd--\n'),
    "no_boundary": _message(b"Content-Type: multipart/mixed\n\n--x\n\nhi\n--x--\n"),
    "empty_boundary": _message(b'Content-Type: multipart/mixed; boundary=""\n\n--\n\nhi\n----\n'),
    "inner_not_closed": _message(
        b'Content-Type: multipart/mixed; boundary="o"\n\n--o\nContent-Type: multipart/alternative; boundary="i"\n\n'
        b"--i\n\nx\n--o--\n"
    ),
    "part_headers_run_into_delimiter": _message(
        b'Content-Type: multipart/mixed; boundary="hd"\n\n--hd\nContent-Type: text/plain\n--hd--\n'
    ),
    "multipart_cte_base64": _message(
        b"Content-Transfer-Encoding: base64\n" + _multipart(b"mixed", b"cb", TEXT + b"\nx")
    ),
    "message_rfc822": _message(
        _multipart(b"mixed", b"rf", TEXT + b"\nouter", b"Content-Type: message/rfc822\n\nFrom: x@y.z\n\ninner\n")
    ),
    "digest": _message(_multipart(b"digest", b"dg", b"From: x@y.z\nSubject: one\n\nfirst")),
    "too_deep": _message(
        _multipart(b"mixed", b"d1", *[b""] * 0, TEXT + b"\nx")
        .replace(
            b"\n--d1\n",
            b"\n--d1\n"
            + b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\n\n--n%d\n' % (i, i) for i in range(9)),
            1,
        )
        .replace(b"\n--d1--\n", b"\n" + b"".join(b"--n%d--\n" % i for i in reversed(range(9))) + b"--d1--\n")
    ),
}


@pytest.mark.parametrize("name", sorted(TAKEN))
def test_fast_path_takes(name: str) -> None:
    _assert_same(TAKEN[name], fast=True)


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_fast_path_declines(name: str) -> None:
    _assert_same(DECLINED[name], fast=False)


def test_empty_input_raises_as_before() -> None:
    assert new.fast_parse(b"") is None
    for raw in (b"", b"\n\n", b"  \r\n"):
        with pytest.raises(Exception) as caught:  # the type is compared with the oracle's
            new.parse_message(raw)
        assert _outcome(old.parse_message, raw) == ("raises", type(caught.value).__name__)


def test_realistic_corpus_takes_the_fast_path() -> None:
    for i in range(50):
        raw = mailgen.realistic_message(i, seed=11, with_attachment_every=3)
        _assert_same(raw, fast=True)
        _assert_same(_crlf(raw), fast=True)


def test_simple_boundary_reading_matches_get_boundary() -> None:
    """fastmime reads the boundary of `type; boundary="..."` values itself; it must be get_boundary()'s."""
    rng = random.Random(3)
    chars = "0123456789abcXYZ'()+_,./:=?- \"\\;<>*%"
    checked = 0
    for _ in range(3000):
        boundary = "".join(rng.choice(chars) for _ in range(rng.randrange(1, 12)))
        value = f'multipart/{rng.choice(("mixed", "Alternative"))}; boundary="{boundary}"'
        msg = Message(hv.POLICY)
        msg["Content-Type"] = value
        simple = fastmime._SIMPLE_BOUNDARY.fullmatch(str(msg.get("content-type")))
        if simple:
            checked += 1
            assert simple.group(1) == msg.get_boundary(), value
    assert checked > 300


B64_CASES = sorted(name for name in (*TAKEN, *DECLINED) if "base64" in name or name == "pdf_attachment")


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7, 76, 77, 1000])
def test_base64_decoded_in_steps_is_decoded_as_whole(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Base64 is checked and decoded B64_STEP bytes at a time (so that a parse in a
    thread lets the event loop run); every cut, mid-line and mid-quartet included,
    gives what one pass gives, and declines what it declines."""
    cases = {name: (TAKEN.get(name) or DECLINED[name], name in TAKEN) for name in B64_CASES}
    rng = random.Random(step)
    for i in range(20):  # odd line lengths, CRLF, each padding, a stray character or '=' anywhere
        data = rng.randbytes(rng.randrange(0, 300))
        lines = base64.b64encode(data)
        width = rng.randrange(4, 90)
        body = b"\n".join(lines[k : k + width] for k in range(0, len(lines), width)) + b"\n"
        if i % 3 == 1:
            body = body.replace(b"\n", b"\r\n")
        if i % 4 == 2 and body:
            at = rng.randrange(len(body))
            body = body[:at] + rng.choice((b"*", b"=", b" ", b"==")) + body[at:]
        raw = _message(b"Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n" + body)
        cases[f"random {i}"] = (raw, new.fast_parse(raw) is not None)  # in one step (the default)
    assert len(cases) > 20
    monkeypatch.setattr(new, "B64_STEP", step)
    for name, (raw, fast) in cases.items():
        try:
            _assert_same(raw, fast=fast)
        except AssertionError as exc:
            raise AssertionError(f"{name} in steps of {step}: {exc}") from exc
