"""Rule regexes run in linear time, whatever the pattern and the mail."""

from __future__ import annotations

import re
import time
from pathlib import Path

from tests.rules.helpers import facts, one_rule

CATASTROPHIC = "(a+)+$"


def test_catastrophic_pattern_on_a_long_subject_is_fast(tmp_path: Path) -> None:
    # With a backtracking engine, (a+)+$ against a run of a's ending in a
    # non-match tries every way of splitting the run: 2**n steps.
    assert _backtracking_steps_grow() > 8  # doubling per character, shown on tiny input only
    rs = one_rule(tmp_path, f"{{subject: '{CATASTROPHIC}', body: '{CATASTROPHIC}'}}")
    subject = "a" * 100_000 + "!"
    started = time.perf_counter()
    d = rs.evaluate(facts(subject=subject, body=subject))
    elapsed = time.perf_counter() - started
    assert not d.trace[0].matched
    assert elapsed < 0.5, f"evaluation took {elapsed:.3f} s"


def test_many_headers_and_a_huge_body_stay_bounded(tmp_path: Path) -> None:
    rs = one_rule(tmp_path, "{header: {X-Junk: '(x+x+)+y'}, body: '(.*a){20}'}")
    headers = tuple(("X-Junk", "x" * 50_000) for _ in range(20))
    started = time.perf_counter()
    rs.evaluate(facts(headers=headers, body="a" * 5_000_000))
    assert time.perf_counter() - started < 0.5


def _backtracking_steps_grow() -> float:
    """How much slower Python's re gets per extra character: about 2x."""

    def timed(n: int) -> float:
        pattern = re.compile(CATASTROPHIC)
        best = float("inf")
        for _ in range(3):  # the best of three, against a noisy machine
            started = time.perf_counter()
            pattern.match("a" * n + "!")
            best = min(best, time.perf_counter() - started)
        return best

    return timed(20) / max(timed(16), 1e-9)
