"""The earlier home of :mod:`mailfiler.sources.sieve.sieveparse`, which moved below the backend registry
so that a mailbox backend can bring its own inbox rules; kept for its importers."""

from mailfiler.sources.sieve.sieveparse import (
    Arg,
    Command,
    SieveSyntaxError,
    Tag,
    Test,
    parse,
    quote,
    string_list,
)

__all__ = ["Arg", "Command", "SieveSyntaxError", "Tag", "Test", "parse", "quote", "string_list"]
