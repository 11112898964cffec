"""Correlation: find the tracked activity a new message belongs to.

Tried in this order (Dynamics' order, less ConversationIndex, which only
Outlook writes): In-Reply-To, then References (newest first), both matched
against tracked Message-IDs; then a tracking token in the subject; then,
only when enabled, smart matching (the same normalised subject and at least
N shared addresses).  A correlated message inherits the regarding of the
activity it matched.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from mailfiler.config.schema import CorrelationSettings
from mailfiler.store import prepared
from mailfiler.store.models import Activity, ActivityParty, utcnow
from mailfiler.tracking.parse import ParsedMessage

# reply and forward prefixes in the languages our users write (en, sv, da,
# fi, de, fr, nl, es/it/pt), with optional counters such as "Re[2]:"
_PREFIX = r"(?:re|aw|sv|vs|vl|fw|fwd|wg|tr|rv|antw|doorst|enc|res|ref|vs)(?:\s*\[\d+\])?\s*:"
_PREFIX_RE = re.compile(rf"^\s*(?:{_PREFIX}\s*)+", re.IGNORECASE)
_FORWARD_RE = re.compile(r"^\s*(?:fw|fwd|wg|vs|vl|tr|doorst|enc|rv)\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Match:
    activity: Activity
    method: str  # in-reply-to | references | token | smart


def subject_key(subject: str) -> str:
    """The subject with reply/forward prefixes removed, case and spaces folded."""
    stripped = _PREFIX_RE.sub("", subject or "")
    return " ".join(stripped.casefold().split())[:255]


def is_forward(subject: str) -> bool:
    return bool(_FORWARD_RE.match(subject or ""))


def token_regex(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(prefix)}:(\d{{7,10}})\b")


def format_token(prefix: str, activity_id: int) -> str:
    """The token to put in a subject, e.g. ``CRM:0001234``."""
    return f"{prefix}:{activity_id:07d}"


def find_token(subject: str, settings: CorrelationSettings) -> int | None:
    if not settings.token.enabled:
        return None
    for prefix in (settings.token.prefix, *settings.token.old_prefixes):
        found = token_regex(prefix).search(subject or "")
        if found:
            return int(found.group(1))
    return None


def _addresses(msg: ParsedMessage) -> set[str]:
    return {a.address for addrs in msg.addresses.values() for a in addrs}


def _by_message_id(ids: list[str]) -> dict[str, Activity]:
    """The tracked activities among ``ids`` (prebuilt SQL, see store.prepared)."""
    unique = sorted(set(ids))
    fields = Activity._meta.sorted_fields
    db = Activity._meta.database
    found: dict[str, Activity] = {}
    for start in range(0, len(unique), 500):  # SQLite's bound-parameter limit
        wanted = unique[start : start + 500]

        def build(param: str, pg: bool, n: int = len(wanted)) -> str:
            return (
                f"SELECT {prepared.select_columns(fields)} FROM {prepared.table(Activity)}"
                f" WHERE {prepared.col(Activity.message_id)} IN ({', '.join([param] * n)})"
            )

        for row in db.execute_sql(prepared.cached(db, ("activities-by-message-id", len(wanted)), build), wanted):
            activity = prepared.instance(Activity, fields, row)
            found[activity.message_id] = activity
    return found


def correlate(msg: ParsedMessage, settings: CorrelationSettings) -> Match | None:
    """The tracked activity ``msg`` replies to or continues, if any."""
    headers_count = settings.forwards_as_replies or not is_forward(msg.subject)
    parent = None
    if headers_count and settings.in_reply_to and msg.in_reply_to and msg.in_reply_to != msg.message_id:
        parent = msg.in_reply_to
    refs = [r for r in msg.references if r != msg.message_id] if headers_count and settings.references else []
    if parent or refs:
        # one lookup for In-Reply-To and References (was two)
        by_id = _by_message_id([parent, *refs] if parent else refs)
        if parent is not None and parent in by_id:
            return Match(by_id[parent], "in-reply-to")
        for ref in reversed(refs):  # the last reference is the direct parent
            if ref in by_id:
                return Match(by_id[ref], "references")
    token = find_token(msg.subject, settings)
    if token is not None:
        found = Activity.get_or_none(Activity.id == token)
        if found is not None:
            return Match(found, "token")
    if settings.smart.enabled:
        return _smart(msg, settings)
    return None


def _smart(msg: ParsedMessage, settings: CorrelationSettings) -> Match | None:
    key = subject_key(msg.subject)
    if not key:
        return None
    since = utcnow() - dt.timedelta(days=settings.smart.days)
    candidates = list(
        Activity.select(Activity.id, Activity.message_id, Activity.regarding, Activity.first_seen_at)
        .where(
            (Activity.subject_key == key) & (Activity.first_seen_at >= since) & (Activity.message_id != msg.message_id)
        )
        .order_by(Activity.first_seen_at.desc())
        .limit(50)
    )
    if not candidates:
        return None
    mine = _addresses(msg)
    shared: dict[int, set[str]] = {}
    for party in ActivityParty.select(ActivityParty.activity, ActivityParty.address).where(
        ActivityParty.activity.in_([c.id for c in candidates]) & ActivityParty.address.in_(list(mine) or [""])
    ):
        shared.setdefault(party.activity_id, set()).add(party.address)
    for cand in candidates:  # newest first
        if len(shared.get(cand.id, ())) >= settings.smart.min_shared_addresses:
            return Match(Activity.get_by_id(cand.id), "smart")
    return None
