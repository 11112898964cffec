"""The earlier home of :mod:`mailfiler.sources.sieve.sieveread`, which moved below the backend registry
so that a mailbox backend can bring its own inbox rules; kept for its importers."""

from mailfiler.sources.sieve.sieveread import (
    action,
    condition,
    includes,
    read_rules,
)

__all__ = ["action", "condition", "includes", "read_rules"]
