"""imapconn._wait_data answers what aioimaplib's FetchCommand.wait_data answers, at every
step of a FETCH response, without rescanning the lines received before."""

from __future__ import annotations

import random

from aioimaplib import aioimaplib as core

from mailfiler.sources.imapconn import _wait_data


def _responses(rng: random.Random) -> list[bytes | bytearray]:
    lines: list[bytes | bytearray] = []
    for n in range(1, rng.randint(2, 30)):
        kind = rng.randrange(4)
        if kind == 0:  # the usual: a literal, then the closing parenthesis
            lines += [
                b"%d FETCH (UID %d BODY[] {5}" % (n, n),
                bytearray(b"a(b)c" if rng.random() < 0.5 else b"(((("),
                b")",
            ]
        elif kind == 1:  # no literal
            lines.append(b"%d FETCH (UID %d RFC822.SIZE 10 FLAGS (\\Seen))" % (n, n))
        elif kind == 2:  # a second literal in the same response
            lines += [
                b"%d FETCH (UID %d BODY[HEADER] {3}" % (n, n),
                bytearray(b")))"),
                b" BODY[TEXT] {2}",
                bytearray(b"(("),
                b")",
            ]
        else:  # an unsolicited line between responses
            lines.append(b"%d EXPUNGE" % n)
    return lines


async def test_wait_data_matches_upstream_after_every_line() -> None:
    rng = random.Random(7)
    for _ in range(200):
        ours = core.FetchCommand("A1", "1:*", "(BODY.PEEK[])")
        theirs = core.FetchCommand("A2", "1:*", "(BODY.PEEK[])")
        for line in _responses(rng):
            ours.append_to_resp(line)
            theirs.append_to_resp(line)
            assert _wait_data(ours) == theirs.wait_data()
            # asked twice with nothing new: the same answer
            assert _wait_data(ours) == theirs.wait_data()


async def test_other_commands_keep_their_own_answer() -> None:
    cmd = core.Command("SEARCH", "A1", "ALL")
    cmd.begin_literal_data(10)
    assert _wait_data(cmd) is True and cmd.wait_data() is True
