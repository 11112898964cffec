"""tracking/offloop.parse_off_loop: small mail parsed inline, large mail in a
thread, the same result and the same exceptions as parse_message either way."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

from mailfiler.errors import NotAMessage
from mailfiler.tracking import offloop
from mailfiler.tracking.parse import ParsedMessage, parse_message
from tests.mailgen import _nested_multipart, large_attachment_message, realistic_message


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread of each parse_off_loop parse."""
    seen: list[int] = []

    def parse(raw: bytes) -> ParsedMessage:
        seen.append(threading.get_ident())
        return parse_message(raw)

    monkeypatch.setattr(offloop, "parse_message", parse)
    return seen


async def test_small_mail_is_parsed_inline(threads: list[int]) -> None:
    raw = realistic_message(3)
    assert len(raw) <= offloop.INLINE_MAX_BYTES
    parsed = await offloop.parse_off_loop(raw)
    assert threads == [threading.get_ident()]
    assert dataclasses.asdict(parsed) == dataclasses.asdict(parse_message(raw))


async def test_large_mail_is_parsed_in_a_thread(threads: list[int]) -> None:
    raw = large_attachment_message(offloop.INLINE_MAX_BYTES)
    assert len(raw) > offloop.INLINE_MAX_BYTES
    parsed = await offloop.parse_off_loop(raw)
    assert len(threads) == 1 and threads[0] != threading.get_ident()
    assert dataclasses.asdict(parsed) == dataclasses.asdict(parse_message(raw))


async def test_the_loop_runs_while_a_large_message_is_parsed() -> None:
    raw = large_attachment_message(8 * 1024 * 1024)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    t0, before = time.perf_counter(), ticks
    await offloop.parse_off_loop(raw)
    elapsed, during = time.perf_counter() - t0, ticks - before
    ticker.cancel()
    # inline, the ticker would not run at all until the parse is over
    assert during >= 3, (during, elapsed)


def _padded(raw: bytes) -> bytes:
    """``raw`` made larger than INLINE_MAX_BYTES by a header (so it is parsed in a thread)."""
    return b"X-Padding: " + b"p" * (offloop.INLINE_MAX_BYTES + 1) + b"\n" + raw


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # EmptyMessage, inline
        b"no header block at all\n" * 10,  # NotAMessage, inline
        b"no header block at all\n" * 20000,  # NotAMessage, in a thread
    ],
    ids=["empty", "not-a-message", "large-not-a-message"],
)
async def test_errors_are_the_parses_own(raw: bytes) -> None:
    with pytest.raises(Exception) as inline:
        parse_message(raw)
    with pytest.raises(type(inline.value)) as off:
        await offloop.parse_off_loop(raw)
    assert str(off.value) == str(inline.value)
    assert isinstance(off.value, NotAMessage) or not raw


async def test_mime_nested_too_deeply_raises_recursion_error_in_the_thread_too() -> None:
    """The worker shunts a RecursionError as "not-parseable"; in a thread it must still
    be a RecursionError (not a crash of a thread with a smaller stack)."""
    raw = _padded(b"From: a@example.com\nMessage-ID: <deep@x>\nMIME-Version: 1.0\n" + _nested_multipart(3000))
    assert len(raw) > offloop.INLINE_MAX_BYTES
    with pytest.raises(RecursionError):
        parse_message(raw)
    with pytest.raises(RecursionError):
        await offloop.parse_off_loop(raw)
