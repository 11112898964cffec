"""imapfixes' to aioimaplib's per-command costs, against upstream's behaviour:
_wait_data answers what FetchCommand.wait_data answers, at every step of a FETCH
response, without rescanning the lines received before; the lazy inactivity timer
times a command out exactly when upstream's would, without a timer per line."""

from __future__ import annotations

import asyncio
import random

import pytest
from aioimaplib import aioimaplib as core

from mailfiler.sources.imapfixes import Command, FetchCommand, _wait_data


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


async def test_a_command_busy_with_data_does_not_time_out_and_an_idle_one_does() -> None:
    loop = asyncio.get_running_loop()
    cmd = FetchCommand("A1", "1:*", "(BODY.PEEK[])", loop=loop, timeout=0.3)
    start = loop.time()
    last = start
    while loop.time() - start < 0.9:  # three timeouts long, data every 0.1 s
        cmd.append_to_resp(b"1 FETCH (UID 1)")
        last = loop.time()
        await asyncio.sleep(0.1)
        assert cmd._exception is None
    with pytest.raises(core.CommandTimeout):
        await cmd.wait()
    assert 0.25 <= loop.time() - last <= 0.6  # about one timeout after the last data


async def test_a_finished_command_never_times_out() -> None:
    loop = asyncio.get_running_loop()
    cmd = Command("NOOP", "A2", loop=loop, timeout=0.1)
    cmd.close(b"OK done", "OK")
    await asyncio.sleep(0.3)
    await cmd.wait()  # no CommandTimeout
    assert cmd.response.result == "OK"
