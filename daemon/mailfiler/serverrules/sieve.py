"""The earlier home of :mod:`mailfiler.sources.sieve.backend`, which moved below the backend registry
so that a mailbox backend can bring its own inbox rules; kept for its importers."""

from mailfiler.sources.sieve.backend import (
    MAIN_SCRIPT,
    SieveBackend,
)

__all__ = ["MAIN_SCRIPT", "SieveBackend"]
