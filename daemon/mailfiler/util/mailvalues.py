"""Values of a message that every layer may hold: an address and text made
storable.  Parsing (:mod:`mailfiler.tracking.parse`) makes them and the rules'
:class:`~mailfiler.rules.facts.Facts` carry them: a leaf, so that rules need not
import tracking."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Address:
    address: str
    name: str = ""


def clean_text(value: str) -> str:
    """Make a string storable anywhere: no lone surrogates (8-bit header
    bytes decode to those), no NUL (PostgreSQL text rejects it)."""
    if not value:
        return ""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value.replace("\x00", "")
