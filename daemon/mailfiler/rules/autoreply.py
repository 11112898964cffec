"""Is this message written by a machine?  Auto-replies, delivery reports, bounces.

Such mail is not tracked unless a rule says so (the ``auto_submitted``
condition lets a rule say it).  The signs, each widely set by mail servers:

- ``Auto-Submitted`` other than ``no`` (RFC 3834: auto-replied, auto-generated);
- a ``multipart/report`` body (RFC 6522: delivery and read reports);
- a sender whose local part is ``mailer-daemon`` or ``postmaster``;
- an empty ``Return-Path: <>`` (the null sender of bounces and auto-replies);
- ``X-Auto-Response-Suppress`` (Exchange sets it on its automatic mail);
- ``Precedence: bulk``, ``junk`` or ``auto_reply``;
- ``X-Autoreply`` or ``X-Autorespond`` (vacation programs).
"""

from __future__ import annotations

from mailfiler.rules.facts import Facts

__all__ = ["auto_submitted_reason", "is_auto_submitted"]

_DAEMONS = {"mailer-daemon", "postmaster"}
_PRECEDENCE = {"bulk", "junk", "auto_reply"}


def auto_submitted_reason(facts: Facts) -> str | None:
    """Why *facts* looks machine-written (a short text), or None."""
    for value in facts.header("auto-submitted"):
        token = value.split(";", 1)[0].strip().lower()
        if token and token != "no":
            return f"Auto-Submitted: {token}"
    if facts.content_type == "multipart/report":
        return "multipart/report"
    for addr in facts.from_:
        local = addr.address.rpartition("@")[0].lower()
        if local in _DAEMONS:
            return f"sent by {local}"
    if any(v.strip() == "<>" for v in facts.header("return-path")):
        return "Return-Path: <>"
    if any(v.strip() for v in facts.header("x-auto-response-suppress")):
        return "X-Auto-Response-Suppress"
    for value in facts.header("precedence"):
        if value.strip().lower() in _PRECEDENCE:
            return f"Precedence: {value.strip().lower()}"
    for name in ("x-autoreply", "x-autorespond"):
        if any(v.strip() for v in facts.header(name)):
            return name.title()
    return None


def is_auto_submitted(facts: Facts) -> bool:
    """True for auto-replies, delivery reports and bounces (see the module doc)."""
    return auto_submitted_reason(facts) is not None
