"""The earlier home of :mod:`mailfiler.sources.sieve.sievewrite`, which moved below the backend registry
so that a mailbox backend can bring its own inbox rules; kept for its importers."""

from mailfiler.sources.sieve.sievewrite import (
    MARKER,
    OWN_PREFIX,
    IncludeEdit,
    add_include,
    include_line,
    is_ours,
    main_script,
    route_test,
    rule_block,
    rule_blocks,
    script_text,
)

__all__ = [
    "MARKER",
    "OWN_PREFIX",
    "IncludeEdit",
    "add_include",
    "include_line",
    "is_ours",
    "main_script",
    "route_test",
    "rule_block",
    "rule_blocks",
    "script_text",
]
