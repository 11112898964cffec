"""One retry policy for every retry loop: capped, jittered, and reset once the
thing retried has been healthy for a while.

A loop holds a :class:`Backoff` (from its :class:`RetryPolicy`, per mailbox
``retry:`` in the config) and tells it what happened:

* :meth:`Backoff.healthy` when the connection works again (logged in, a sync
  went through).  Calling it again while healthy changes nothing;
* :meth:`Backoff.failed` on each failure: the seconds to wait before the next
  attempt.  The delays double from ``initial`` up to ``max``, each one drawn
  within +-20 % so that many mailboxes do not retry in step; once the last
  :meth:`healthy` lies ``healthy_after`` seconds back, the next failure starts
  from ``initial`` again.  A server that stays down, or that accepts a login
  and drops it at once (flapping), keeps the delay growing.

:func:`wait` sleeps a delay unless a stop event comes first.  The policy knows
nothing of what is retried: the mailbox supervisor (service/daemon.py) and the
sync loop (sync/runner.py) use it alike, and so should any new backend.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

#: each delay is drawn within this fraction either side of its nominal value
JITTER = 0.2


@dataclass(frozen=True)
class RetryPolicy:
    #: seconds before the first retry
    initial: float = 1.0
    #: no delay is longer than this
    max: float = 60.0
    #: a connection healthy this long has recovered: the next failure waits ``initial`` again
    healthy_after: float = 60.0
    factor: float = 2.0

    def backoff(self, *, clock: Callable[[], float] = time.monotonic) -> Backoff:
        return Backoff(self, clock=clock)


class Backoff:
    """The state of one retry loop under a :class:`RetryPolicy`."""

    def __init__(self, policy: RetryPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._next = policy.initial
        self._healthy_since: float | None = None
        #: failures since the last reset
        self.failures = 0

    def healthy(self) -> None:
        """It works (again).  Counts from the first call after a failure."""
        if self._healthy_since is None:
            self._healthy_since = self._clock()

    def failed(self) -> float:
        """A failure: the seconds to wait before trying again."""
        p = self.policy
        if self._healthy_since is not None and self._clock() - self._healthy_since >= p.healthy_after:
            self.reset()
        self._healthy_since = None
        nominal = self._next
        self._next = min(nominal * p.factor, p.max)
        self.failures += 1
        return min(p.max, nominal * random.uniform(1 - JITTER, 1 + JITTER))

    def reset(self) -> None:
        self._next = self.policy.initial
        self.failures = 0


async def wait(delay: float, stop: asyncio.Event | None = None) -> bool:
    """Sleep ``delay`` seconds; True when ``stop`` was set first (or already)."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay)
    except TimeoutError:
        return False
    return True


__all__ = ["JITTER", "Backoff", "RetryPolicy", "wait"]
