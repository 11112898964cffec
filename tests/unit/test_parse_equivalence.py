"""The fast parser gives the same ParsedMessage as the policy.default one it replaced.

``parse_oracle.py`` is the previous ``mailfiler.tracking.parse`` (email.policy.default
throughout), kept as the reference.  Every field of the result (or the exception raised)
is compared on the realistic corpus, every mailgen generator, the malformed corpus and a
set of hand-made edge cases; the header renderings that replace the header registry are
also compared with the registry itself on generated values.

A difference is allowed only if it is listed in KNOWN_DIFFERENCES with the reason the new
result is the better one.  There are none.

``parse_message`` answers most mail by its fast path (``fast_parse``, no feed parser) and
the rest by ``parse_with_feedparser``: on every corpus, whenever the fast path answers,
its answer must be the oracle's and the feed parser path's, and it must answer for
nearly all of the realistic corpus.
"""

from __future__ import annotations

import base64
import dataclasses
import email.policy
import random
from typing import Any

import pytest

from mailfiler.tracking import headervalues as hv
from mailfiler.tracking import parse as new
from tests import mailgen
from tests.unit import parse_oracle as old

#: case name -> why the new result is right where it differs from the old one
KNOWN_DIFFERENCES: dict[str, str] = {}


def _outcome(module: Any, raw: bytes) -> object:
    try:
        result = module.parse_message(raw)
    except Exception as exc:  # noqa: BLE001 - the exception itself is the outcome compared
        return ("raises", type(exc).__name__)
    return dataclasses.asdict(result)


def _diff(raw: bytes) -> dict[str, tuple[object, object]]:
    before, after = _outcome(old, raw), _outcome(new, raw)
    if isinstance(before, dict) and isinstance(after, dict):
        return {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    return {} if before == after else {"outcome": (before, after)}


def _fast_diff(raw: bytes) -> dict[str, tuple[object, object]] | None:
    """None if the fast path declines ``raw``; else where its result differs
    from the oracle's or the feed parser path's (empty: nowhere)."""
    fast = new.fast_parse(raw)
    if fast is None:
        return None
    after = dataclasses.asdict(fast)
    diff: dict[str, tuple[object, object]] = {}
    for reference in (_outcome(old, raw), _outcome_feedparser(raw)):
        if not isinstance(reference, dict):
            return {"outcome": (reference, after)}
        diff.update({k: (reference[k], after[k]) for k in reference if reference[k] != after[k]})
    return diff


def _outcome_feedparser(raw: bytes) -> object:
    try:
        return dataclasses.asdict(new.parse_with_feedparser(raw))
    except Exception as exc:  # noqa: BLE001
        return ("raises", type(exc).__name__)


def _check(cases: dict[str, bytes]) -> int:
    """Compare every case; return how many the fast path took."""
    failures: dict[str, object] = {}
    taken = 0
    for name, raw in cases.items():
        diff = _diff(raw)
        if diff and name not in KNOWN_DIFFERENCES:
            failures[name] = diff
        elif not diff and name in KNOWN_DIFFERENCES:
            failures[name] = "listed as a known difference but gives the same result"
        # whenever the fast path answers, it answers exactly what the oracle
        # and the feed parser path do (known differences included: none)
        fast = _fast_diff(raw)
        if fast:
            failures[f"{name} (fast path)"] = fast
        taken += fast is not None
    assert not failures, failures
    return taken


HDR = (
    b"From: Anna Andersson <anna@contoso.com>\nTo: erik@fabrikam.com\n"
    b"Date: Tue, 02 Jan 2024 09:15:00 +0100\nMessage-ID: <edge@x.example>\n"
)


def _msg(headers: bytes, body: bytes = b"Body.\n") -> bytes:
    return headers + b"\n" + body


def _mixed(*parts: bytes, boundary: bytes = b"zz", top: bytes = HDR + b"Subject: parts\n") -> bytes:
    body = b"".join(b"--" + boundary + b"\n" + p + b"\n" for p in parts) + b"--" + boundary + b"--\n"
    return top + b'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="' + boundary + b'"\n\n' + body


def _nested(depth: int, inner: bytes) -> bytes:
    body = inner
    for level in range(depth, 0, -1):
        b = b"n%d" % level
        body = b"Content-Type: multipart/mixed; boundary=" + b + b"\n\n--" + b + b"\n" + body + b"\n--" + b + b"--\n"
    return HDR + b"Subject: deep\n" + body


def edge_cases() -> dict[str, bytes]:
    pdf = b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"%PDF-1.4 data")
    subjects = {
        "utf8_q": b"=?utf-8?q?Offert_f=C3=B6r_=C3=A5r?=",
        "utf8_b": b"=?UTF-8?B?w4VrZXNzb24gb2ZmZXJ0?=",
        "latin1_q": b"=?iso-8859-1?q?J=F6rgen_=C5kesson?=",
        "latin1_b": b"=?ISO-8859-1?B?SvZyZ2Vu?=",
        "two_ew_adjacent": b"=?utf-8?q?a?= =?utf-8?q?b?=",
        "two_ew_folded": b"=?utf-8?q?Offert?=\n =?utf-8?q?_f=C3=B6r?= tail",
        "ew_and_text": b"Re: =?utf-8?q?M=C3=B6te?= tomorrow  at   10",
        "ew_inside_word": b"abc=?utf-8?q?x?=def",
        "ew_unknown_charset": b"=?x-nope?q?caf=E9?=",
        "ew_bad_base64": b"=?utf-8?b?!!!?=",
        "ew_invalid_utf8": b"=?utf-8?q?caf=E9?=",
        "ew_lang": b"=?utf-8*sv?q?hej?=",
        "ew_with_space_inside": b"=?utf-8?q?a b?=",
        "ew_unterminated": b"=?utf-8?q?abc",
        "ew_empty": b"=?utf-8?q??= x",
        # the registry ends an encoded word at the '?=' of '?q?=' unless hex digits follow
        "ew_text_starts_with_equals": b"=?utf-8?q?==J=C3=B6rgen?= x",
        "ew_text_starts_with_hex_escape": b"=?utf-8?q?=C3=85sa?= x",
        "eight_bit_utf8": "Möte på fredag".encode(),
        "eight_bit_latin1": "Möte på fredag".encode("latin-1"),
        "nbsp_8bit": b"a\xc2\xa0b",
        "controls": b"a\x0bb\x1fc",
        "long_folded": b"word " * 50 + b"\n " + b"more",
        "empty": b"",
    }
    names = {
        "plain": b"Anna Andersson <anna@contoso.com>",
        "quoted_comma": b'"Andersson, Anna" <anna@contoso.com>',
        "quoted_spaces": b'"  Anna   A " <anna@contoso.com>',
        "ew_utf8_b": b"=?utf-8?b?w4VzYSBLYXJsc3Nvbg==?= <asa@contoso.com>",
        "ew_latin1_q": b"=?iso-8859-1?q?J=F6rgen?= =?iso-8859-1?q?_=C5kesson?= <j@contoso.com>",
        "ew_then_atom": b"=?utf-8?q?=C3=85sa?= Karlsson <asa@contoso.com>",
        "ew_double_space": b"=?utf-8?q?a__b?= <x@contoso.com>",
        "ew_leading_space": b"=?utf-8?q?_a?= <x@contoso.com>",
        "ew_in_quotes": b'"=?utf-8?q?a?=" <x@contoso.com>',
        "ew_no_space_before_angle": b"=?utf-8?q?=C3=A5?=<x@contoso.com>",
        "ew_text_starts_with_equals": b"=?utf-8?q?==J=C3=B6rgen?= <j@contoso.com>",
        "list_folded": b"A <a@contoso.com>,\n B <b@contoso.com>,\n\tc@contoso.com",
        "dupes_and_case": b"A <A@Contoso.com>, a@contoso.COM, <a@contoso.com>",
        "group": b"Team: a@contoso.com, B <b@contoso.com>;",
        "empty_group": b"undisclosed-recipients:;",
        "comment": b"a@contoso.com (Anna Andersson)",
        "dotted_name": b"J. R. Smith <jr@contoso.com>",
        "bare_list": b"a@contoso.com, b@contoso.com",
        "trailing_comma": b"a@contoso.com, ",
        "no_domain": b"anna",
        "angle_only": b"<anna@contoso.com>",
        "eight_bit_name": "Jörgen <j@contoso.com>".encode(),
        "eight_bit_garbage": b"Caf\xc3( \xff\xfe <erik@fabrikam.com>",
        "quoted_local": b'"a b"@contoso.com',
        "ip_domain": b"a@[192.0.2.1]",
        "backslash": b'"a\\"b" <x@contoso.com>',
        "unbalanced": b'"unbalanced <x@contoso.com>',
        "very_long": b", ".join(b"p%d@contoso.com" % i for i in range(300)),
    }
    ctypes = {
        "charset_unquoted": b"text/plain; charset=utf-8",
        "charset_latin1": b"text/plain; charset=iso-8859-1",
        "charset_spaces": b"text/plain ; charset = utf-8 ;",
        "charset_rfc2231": b"text/plain; charset*=utf-8''utf-8",
        "charset_unknown": b'text/plain; charset="x-unknown"',
        "charset_empty": b'text/plain; charset=""',
        "charset_ew": b'text/plain; charset="=?utf-8?q?x?="',
        "no_slash": b"text",
        "two_slashes": b"text/plain/x",
        "comment": b"text/plain (comment); charset=utf-8",
        "dup_param": b"text/plain; charset=utf-8; charset=latin-1",
        "upper": b"TEXT/PLAIN; CHARSET=UTF-8",
        "folded": b"text/plain;\n charset=utf-8;\n format=flowed",
    }
    cases: dict[str, bytes] = {}
    for key, subj in subjects.items():
        cases[f"subject_{key}"] = _msg(HDR + b"Subject: " + subj + b"\n")
    for key, value in names.items():
        cases[f"to_{key}"] = _msg(
            b"From: " + value + b"\nTo: " + value + b"\nCc: x@y.example\nSubject: s\nMessage-ID: <a@b>\n"
        )
    for key, value in ctypes.items():
        cases[f"ctype_{key}"] = _msg(HDR + b"Subject: c\nContent-Type: " + value + b"\n", "Hej på dig\n".encode())
    cases.update(
        {
            "latin1_body": _msg(HDR + b"Subject: l\nContent-Type: text/plain; charset=iso-8859-1\n", b"p\xe5 dig\n"),
            "qp_body": _msg(
                HDR
                + b"Subject: q\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
                b"caf=C3=A9 =\nsoft\n",
            ),
            "cte_uppercase_space": _msg(
                HDR + b"Subject: q\nContent-Type: text/plain\nContent-Transfer-Encoding:  BASE64 \n",
                base64.encodebytes(b"hello"),
            ),
            "cte_comment": _msg(
                HDR + b"Subject: q\nContent-Transfer-Encoding: base64 (yes)\n", base64.encodebytes(b"hello")
            ),
            "html_only": _msg(
                HDR + b"Subject: h\nContent-Type: text/html; charset=utf-8\n",
                b"<p>Hej &amp; <b>v\xc3\xa4lkommen</b></p>",
            ),
            "no_message_id": b"From: a@contoso.com\nTo: b@contoso.com\nSubject: x\nDate: Tue, 02 Jan 2024 09:15:00 +0100"
            b"\n\nBody.\n",
            "no_message_id_folded_8bit": "From: Jörgen\n <j@contoso.com>\nSubject: =?utf-8?q?x?=\n\nBody.\r\n".encode(),
            "msgid_variants": _msg(
                b"From: a@b.c\nMessage-ID: <a..b@c.>\nIn-Reply-To: x <p@q> <r@s>\nReferences: <a@b>"
            ),
            "msgid_no_at": _msg(b"From: a@b.c\nMessage-ID: <abc>\nSubject: s\n"),
            "msgid_comment": _msg(b"From: a@b.c\nMessage-ID: (c) <abc@d>\nSubject: s\n"),
            "msgid_bracketed": _msg(b"From: a@b.c\nMessage-ID: <a@[1.2.3.4]>\nSubject: s\n"),
            "msgid_two": _msg(b"From: a@b.c\nMessage-ID: <a@b> <c@d>\nSubject: s\n"),
            "msgid_ew": _msg(b"From: a@b.c\nMessage-ID: =?utf-8?q?<x@y>?=\nSubject: s\n"),
            "msgid_long": _msg(b"From: a@b.c\nMessage-ID: <" + b"x" * 1000 + b"@y>\nSubject: s\n"),
            "date_minus0000": _msg(b"From: a@b.c\nDate: Tue, 02 Jan 2024 09:15:00 -0000\n"),
            "date_named_zone": _msg(b"From: a@b.c\nDate: Tue, 02 Jan 2024 09:15:00 PST\n"),
            "date_2digit_year": _msg(b"From: a@b.c\nDate: 2 Jan 24 09:15 +0100\n"),
            "date_huge_year": _msg(b"From: a@b.c\nDate: 2 Jan 99999999999999999999 09:15 +0100\n"),
            "date_bad_offset": _msg(b"From: a@b.c\nDate: 2 Jan 2024 09:15 +9999\n"),
            "date_8bit": _msg(b"From: a@b.c\nDate: Tue, 02 Jan 2024 09:15:00 +0100 (\xe9)\n"),
            "date_empty": _msg(b"From: a@b.c\nDate: \n"),
            "date_60s": _msg(b"From: a@b.c\nDate: Tue, 02 Jan 2024 09:15:60 +0100\n"),
            "attachment_plain_name": _mixed(
                b"Content-Type: text/plain\n\nhi", b"Content-Type: application/pdf; name=a.pdf\n" + pdf
            ),
            "attachment_rfc2231": _mixed(
                b"Content-Type: application/pdf\nContent-Disposition: attachment; filename*=iso-8859-1''%C5r.pdf\n"
                + pdf
            ),
            "attachment_rfc2231_continuations": _mixed(
                b"Content-Type: application/pdf\nContent-Disposition: attachment;\n filename*0*=utf-8''%C3%96ver;\n"
                b" filename*1=sikt.pdf\n" + pdf
            ),
            "attachment_ew_filename": _mixed(
                b'Content-Type: application/pdf\nContent-Disposition: attachment; filename="=?utf-8?q?=C3=85r.pdf?="\n'
                + pdf
            ),
            "attachment_8bit_filename": _mixed(
                'Content-Type: application/pdf\nContent-Disposition: attachment; filename="År.pdf"\n'.encode() + pdf
            ),
            "attachment_backslash_filename": _mixed(
                b'Content-Type: application/pdf\nContent-Disposition: attachment; filename="C:\\\\tmp\\\\a.pdf"\n' + pdf
            ),
            "attachment_inline_text": _mixed(
                b"Content-Type: text/plain\n\nbody",
                b'Content-Type: text/plain\nContent-Disposition: inline; filename="notes.txt"\n\nnotes',
            ),
            "attachment_disposition_only": _mixed(
                b"Content-Type: text/plain\n\nbody", b"Content-Type: text/plain\nContent-Disposition: attachment\n\nx"
            ),
            "attachment_quoted_specials": _mixed(
                b'Content-Type: application/octet-stream; name="a;b=c.bin"\nContent-Disposition: attachment;'
                b' filename="a;b=c.bin"\n' + pdf
            ),
            "attachment_nul_ctype": _mixed(b"Content-Type: application/x\x00y\n" + pdf),
            "message_rfc822": _mixed(
                b"Content-Type: text/plain\n\nouter",
                b"Content-Type: message/rfc822\n\nFrom: x@y.z\nSubject: inner\n\ninner body\n",
            ),
            "digest": _msg(
                HDR + b'Subject: d\nContent-Type: multipart/digest; boundary="d"\n',
                b"--d\n\nFrom: x@y.z\nSubject: one\n\nfirst\n--d--\n",
            ),
            "missing_boundary_param": _msg(HDR + b"Subject: m\nContent-Type: multipart/mixed\n", b"--x\n\nhi\n--x--\n"),
            "boundary_rfc2231": _msg(
                HDR + b"Subject: m\nContent-Type: multipart/mixed; boundary*=''bb\n",
                b"--bb\nContent-Type: text/plain\n\nhi\n--bb--\n",
            ),
            "boundary_unquoted_specials": _msg(
                HDR + b"Subject: m\nContent-Type: multipart/mixed; boundary==_x?y\n",
                b"--=_x?y\nContent-Type: text/plain\n\nhi\n--=_x?y--\n",
            ),
            "boundary_quoted_ew": _msg(
                HDR + b'Subject: m\nContent-Type: multipart/mixed; boundary="=?utf-8?q?bb?="\n',
                b"--bb\nContent-Type: text/plain\n\nhi\n--bb--\n--=?utf-8?q?bb?=\n\nother\n--=?utf-8?q?bb?=--\n",
            ),
            "boundary_trailing_space": _msg(
                HDR + b'Subject: m\nContent-Type: multipart/mixed; boundary="bb "\n',
                b"--bb\nContent-Type: text/plain\n\nhi\n--bb--\n",
            ),
            "boundary_missing_end": _mixed(b"Content-Type: text/plain\n\nhi", boundary=b"q").replace(b"--q--\n", b""),
            "nested_5": _nested(5, b"Content-Type: text/plain; charset=utf-8\n\ninner\n"),
            "nested_120": _nested(120, b"Content-Type: text/plain\n\ninner\n"),
            "nested_400": _nested(400, b"Content-Type: text/plain\n\ninner\n"),
            # deeper than the stdlib feed parser's generators can go: RecursionError, before and after
            "nested_3000": _nested(3000, b"Content-Type: text/plain\n\ninner\n"),
            "alternative_html_first": _msg(
                HDR + b'Subject: a\nContent-Type: multipart/alternative; boundary="a"\n',
                b"--a\nContent-Type: text/html\n\n<p>x</p>\n--a\nContent-Type: text/plain\n\nplain\n--a--\n",
            ),
            "unix_from_line": b"From someone@x Tue Jan  2 09:15:00 2024\n" + _msg(HDR + b"Subject: u\n"),
            "crlf": _msg(HDR + b"Subject: =?utf-8?q?a?=\r\n").replace(b"\n", b"\r\n"),
            "no_blank_line": HDR + b"Subject: x\nthis is not a header line\nbody\n",
            "header_only": HDR + b"Subject: only headers",
            "many_headers": HDR + b"".join(b"X-H%d: v %d\n" % (i, i) for i in range(600)) + b"\nbody",
            "huge_header": HDR + b"X-Big: " + b"a" * 20000 + b"\n\nbody",
            "space_before_colon": b"From : a@b.c\nSubject : s\n\nbody",
            "uuencode": _msg(
                HDR + b"Subject: u\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: x-uuencode\n",
                b"begin 644 a\n#86)C\n`\nend\n",
            ),
        }
    )
    return cases


def test_realistic_corpus() -> None:
    # the fast path must actually carry ordinary mail (>= 95 %), CRLF mail too
    assert _check({f"realistic_{i}": mailgen.realistic_message(i, seed=1) for i in range(300)}) >= 285
    assert (
        _check({f"realistic_s7_{i}": mailgen.realistic_message(i, seed=7, with_attachment_every=2) for i in range(60)})
        >= 57
    )
    crlf = {f"realistic_crlf_{i}": mailgen.realistic_message(i, seed=2).replace(b"\n", b"\r\n") for i in range(40)}
    assert _check(crlf) >= 38


def test_malformed_corpus() -> None:
    _check({f"malformed_{k}": v for k, v in mailgen.malformed_corpus().items()})


def test_other_generators() -> None:
    _check(
        {
            "large_attachment": mailgen.large_attachment_message(50_000),
            "many_attachments": mailgen.many_attachments_message(40),
            "many_attachments_1": mailgen.many_attachments_message(1, seed=3),
        }
    )


def test_edge_cases() -> None:
    assert _check(edge_cases()) > 50  # most edge cases are well-formed mail with odd headers


_NASTY = (
    b"=?utf-8?q?", b"?=", b"=?utf-8?b?w4U=?=", b"=?iso-8859-1?q?=E5?=", b'"', b"\\", b"(", b")", b";", b":", b",",
    b"<", b">", b"@", b"\xe5", b"\xc3\xa5", b"\xff", b"\x00", b"\t", b"  ", b"\n ", b"\r\n", b"*", b"'", b"%", b"=",
    b"?", b"boundary=", b"charset=", b"filename*=utf-8''%C3%85", b"name=", b"multipart/mixed", b"text/html",
    b"base64", b"quoted-printable", b"attachment", b"\n\n", b"--",
)  # fmt: skip


def test_mutated_messages() -> None:
    """Realistic and edge-case messages with hostile bytes inserted or cut, mostly in the headers."""
    rng = random.Random(1)
    seeds = [mailgen.realistic_message(i, seed=3, with_attachment_every=2) for i in range(20)]
    seeds += [raw for raw in mailgen.malformed_corpus().values() if raw]
    seeds += [raw for name, raw in edge_cases().items() if not name.startswith("nested_")]
    cases = {}
    for i in range(600):
        raw = rng.choice(seeds)
        head_end = max(1, raw.find(b"\n\n"))
        for _ in range(rng.randrange(1, 4)):
            pos = rng.randrange(head_end if rng.random() < 0.6 else len(raw))
            if rng.random() < 0.3:
                raw = raw[:pos] + raw[pos + rng.randrange(1, 5) :]
            else:
                raw = raw[:pos] + rng.choice(_NASTY) + raw[pos:]
        cases[f"mutated_{i}"] = raw
    assert _check(cases) > 100  # the fast path meets many of them, and must agree


# --------------------------------------------------------------------------- header renderings

_PIECES = (
    "text/plain", "multipart/mixed", "application/pdf", "attachment", "inline", "base64", "8bit",
    ";", "; ", " ;", ";;", "=", " = ", "charset", "Charset", "name", "filename", "filename*", "boundary",
    "utf-8", "UTF-8", '"utf-8"', '"a b"', '"a;b"', '""', '" "', '"x=y"', '"=?utf-8?q?a?="', "=?utf-8?q?a?=",
    "'", "%20", "*0*", "''", '"', "\\", "(c)", "(", ")", "/", "<", ">", "@", ",", ":", "?", "\t", "  ", "\n ",
    "----=_Part_1", "a.pdf", "x-y", "\udce9", "é", "\x00", "\x0b",
)  # fmt: skip
_ADDR_PIECES = (
    "Anna", "Andersson", "anna@contoso.com", "<anna@contoso.com>", "<a.b@c.d>", "x@y", '"A, B"', '"a  b"', '" a"',
    "=?utf-8?b?w4VzYQ==?=", "=?utf-8?q?a_b?=", "=?utf-8?q?_a?=", "=?iso-8859-1?q?J=F6rgen?=", "=?utf-8?q?=FF?=",
    "=?x-nope?q?a?=", "=?utf-8?q??=", " ", "  ", "\t", ",", ", ", "\n ", ".", "J.", "(c)", ":", ";", "<", ">", "@",
    '"', "\\", "=?", "?=", "O'Brien", "é", "\udcc3", "[1.2.3.4]", "a=b@c.d",
)  # fmt: skip


def _values(pieces: tuple[str, ...], seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 9))) for _ in range(count)]


def _registry(name: str, value: str) -> object:
    try:
        return str(email.policy.default.header_fetch_parse(name, value))
    except Exception as exc:  # noqa: BLE001
        return ("raises", type(exc).__name__)


def _ours(name: str, value: str) -> object:
    try:
        return hv.default_header_str(name, value)
    except Exception as exc:  # noqa: BLE001
        return ("raises", type(exc).__name__)


@pytest.mark.parametrize("name", ["content-type", "content-disposition", "content-transfer-encoding"])
def test_mime_header_rendering_matches_the_registry(name: str) -> None:
    values = _values(_PIECES, len(name), 4000)
    # type and parameters in the shapes real mail has, with odd spacing and quoting
    rng = random.Random(len(name))
    heads = ("text/plain", "Multipart/Alternative", "application/vnd.ms-excel", "attachment", "inline", "base64", "x")
    params = ("charset", "Charset", "name", "filename", "boundary", "format", "size", "x-mac-type")
    pvalues = ("utf-8", '"utf-8"', '"x y.pdf"', "a.pdf", '"----=_Part_1_2.3"', "=_x", '" a "', '"O\'Brien %41.pdf"',
               '"a;b"', "1234", '"=?utf-8?q?a?="', '""', "a'b", "%41")  # fmt: skip
    spaces = ("", " ", "  ", "\t", "\n ", "\r\n\t")
    for _ in range(3000):
        value = rng.choice(heads) + rng.choice(spaces)
        for _ in range(rng.randrange(0, 4)):
            value += f"{rng.choice(spaces)};{rng.choice(spaces)}{rng.choice(params)}{rng.choice(('=', ' = ', '='))}"
            value += rng.choice(pvalues) + rng.choice(spaces)
        values.append(value + rng.choice(("", ";", " ;", "; ")))
    assert sum(hv._mime_str(name.lower(), hv._unfold(v)) is not None for v in values) > 200
    bad = {v: (_registry(name, v), _ours(name, v)) for v in values if _registry(name, v) != _ours(name, v)}
    assert not bad


@pytest.mark.parametrize("name", ["subject", "in-reply-to", "references", "message-id", "date"])
def test_other_header_rendering_matches_the_registry(name: str) -> None:
    pieces = (*_ADDR_PIECES, "Re:", "Tue, 02 Jan 2024 09:15:00 +0100", "2 Jan 24", "-0000", "99:99", "<a@b>", "<>")
    values = _values(pieces, len(name), 4000)
    bad = {v: (_registry(name, v), _ours(name, v)) for v in values if _registry(name, v) != _ours(name, v)}
    assert not bad


def test_address_lists_match_the_registry() -> None:
    def registry(value: str) -> object:
        try:
            header = email.policy.default.header_fetch_parse("to", value)
            return [(a.display_name, a.addr_spec) for a in header.addresses]
        except Exception as exc:  # noqa: BLE001
            return ("raises", type(exc).__name__)

    def ours(value: str) -> object:
        try:
            return hv.address_pairs("to", value)
        except Exception as exc:  # noqa: BLE001
            return ("raises", type(exc).__name__)

    values = _values(_ADDR_PIECES, 11, 6000)
    values += [f"{a} {b}" for a in _ADDR_PIECES for b in ("<x@y.z>", "<x@y.z>, c@d.e")]
    # mailbox lists made of name words, mostly well-formed, so that many take the fast path
    rng = random.Random(5)
    words = [p for p in _ADDR_PIECES if p[0].isalpha() or p[0] == '"' or p.startswith("=?utf")] + ["J."]
    for _ in range(3000):
        boxes = []
        for _ in range(rng.randrange(1, 4)):
            name = rng.choice((" ", " ", "  ", "\t")).join(rng.choice(words) for _ in range(rng.randrange(0, 4)))
            boxes.append(f"{name}{rng.choice(('', ' ', '  '))}<{rng.choice(('a@b.c', 'A.B@Contoso.COM', 'x=y@z'))}>")
        values.append(rng.choice((",", ", ", ",\n ", " , ")).join(boxes))
    fast = [v for v in values if hv._simple_mailboxes(hv._unfold(v)) is not None]
    assert len(fast) > 500  # the generator does reach the fast path
    bad = {v: (registry(v), ours(v)) for v in values if registry(v) != ours(v)}
    assert not bad
