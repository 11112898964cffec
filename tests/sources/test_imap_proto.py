"""IMAP wire helpers and the patched aioimaplib protocol, without a server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aioimaplib import aioimaplib as core

from mailfiler.sources import imapproto as proto
from mailfiler.sources.imapfixes import _Protocol
from mailfiler.sources.imaplink import login_failure_reason
from tests.mailgen import imap_utf7_encode

# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "wire"),
    [
        ("INBOX", "INBOX"),
        ("inbox", "INBOX"),
        ("Kunder/Åkesson AB", "Kunder/&AMU-kesson AB"),
        ("Projekt & Co/2024", "Projekt &- Co/2024"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("日本語", "&ZeVnLIqe-"),
        ("Post 📬", "Post &2D3c7A-"),  # a surrogate pair in UTF-16
    ],
)
def test_folder_names_are_modified_utf7_and_round_trip(folder: str, wire: str) -> None:
    assert proto.folder_to_wire(folder, "/") == wire
    assert folder.upper() == "INBOX" or imap_utf7_encode(folder) == wire  # the tests' own encoder agrees
    assert proto.folder_from_wire(wire, "/") == ("INBOX" if folder.upper() == "INBOX" else folder)


def test_quoting_escapes_quotes_and_backslashes() -> None:
    assert proto.quoted_mailbox('Pro "q" x', "/") == '"Pro \\"q\\" x"'
    assert proto.quoted_mailbox("Back\\slash", "/") == '"Back\\\\slash"'
    assert proto.quoted_mailbox("My Folder", "/") == '"My Folder"'


def test_another_separator_is_used_on_the_wire() -> None:
    assert proto.folder_to_wire("Kunder/Åkesson AB", ".") == "Kunder.&AMU-kesson AB"
    assert proto.folder_from_wire("Kunder.&AMU-kesson AB", ".") == "Kunder/Åkesson AB"
    with pytest.raises(ValueError, match="separator"):
        proto.folder_to_wire("v1.2/notes", ".")


def test_a_name_that_is_not_modified_utf7_is_kept() -> None:
    # Dovecot's NOTIFY STATUS pushes name folders in UTF-8
    assert proto.folder_from_wire("Projekt & Co/2024", "/") == "Projekt & Co/2024"


# -- responses ----------------------------------------------------------------------------


def test_join_literals_undoes_aioimaplibs_split() -> None:
    lines = [
        b"1 FETCH (UID 7 BODY[] {5}",
        bytearray(b"hello"),
        b" FLAGS (\\Seen))",
        b"STATUS {18}",
        bytearray("Kunder/Åkesson AB".encode()),
        b" (MESSAGES 1 UIDNEXT 2)",
        b'(\\HasNoChildren) "/" {3}',
        bytearray(b"abc"),
        b'(\\HasNoChildren) "/" INBOX',
    ]
    assert proto.join_literals(lines) == [
        b"1 FETCH (UID 7 BODY[] {5}\r\nhello FLAGS (\\Seen))",
        "STATUS {18}\r\nKunder/Åkesson AB (MESSAGES 1 UIDNEXT 2)".encode(),
        b'(\\HasNoChildren) "/" {3}\r\nabc',
        b'(\\HasNoChildren) "/" INBOX',
    ]


def test_parse_fetch_with_sections_literals_and_nil() -> None:
    seq, data = proto.parse_fetch(
        b"3 FETCH (UID 9 RFC822.SIZE 42 BODY[HEADER.FIELDS (MESSAGE-ID DATE)] {4}\r\nab\r\n "
        b'FLAGS (\\Seen $Tracked) X-GM-LABELS NIL ENVELOPE ("a \\"b\\"" NIL))'
    )
    assert seq == 3
    assert proto.fetch_uid(data) == 9
    assert data["RFC822.SIZE"] == b"42"
    assert data["BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"] == b"ab\r\n"
    assert data["FLAGS"] == [b"\\Seen", b"$Tracked"]
    assert data["X-GM-LABELS"] is None
    assert data["ENVELOPE"] == [b'a "b"', None]
    _, partial = proto.parse_fetch(b"1 FETCH (UID 1 BODY[]<0> {3}\r\nabc)")
    assert proto.body_of(partial) == b"abc"
    # an empty message is empty; NIL (Dovecot, for a message expunged meanwhile) is gone
    assert proto.body_of(proto.parse_fetch(b"3 FETCH (UID 9 BODY[] {0}\r\n)")[1]) == b""
    assert proto.body_of(proto.parse_fetch(b"3 FETCH (UID 9 BODY[] NIL)")[1]) is None


@pytest.mark.parametrize("line", [b"1 (FETCH) (UID 1)", b"1 NIL (UID 1)", b"1 STORE (UID 1)", b"1 FETCH UID"])
def test_parse_fetch_refuses_a_reply_that_is_not_a_fetch(line: bytes) -> None:
    # a list where the word FETCH goes raised AttributeError before: a bad reply is a ParseError
    with pytest.raises(proto.ParseError):
        proto.parse_fetch(line)


def _tokenized_fetch(line: bytes) -> tuple[int, dict]:
    tokens = proto.tokenize(line)
    items = tokens[2]
    return int(tokens[0]), {proto.as_str(items[i]).upper(): items[i + 1] for i in range(0, len(items) - 1, 2)}


_FAST = [
    b"1 FETCH (UID 7 RFC822.SIZE 1234)",
    b"12 FETCH (UID 7 BODY[] {5}\r\nab)cd)",
    b"3 FETCH (UID 9 BODY[] {0}\r\n)",
    b"3 FETCH (UID 9 BODY[] NIL)",
    b"3 FETCH (uid 9 body[]<0> {3}\r\n{1})",
    b"4 FETCH (BODY[] {4}\r\n(((( UID 10)",
]
_DECLINED = [
    b"5 FETCH (UID 11 MODSEQ (12345))",  # lists, quoted strings: the tokenizer's
    b"5 FETCH (UID 11 FLAGS (\\Seen))",
    b'6 FETCH (UID 12 X-NAME "quoted")',
    b"7 FETCH (UID 13 BODY[HEADER.FIELDS (MESSAGE-ID)] {2}\r\nab)",
    b"8 FETCH (UID 14 BODY[] ~{3}\r\nabc)",
    b"9 FETCH (UID 15 BODY[] {3}\r\nabc) trailing",
    b"9 FETCH (UID 15  RFC822.SIZE 3)",
    b"9 FETCH (UID 15 BODY[] {30}\r\nabc)",  # a literal longer than the line
]


@pytest.mark.parametrize("line", _FAST + _DECLINED)
def test_fetch_items_read_fast_are_read_as_the_tokenizer_reads_them(line: bytes) -> None:
    """The regular-expression path for a scan's FETCH shapes (UID, RFC822.SIZE, BODY[])
    answers exactly as the tokenizer, and declines (None) anything else."""
    fast = proto._fetch_fast(line)
    if line in _DECLINED:
        assert fast is None
        with contextlib.suppress(proto.ParseError, IndexError):
            assert proto.parse_fetch(line) == _tokenized_fetch(line)
    else:
        assert fast is not None and fast == _tokenized_fetch(line) == proto.parse_fetch(line)


def test_parse_list_and_status() -> None:
    entry = proto.parse_list(b'(\\Noselect \\HasChildren) "/" Kunder')
    assert (entry.name, entry.separator, entry.selectable) == ("Kunder", "/", False)
    entry = proto.parse_list(b'(\\HasNoChildren) "/" "Pro \\"q\\" x"')
    assert (entry.name, entry.selectable) == ('Pro "q" x', True)
    assert proto.parse_list(b"(\\NonExistent) NIL Foo").separator is None
    name, values = proto.parse_status(b'"Kunder/&AMU-kesson AB" (MESSAGES 3 UIDNEXT 9 UIDVALIDITY 77)')
    assert name == "Kunder/&AMU-kesson AB"
    assert values == {"MESSAGES": 3, "UIDNEXT": 9, "UIDVALIDITY": 77}


def test_parse_search_plain_and_esearch() -> None:
    assert proto.parse_search([b"1 2 3 10"]) == {1, 2, 3, 10}
    assert proto.parse_search([b""]) == set()
    assert proto.parse_search([b'(TAG "A1") UID ALL 1:3,7,9:10'], esearch=True) == {1, 2, 3, 7, 9, 10}
    assert proto.parse_search([b'(TAG "A1") UID'], esearch=True) == set()


def test_response_codes_and_counts() -> None:
    lines = [b"FLAGS (\\Seen)", b"5 EXISTS", b"OK [UIDVALIDITY 123] ok", b"OK [UIDNEXT 6] next", b"[READ-ONLY] done"]
    assert proto.response_codes(lines) == {"UIDVALIDITY": "123", "UIDNEXT": "6", "READ-ONLY": ""}
    assert proto.untagged_number(lines, b"EXISTS") == 5


def test_uid_sets_and_batches() -> None:
    assert proto.uid_set([5, 1, 2, 3, 9, 10]) == "1:3,5,9:10"
    assert [len(b) for b in proto.batches(list(range(1, 1001)))] == [400, 400, 200]
    assert list(proto.parse_uid_set("4:2,8")) == [2, 3, 4, 8]


def test_source_ids() -> None:
    assert proto.make_source_id(77, 5) == "77:5"
    assert proto.split_source_id("77:5") == (77, 5)
    assert proto.split_source_id("1700000000.M1P2Q3.host") is None


# -- the patched protocol ----------------------------------------------------------------


def _protocol(cls: type[core.IMAP4ClientProtocol]) -> core.IMAP4ClientProtocol:
    protocol = cls(asyncio.get_running_loop())
    protocol.state = core.SELECTED
    return protocol


async def test_a_burst_of_thousands_of_lines_does_not_recurse() -> None:
    """aioimaplib 2.0.3 recurses once per line (issue 118): 5,000 EXPUNGE lines in
    one read crash it.  The replacement loop takes them all.  (If the upstream
    handler stops crashing here, the override may no longer be needed.)"""
    burst = b"".join(b"* %d EXPUNGE\r\n" % n for n in range(5000, 0, -1))

    upstream = _protocol(core.IMAP4ClientProtocol)
    upstream.pending_sync_command = core.IdleCommand("A1", upstream.idle_queue)
    with pytest.raises(RecursionError):
        upstream._handle_responses(burst, upstream._handle_line)

    ours = _protocol(_Protocol)
    ours.pending_sync_command = core.IdleCommand("A1", ours.idle_queue)
    ours.data_received(burst)
    pushed = ours.idle_queue.get_nowait()
    assert len(pushed) == 5000
    assert pushed[0] == b"5000 EXPUNGE"


async def test_literals_split_across_reads_still_arrive_whole() -> None:
    ours = _protocol(_Protocol)
    ours.pending_sync_command = core.IdleCommand("A1", ours.idle_queue)
    data = "* STATUS {18}\r\nKunder/Åkesson AB (MESSAGES 1 UIDNEXT 2)\r\n".encode()
    for i in range(0, len(data), 7):
        ours.data_received(data[i : i + 7])
    lines = []
    while not ours.idle_queue.empty():
        lines.extend(ours.idle_queue.get_nowait())
    assert proto.join_literals(lines) == ["STATUS {18}\r\nKunder/Åkesson AB (MESSAGES 1 UIDNEXT 2)".encode()]


async def test_only_the_leading_star_is_stripped() -> None:
    ours = _protocol(_Protocol)
    ours.keep_unsolicited = True
    ours.data_received(b'* STATUS "a * b" (MESSAGES 1)\r\n')
    assert ours.idle_queue.get_nowait() == [b'STATUS "a * b" (MESSAGES 1)']


async def test_unsolicited_responses_are_dropped_unless_kept() -> None:
    ours = _protocol(_Protocol)
    ours.data_received(b"* 3 EXISTS\r\n")
    assert ours.idle_queue.empty()


@pytest.mark.parametrize(
    ("result", "text", "reason"),
    [
        ("NO", "[AUTHENTICATIONFAILED] Authentication failed.", "auth-failed"),
        ("NO", "Login failed", "auth-failed"),
        ("NO", "[LIMIT] Maximum number of connections from user+IP exceeded", "too-many-connections"),
        ("NO", "[UNAVAILABLE] Temporary authentication failure", "server-unavailable"),
        ("BAD", "Error in IMAP command", "server-unavailable"),
    ],
)
def test_login_failure_reasons(result: str, text: str, reason: str) -> None:
    assert login_failure_reason(result, text) == reason
