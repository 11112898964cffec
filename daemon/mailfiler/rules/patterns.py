"""The rule language's patterns (regular expressions, folder patterns, domains,
sizes): they live in :mod:`mailfiler.util.patterns`, below the config schema,
which checks folder patterns with them (rules sit above config)."""

from mailfiler.util.patterns import (
    BODY_CAP,
    CAPTURE_NAME,
    HEADER_CAP,
    FolderPattern,
    PatternError,
    Regex,
    compile_folder,
    compile_regex,
    parse_domain,
    parse_size,
    safe_text,
)

__all__ = [
    "BODY_CAP",
    "CAPTURE_NAME",
    "HEADER_CAP",
    "FolderPattern",
    "PatternError",
    "Regex",
    "compile_folder",
    "compile_regex",
    "parse_domain",
    "parse_size",
    "safe_text",
]
