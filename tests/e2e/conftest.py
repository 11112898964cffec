"""Fixtures for the end-to-end tests: one temp world per test, daemons always killed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import E2EEnv


@pytest.fixture
def env(tmp_path: Path) -> Iterator[E2EEnv]:
    world = E2EEnv(tmp_path)
    try:
        yield world
    finally:
        world.close()
    problems = world.unexpected_problems()
    assert not problems, "the daemon logged errors:\n" + "\n".join(problems)
