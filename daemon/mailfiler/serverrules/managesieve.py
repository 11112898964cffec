"""The earlier home of :mod:`mailfiler.sources.sieve.managesieve`, which moved below the backend registry
so that a mailbox backend can bring its own inbox rules; kept for its importers."""

from mailfiler.sources.sieve.managesieve import (
    DEFAULT_PORT,
    ManageSieve,
    SieveNo,
    SieveSettings,
)

__all__ = ["DEFAULT_PORT", "ManageSieve", "SieveNo", "SieveSettings"]
