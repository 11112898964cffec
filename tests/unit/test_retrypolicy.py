"""The one retry policy (util/retrypolicy.py): capped, jittered, reset after a healthy period."""

from __future__ import annotations

from mailfiler.util.retrypolicy import JITTER, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def nominal(delay: float, expected: float) -> bool:
    return expected * (1 - JITTER) <= delay <= expected * (1 + JITTER)


def test_doubles_up_to_the_cap_with_jitter() -> None:
    backoff = RetryPolicy(initial=1, max=10, healthy_after=60).backoff(clock=Clock())
    delays = [backoff.failed() for _ in range(7)]
    assert all(nominal(d, e) for d, e in zip(delays, [1, 2, 4, 8], strict=False)), delays
    assert all(8 <= d <= 10 for d in delays[4:]), delays  # capped: never past max
    assert len({round(d, 6) for d in delays[:4]}) == 4


def test_reset_only_after_a_healthy_period() -> None:
    clock = Clock()
    backoff = RetryPolicy(initial=1, max=60, healthy_after=30).backoff(clock=clock)
    for _ in range(4):
        backoff.failed()  # 1, 2, 4, 8: the next would be 16
    # up again, but drops within healthy_after (a flapping server): keeps growing
    backoff.healthy()
    clock.now += 5
    assert nominal(backoff.failed(), 16)
    # up again, healthy long enough: the next outage starts from initial
    backoff.healthy()
    clock.now += 10
    backoff.healthy()  # repeated calls do not move the start of the healthy period
    clock.now += 25
    assert nominal(backoff.failed(), 1)
    assert nominal(backoff.failed(), 2)
