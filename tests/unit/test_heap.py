"""util/heap.py: the daemon fixes glibc's malloc thresholds (why: the module's docstring)."""

from __future__ import annotations

import platform

import pytest

from mailfiler.util.heap import fix_malloc_thresholds


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_thresholds_are_set_on_glibc() -> None:
    assert fix_malloc_thresholds() is True
