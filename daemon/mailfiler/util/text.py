"""Words for people: counted nouns."""

from __future__ import annotations


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 activity``, ``2 activities``: ``many`` defaults to ``one`` + "s"."""
    return f"{n} {one if n == 1 else (many or one + 's')}"
