"""Split a sender's display name into first and last name (for new contacts)."""

from __future__ import annotations

import re

__all__ = ["split_display_name"]

_SPACES = re.compile(r"\s+")
# "Bob Smith (Contoso)", "Bob Smith [EXT]": trailing notes are not part of the name
_NOTE = re.compile(r"\s*[(\[][^()\[\]]*[)\]]\s*$")


def split_display_name(name: str, address: str = "") -> tuple[str, str]:
    """(first, last) from a display name, falling back to the address.

    ``"Smith, Bob"`` -> ("Bob", "Smith"); ``"Bob van der Berg"`` -> ("Bob",
    "van der Berg"); ``"Bob"`` -> ("Bob", ""); no name and
    ``bob.smith@x.com`` -> ("Bob", "Smith"); ``info@x.com`` -> ("", "Info").
    A lone word is a first name when it comes from a display name, a last
    name when it comes from an address (``info@``, ``sales@`` are roles, and
    CRMs require a last name).  An address may also be passed as *name*.
    """
    # quotes around the whole name are decoration; inside it (O'Brien) they are not
    text = _SPACES.sub(" ", (name or "").replace('"', " ")).strip().strip("'").strip()
    text = _NOTE.sub("", text).strip()
    if "@" in text and " " not in text:
        address, text = text, ""
    if text:
        if "," in text:
            last, _, first = text.partition(",")
            return first.strip(), last.strip()
        first, _, last = text.partition(" ")
        return first, last.strip()
    local = (address or "").rpartition("@")[0] if "@" in (address or "") else (address or "")
    local = local.split("+", 1)[0]
    words = [w for w in re.split(r"[._\-]+", local) if w]
    if not words:
        return "", ""
    if len(words) == 1:
        return "", words[0].capitalize()
    return words[0].capitalize(), " ".join(w.capitalize() for w in words[1:])
