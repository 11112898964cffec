"""Header values as ``policy.default`` gives them, at a fraction of its cost.

Split from :mod:`~mailfiler.tracking.parse`, which parses with :data:`POLICY`
and reads addresses with :func:`address_pairs`.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from email import _encoded_words as _ew  # type: ignore[attr-defined]  # private: not in the stubs
from email._policybase import Compat32
from email.utils import _has_surrogates, _sanitize  # type: ignore[attr-defined]  # private: not in the stubs

#
# The message is parsed with compat32 (header values kept as raw strings:
# cheap), but every value read back through Message.get() and the methods
# built on it (content type, boundary, filename, charset, transfer encoding)
# is the string policy.default would give: str() of its header object.  So
# the MIME tree, types, filenames, subjects and ids are exactly what they
# were when this module parsed with policy.default.  The header registry
# costs 30-250 us a header; values of the common simple shapes are rendered
# here directly (tests/unit/test_parse_equivalence.py checks them against the
# registry), anything else still goes through the registry.

_DEFAULT = email.policy.default
_LINESEP = re.compile(r"\r|\n")  # what policy.default removes from a folded value
_PRINTABLE = re.compile(r"[\t\x20-\x7e]*")
#: MIME token without the characters RFC 2231 gives a meaning ('*', "'", '%')
_TOKEN = r"[A-Za-z0-9!#$&+.^_`{|}~-]+"
#: quoted-string content without quotes, escapes, encoded words or control characters
_QCONTENT = r"(?:[ !#-<>-\[\]-~]|=(?!\?))+"
_MIME_HEAD = {
    "content-type": re.compile(rf"{_TOKEN}/{_TOKEN}[ \t]*"),
    "content-disposition": re.compile(rf"{_TOKEN}[ \t]*"),
    "content-transfer-encoding": re.compile(rf"{_TOKEN}[ \t]*"),
}
_MIME_PARAM = re.compile(rf'[ \t]*;[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:({_TOKEN})|"({_QCONTENT})")[ \t]*')
_MIME_END = re.compile(r"[ \t]*;?[ \t]*")
_MIME_CACHE: dict[tuple[str, str], str] = {}
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=^_`{|}~-]+"  # atext without '?': no encoded word can start
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_ADDR_SPEC = rf"{_ATEXT}(?:\.{_ATEXT})*@{_DOMAIN}"
_SIMPLE_MSGID = re.compile(rf"<{_ADDR_SPEC}>[ \t]*")
#: the registry ends an encoded word at its first '?=' unless '=XX' (hex) follows
#: the encoding's '?': text starting with any other '=' is not decoded there
_EW = r"=\?[A-Za-z0-9_-]+\?[bBqQ]\?(?:=[0-9A-Fa-f]{2}|(?!=))[!->@-~]*\?="
_EW_RE = re.compile(_EW)
_WSP_SPLIT = re.compile(r"([ \t]+)")
#: display-name words: atom (no '.', '=' or '?'), plain quoted string, encoded word
_WORD = rf"""(?:[A-Za-z0-9!#$%&'*+/^_`{{|}}~-]+|"(?:[ !#-<>-\[\]-~])+"|{_EW})"""
_WORD_RE = re.compile(_WORD)
_MAILBOX = re.compile(
    rf"[ \t]*(?:(?P<spec>{_ADDR_SPEC})|(?P<phrase>{_WORD}(?:[ \t]+{_WORD})*)?[ \t]*<(?P<aspec>{_ADDR_SPEC})>)[ \t]*"
)


def _unfold(value: str) -> str:
    return _LINESEP.sub("", value) if ("\n" in value or "\r" in value) else value


def _decoded_ew(word: str) -> str | None:
    """The text of an encoded word, or None if the registry would see a defect in it."""
    try:
        text, _charset, _lang, defects = _ew.decode(word)
    except (ValueError, KeyError, LookupError, UnicodeError):
        return None
    return None if defects or _has_surrogates(text) else text


def _mime_str(lname: str, value: str) -> str | None:
    # the registry keeps the type verbatim and re-renders the parameters as
    # '; name="value"'
    head = _MIME_HEAD[lname].match(value)
    if head is None:
        return None
    pos = head.end()
    if pos == len(value):
        return value
    params: list[str] = []
    seen: set[str] = set()
    while not (params and _MIME_END.fullmatch(value, pos)):
        param = _MIME_PARAM.match(value, pos)
        if param is None or lname == "content-transfer-encoding":
            return None
        name = param.group(1)
        if name.lower() in seen:
            return None  # duplicates: the registry keeps one, with a defect
        seen.add(name.lower())
        params.append(f'{name}="{param.group(2) or param.group(3)}"')
        pos = param.end()
    return value[: head.end()] + "; " + "; ".join(params)


def _unstructured_str(value: str) -> str | None:
    """UnstructuredHeader's text: encoded words decoded, the whitespace
    between two of them dropped."""
    if "=?" not in value:
        return _sanitize(value) if _has_surrogates(value) else value
    if not _PRINTABLE.fullmatch(value):
        return None
    out: list[str] = []
    prev_ew = False
    space = ""
    for piece in _WSP_SPLIT.split(value):
        if not piece:
            continue
        if piece[0] in " \t":
            space = piece
            continue
        if _EW_RE.fullmatch(piece):
            text = _decoded_ew(piece)
            if text is None:
                return None
            out.append(text if prev_ew else space + text)
            prev_ew = True
        elif "=?" in piece:
            return None
        else:
            out.append(space + piece)
            prev_ew = False
        space = ""
    out.append(space)
    return "".join(out)


def _date_str(value: str) -> str:
    # DateHeader: the normalized timestamp, or the value as given
    if not value:
        return ""
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except ValueError:
        return _sanitize(value) if _has_surrogates(value) else value
    return email.utils.format_datetime(parsed)


def default_header_str(name: str, value: str) -> str:
    """``str(policy.default.header_fetch_parse(name, value))``, without the
    header registry for simple values."""
    value = _unfold(value)
    lname = name.lower()
    fast: str | None = None
    if lname in _MIME_HEAD:
        # the parser and the part walk read each of these several times, and
        # most values recur across messages
        key = (lname, value)
        cached = _MIME_CACHE.get(key)
        if cached is None:
            cached = _mime_str(lname, value)
            if cached is None:
                cached = str(_DEFAULT.header_factory(name, value))
            if len(_MIME_CACHE) >= 4096:
                _MIME_CACHE.clear()
            _MIME_CACHE[key] = cached
        return cached
    if lname == "date":
        return _date_str(value)
    if lname == "message-id":
        if _SIMPLE_MSGID.fullmatch(value):
            return value
    # header_factory is a HeaderRegistry; the stubs call it a Callable
    elif lname not in _DEFAULT.header_factory.registry or lname == "subject":  # type: ignore[attr-defined]
        fast = _unstructured_str(value)
    if fast is not None:
        return fast
    return str(_DEFAULT.header_factory(name, value))


def _display_word(word: str) -> str | None:
    if word[0] == '"':
        return word[1:-1]
    if word.startswith("=?"):
        text = _decoded_ew(word)
        # whitespace inside an encoded word is tokenized by the registry:
        # only single inner spaces are taken as they are
        return text if text and text == " ".join(text.split()) else None
    return word


def _simple_mailboxes(value: str) -> list[tuple[str, str]] | None:
    """(display name, addr-spec) of a plain address list, as AddressHeader gives them."""
    if not _PRINTABLE.fullmatch(value):
        return None
    pairs: list[tuple[str, str]] = []
    pos = 0
    while True:
        box = _MAILBOX.match(value, pos)
        if box is None:
            return None
        phrase = box.group("phrase")
        words: list[str] = []
        for word in _WORD_RE.findall(phrase or ""):
            text = _display_word(word)
            if text is None:
                return None
            words.append(text)
        pairs.append((" ".join(words), box.group("spec") or box.group("aspec")))
        pos = box.end()
        if pos == len(value):
            return pairs
        if value[pos] != ",":
            return None
        pos += 1


_ADDRESS_CACHE: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}


def address_pairs(name: str, value: str) -> list[tuple[str, str]]:
    # correspondents recur: most address headers have been read before
    key = (name.lower(), value)
    pairs = _ADDRESS_CACHE.get(key)
    if pairs is None:
        pairs = tuple(_parsed_address_pairs(name, value))
        if len(_ADDRESS_CACHE) >= 4096:
            _ADDRESS_CACHE.clear()
        _ADDRESS_CACHE[key] = pairs
    return list(pairs)


def _parsed_address_pairs(name: str, value: str) -> list[tuple[str, str]]:
    pairs = _simple_mailboxes(_unfold(value))
    if pairs is not None:
        return pairs
    header = _DEFAULT.header_fetch_parse(name, value)
    return [(addr.display_name, addr.addr_spec) for addr in getattr(header, "addresses", ())]


class _Policy(Compat32):
    """compat32 parsing; header values read back as policy.default's strings."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return default_header_str(name, value) if isinstance(value, str) else value


POLICY = _Policy()
