"""The opt-in IMAP keywords in the config (``imap: {keywords: ...}``) and how they
reach the connection settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mailfiler.backends.imap import Imap, imap_settings
from mailfiler.sources import imapproto as proto

BASE = {"host": "127.0.0.1", "username": "alice", "password_file": "pw", "tls": "none"}


@pytest.mark.parametrize(
    ("given", "names"),
    [
        (None, None),
        (False, None),
        (True, ("$Tracked", "$TrackFailed")),
        ({}, ("$Tracked", "$TrackFailed")),
        ({"tracked": "CRM"}, ("CRM", "$TrackFailed")),
        ({"tracked": "$CRM-Tracked", "failed": "$CRM-Failed"}, ("$CRM-Tracked", "$CRM-Failed")),
    ],
)
def test_keywords_are_off_unless_asked_for(given: object, names: tuple[str, str] | None, tmp_path: Path) -> None:
    cfg = Imap(**BASE, **({} if given is None else {"keywords": given}))  # type: ignore[arg-type]
    assert cfg.keyword_names == names
    assert imap_settings(cfg).keywords == names


@pytest.mark.parametrize("bad", ["\\Seen", "a b", "x(y", 'q"', "*", "Åkesson", "", "a]"])
def test_a_keyword_must_be_an_imap_atom(bad: str) -> None:
    with pytest.raises(ValidationError, match="not an IMAP keyword"):
        Imap(**BASE, keywords={"failed": bad})  # type: ignore[arg-type]
    assert not proto.is_keyword(bad)


def test_permanentflags_decide_whether_a_keyword_may_be_stored() -> None:
    assert proto.keyword_allowed(proto.parse_flag_list("(\\Answered \\Seen \\*)"), "$Tracked")
    assert proto.keyword_allowed(proto.parse_flag_list("(\\Seen $tracked)"), "$Tracked")
    assert not proto.keyword_allowed(proto.parse_flag_list("(\\Answered \\Seen)"), "$Tracked")
    assert not proto.keyword_allowed(proto.parse_flag_list("()"), "$Tracked")  # EXAMINE: read-only
    assert not proto.keyword_allowed(None, "$Tracked")


def test_vanished_ranges_are_not_expanded() -> None:
    assert proto.parse_vanished([b"VANISHED (EARLIER) 1:3,7", b"3 EXISTS", b"VANISHED 9:8"]) == [
        range(1, 4),
        range(7, 8),
        range(8, 10),
    ]
    (big,) = proto.parse_vanished([b"VANISHED (EARLIER) 1:4000000000"])
    assert len(big) == 4_000_000_000
    assert proto.parse_vanished([b"VANISHED (EARLIER) x:y", bytearray(b"VANISHED 1")]) == []
