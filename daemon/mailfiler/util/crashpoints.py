"""Deterministic crash injection for the kill-at-every-commit tests.

``MAILFILER_CRASH_AT=after_commit:17`` makes the process SIGKILL itself the
17th time it passes the ``after_commit`` point (mbsync's ``-Ts``).  Unset,
each call costs one dict lookup."""

from __future__ import annotations

import os
import signal

_target: tuple[str, int] | None = None
_counts: dict[str, int] = {}


def _load() -> None:
    global _target
    spec = os.environ.get("MAILFILER_CRASH_AT", "")
    if spec:
        name, _, n = spec.partition(":")
        _target = (name, int(n or "1"))


_load()


def point(name: str) -> None:
    if _target is None or _target[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
