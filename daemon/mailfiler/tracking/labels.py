"""How log lines name a message: ``<Message-ID> "Subject"``, everywhere.

One form, so that a message can be followed through the log by its
Message-ID (grep) and recognised by a person by its subject.  A file name or
IMAP UID changes with every move, so it is only added, in parentheses, when
the message cannot be read and has no Message-ID to give.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import re

from mailfiler.store.models import Activity, Location, Mailbox

#: a subject is cut to this many characters in a log line
SUBJECT_MAX = 60
#: how much of an unreadable message is looked at for its Message-ID and Subject
HEAD_MAX = 64 * 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def message_label(message_id: str | None, subject: str | None = None, *, place: str | None = None) -> str:
    """``<a@b> "Invoice 42"``; ``place`` (mailbox/folder/source id) is added only
    without a Message-ID, the one case where nothing else names the message."""
    parts: list[str] = []
    if message_id:
        parts.append(message_id if message_id.startswith("<") else f"<{message_id}>")
    if subject is not None:
        text = _CONTROL.sub(" ", subject).strip()
        if len(text) > SUBJECT_MAX:
            text = text[: SUBJECT_MAX - 1] + "…"
        parts.append(f'"{text}"' if text else "(no subject)")
    if not message_id and place:
        parts.append(f"({place})")
    return " ".join(parts) or "(unnamed message)"


def label_of_raw(raw: bytes | None, *, place: str) -> str:
    """The label of a message that may not parse (one about to be shunted):
    Message-ID and Subject read from its header block if it has them."""
    if not raw:
        return message_label(None, place=place)
    try:
        head = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw[:HEAD_MAX])
        message_id = (head.get("Message-ID") or "").strip() or None
        subject = head.get("Subject")
        subject = str(email.header.make_header(email.header.decode_header(subject))) if subject else None
    except Exception:  # noqa: BLE001 - a label never fails the caller; the shunt says why it is unreadable
        return message_label(None, place=place)
    return message_label(message_id, subject, place=place)


def label_at(mailbox: Mailbox, folder: str, source_id: str) -> str:
    """The label of the tracked message that was at this place (it may be gone)."""
    row = (
        Activity.select(Activity.message_id, Activity.subject)
        .join(Location)
        .where((Location.mailbox == mailbox) & (Location.folder == folder) & (Location.source_id == source_id))
        .first()
    )
    place = f"{mailbox.name}/{folder}/{source_id}"
    return message_label(row.message_id, row.subject) if row else message_label(None, place=place)
