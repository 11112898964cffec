"""Regular expressions, folder patterns, domains and sizes as rules write them.

A leaf below config and rules (:mod:`mailfiler.rules.patterns` re-exports it):
the config schema checks its folder patterns with the same code.

Regular expressions from rules run against untrusted mail, so they are
compiled with RE2 (google-re2): matching takes time linear in the input
whatever the pattern, where Python's backtracking ``re`` can take
exponential time on patterns such as ``(a+)+$``.  The price is that RE2
has no backreferences and no lookaround; such patterns are rejected when
the rules are loaded.  Every pattern is case-insensitive unless it says
``(?-i)``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import re2

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

#: the body a regex sees: the first 64 KiB of text (a case number is near the top)
BODY_CAP = 64 * 1024
#: a header value a regex sees
HEADER_CAP = 8 * 1024
#: a capture name: what a template can say between braces
CAPTURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PatternError(ValueError):
    """A pattern a rule cannot use; ``str()`` is the message for the admin."""


def _options(case_sensitive: bool = False) -> re2.Options:
    opts = re2.Options()
    opts.case_sensitive = case_sensitive
    opts.log_errors = False  # RE2 would print every rejected pattern to stderr
    return opts


_OPTIONS = _options()

# RE2's messages name the construct; say what to do instead.
_HINTS = (
    ("invalid escape sequence: \\", " (backreferences such as \\1 are not supported: RE2 matches in linear time)"),
    ("invalid perl operator: (?=", " (lookahead is not supported: RE2 matches in linear time)"),
    ("invalid perl operator: (?!", " (negative lookahead is not supported: use not: in the condition)"),
    ("invalid perl operator: (?<", " (lookbehind is not supported: RE2 matches in linear time)"),
    ("invalid escape sequence: \\Z", " (write \\z for the end of the text)"),
)


def safe_text(text: str) -> str:
    """*text* encodable as UTF-8: RE2 needs that, and a lone surrogate (an
    undecodable 8-bit byte) would make it raise."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


@dataclass(frozen=True)
class Regex:
    """A compiled rule regex and the capture names it can produce."""

    source: str
    names: frozenset[str]
    _compiled: object

    def search(self, text: str) -> dict[str, str] | None:
        """Named captures of the first match (``""`` for a group that did not
        take part), or None.  *text* must already be :func:`safe_text`."""
        m = self._compiled.search(text)  # type: ignore[attr-defined]
        if m is None:
            return None
        return {k: v or "" for k, v in m.groupdict().items()}


def compile_regex(source: str) -> Regex:
    try:
        compiled = re2.compile(source, _OPTIONS)
    except re2.error as exc:
        raw = exc.args[0] if exc.args else "invalid pattern"
        msg = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        hint = next((h for start, h in reversed(_HINTS) if msg.startswith(start)), "")
        raise PatternError(f"invalid regular expression '{source}': {msg}{hint}") from None
    except (TypeError, ValueError) as exc:  # e.g. a NUL or a surrogate in the pattern
        raise PatternError(f"invalid regular expression '{source}': {exc}") from None
    names = frozenset(compiled.groupindex)
    for name in names:
        if not CAPTURE_NAME.match(name):
            raise PatternError(f"capture name {name!r} must be letters, digits and _ (not starting with a digit)")
    return Regex(source, names, compiled)


# --- folder patterns -------------------------------------------------------

_SEGMENT_PART = re.compile(r"\{([^{}]*)\}|\*|[^{}*]+|[{}]")


@dataclass(frozen=True)
class FolderPattern:
    """``Clients/{account}``, ``Private/**``, ``*/Archive``: matched against a
    folder path written with ``/``, case-insensitively, after Unicode NFC
    normalisation (macOS writes folder names decomposed)."""

    source: str
    names: frozenset[str]
    _compiled: object

    def match(self, folder: str) -> dict[str, str] | None:
        m = self._compiled.fullmatch(unicodedata.normalize("NFC", folder))  # type: ignore[attr-defined]
        if m is None:
            return None
        return {k: v or "" for k, v in m.groupdict().items()}


def compile_folder(source: str) -> FolderPattern:
    """Compile a folder pattern; raise :class:`PatternError`.

    A segment is literal text, ``*`` (any one segment, or any text inside a
    segment: ``Client*``), ``**`` (any number of segments, none included:
    only as a whole segment) and ``{name}`` (captures the text of a segment,
    or of part of it: ``CAS-{number}``).
    """
    text = unicodedata.normalize("NFC", source.strip())
    if not text:
        raise PatternError("folder pattern must not be empty")
    if text.startswith("/") or text.endswith("/") or "//" in text:
        raise PatternError(f"folder pattern {source!r} must be a relative path like Clients/{{account}}")
    names: list[str] = []
    out: list[str] = []
    segments = text.split("/")
    for i, seg in enumerate(segments):
        if seg == "**":
            # zero or more whole segments, with the "/" that joins them
            if len(segments) == 1:
                out.append(r"(?:.*)")
            elif i == 0:
                out.append(r"(?:[^/]+/)*")
            else:
                out.append(r"(?:/[^/]+)*")
            continue
        if "**" in seg:
            raise PatternError(f"folder pattern {source!r}: ** must be a whole segment, as in Private/**")
        # a leading ** already ends with its "/"; a later one starts with it
        piece = "" if i == 0 or (i == 1 and segments[0] == "**") else "/"
        for m in _SEGMENT_PART.finditer(seg):
            token = m.group(0)
            if m.group(1) is not None:
                name = m.group(1).strip()
                if not CAPTURE_NAME.match(name):
                    raise PatternError(
                        f"folder pattern {source!r}: {{{m.group(1)}}} must name a capture "
                        "(letters, digits and _, not starting with a digit)"
                    )
                if name in names:
                    raise PatternError(f"folder pattern {source!r}: {{{name}}} is captured twice")
                names.append(name)
                piece += f"(?P<{name}>[^/]+)"
            elif token == "*":
                piece += "[^/]+" if seg == "*" else "[^/]*"
            elif token in "{}":
                raise PatternError(f"folder pattern {source!r}: unbalanced {token!r} (a capture is {{name}})")
            else:
                piece += re.escape(token)
        out.append(piece)
    try:
        compiled = re2.compile("".join(out), _OPTIONS)
    except re2.error as exc:  # not expected: every piece above is valid RE2
        raise PatternError(f"folder pattern {source!r} cannot be compiled: {exc}") from None
    return FolderPattern(source, frozenset(names), compiled)


# --- domains and sizes -------------------------------------------------------

_DOMAIN = re.compile(r"^[^\s@/*]+$")


def parse_domain(value: str) -> tuple[str, bool]:
    """(domain, subdomains) for a domain entry.

    ``contoso.com`` is that domain only; ``.contoso.com`` and
    ``*.contoso.com`` are its subdomains at any depth (not contoso.com
    itself: list both to match both).  A leading ``@`` is allowed, as in a
    never-track list.
    """
    text = value.strip().lower().removeprefix("@")
    sub = False
    if text.startswith("*."):
        text, sub = text[2:], True
    elif text.startswith("."):
        text, sub = text[1:], True
    text = text.rstrip(".")
    if not text or not _DOMAIN.match(text) or ".." in text or text.startswith("."):
        raise PatternError(f"{value!r} is not a domain (write contoso.com, or '*.contoso.com' for its subdomains)")
    return text, sub


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmg])(?:i?b)?|(b))?\s*$", re.IGNORECASE)
_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: object) -> int:
    """Bytes from ``1000``, ``"512KB"``, ``"10MB"``, ``"1.5 GiB"``.

    K, M and G are powers of 1024 whether written KB or KiB, as mail servers
    (Postfix, Dovecot) count them.
    """
    if isinstance(value, bool):
        raise PatternError(f"expected a size in bytes or a string such as '10MB', found {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise PatternError(f"a size must not be negative, found {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            number = float(m.group(1))
            return int(number * _UNITS.get((m.group(2) or "").lower(), 1))
    raise PatternError(f"expected a size in bytes or a string such as '10MB', found {value!r}")
