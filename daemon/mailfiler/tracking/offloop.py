"""Parse a message for the worker without stopping the event loop.

:func:`parse_message` is pure Python (and C calls that hold the GIL): a 30 MB
attachment takes about half a second, during which an inline parse stops
everything on the loop (pushes, IMAP keepalives, the systemd watchdog,
signals).  A large message is parsed in a thread instead: the thread holds the
GIL, but gives it up every switch interval (5 ms) and between the steps of its
long C calls (``parse.B64_STEP``), so the loop runs meanwhile.  A small one is
parsed inline, where a thread hop would cost more than it saves (pushed mail:
latency counts).

Nothing else differs: the result, and any exception, are the parse's own (an
exception raised in the thread is re-raised here as it was), so the callers'
shunt reasons and code paths are those of an inline parse.
"""

from __future__ import annotations

import asyncio

from mailfiler.tracking.parse import ParsedMessage, parse_message

#: messages up to this size are parsed on the loop.  Measured (2-core machine,
#: tests/mailgen.py mail): a thread hop costs 0.07-0.13 ms, a parse ~0.35 ms for
#: a typical 12-24 KB message (a hop would add a third) and ~2-3 ms at 256 KB
#: (a hop adds < 5 %, and the loop stops no longer than the watchdog and pushes
#: can spare); above, the parse grows ~12 ms per MB, so the loop must not wait.
INLINE_MAX_BYTES = 256 * 1024


async def parse_off_loop(raw: bytes) -> ParsedMessage:
    """``parse_message(raw)``: inline when ``raw`` is small, else in a thread."""
    if len(raw) <= INLINE_MAX_BYTES:
        return parse_message(raw)
    return await asyncio.to_thread(parse_message, raw)


__all__ = ["INLINE_MAX_BYTES", "parse_off_loop"]
