"""A backfill's common batch, written in bulk: new messages in a tracked
folder that has its own regarding.

For such a message :meth:`Tracker.track` has nothing to decide.  The folder's
record wins, so no rule or correlation runs, and there is nothing to relink
or locate.  It inserts the activity, its parties and attachments, the
location, and bumps the cursor: about eight statements a message.  A batch
made only of such messages is written here with one statement per table.  The
rows are the same ones (``tests/store/test_bulk.py`` compares the two stores).

Any other batch goes message by message through :meth:`Tracker.track`, as
does this one if its write fails: another daemon tracked one of the messages
since the lookup, or the store refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailfiler.store import prepared
from mailfiler.store.blobs import BlobStore
from mailfiler.store.models import Activity, ActivityParty, Attachment, Blob, Location, utcnow
from mailfiler.tracking import txsql
from mailfiler.tracking.batchitem import Item
from mailfiler.tracking.correlate import subject_key

if TYPE_CHECKING:
    from mailfiler.tracking.pipeline import Outcome, Tracker

#: a lookup or insert takes at most this many rows (bound parameters stay far below the limits)
_CHUNK = 200


def eligible(items: Sequence[Item]) -> bool:
    """The batch is one tracked folder with a regarding, with distinct messages
    that need nothing but inserting (checked against the store by :func:`fresh`)."""
    if len(items) < 2:
        return False
    first = items[0]
    folder = first.folder
    if not folder.tracked or folder.regarding is None:
        return False
    ids = set()
    for item in items:
        if item.folder is not folder or item.mailbox is not first.mailbox or item.may_be_shunted:
            return False
        # a meeting invitation also writes an appointment: Tracker.track does that
        if any(a.content_type.lower() == "text/calendar" for a in item.msg.attachments):
            return False
        ids.add(item.msg.message_id)
    return len(ids) == len(items)


def fresh(tracker: Tracker, items: Sequence[Item]) -> bool:
    """None of the messages is tracked yet, and none of the locations was ever recorded."""
    db = tracker.db
    mb, folder = items[0].mailbox.row.id, items[0].folder.name
    for start in range(0, len(items), _CHUNK):
        chunk = items[start : start + _CHUNK]
        activities = prepared.cached(db, ("bulk-fresh-activity", len(chunk)), _activity_sql(len(chunk)))
        if db.execute_sql(activities, [i.msg.message_id for i in chunk]).fetchone():
            return False
        locations = prepared.cached(db, ("bulk-fresh-location", len(chunk)), _location_sql(len(chunk)))
        if db.execute_sql(locations, [mb, folder, *[i.source_id for i in chunk]]).fetchone():
            return False
    return True


def _activity_sql(n: int):  # type: ignore[no-untyped-def]
    def build(param: str, pg: bool) -> str:
        c, marks = prepared.col, ", ".join([param] * n)
        return f"SELECT 1 FROM {prepared.table(Activity)} WHERE {c(Activity.message_id)} IN ({marks}) LIMIT 1"

    return build


def _location_sql(n: int):  # type: ignore[no-untyped-def]
    def build(param: str, pg: bool) -> str:
        c, marks = prepared.col, ", ".join([param] * n)
        return (
            f"SELECT 1 FROM {prepared.table(Location)} WHERE {c(Location.mailbox)} = {param}"
            f" AND {c(Location.folder)} = {param} AND {c(Location.source_id)} IN ({marks}) LIMIT 1"
        )

    return build


def track(tracker: Tracker, items: Sequence[Item]) -> list[Outcome]:
    """Write the batch (in the caller's transaction); an Outcome per item."""
    from mailfiler.tracking.pipeline import Outcome

    db = tracker.db
    now = utcnow()
    mailbox, folder = items[0].mailbox, items[0].folder
    assert folder.regarding is not None
    regarding = folder.regarding
    blob_ids = [[tracker.blobs.put_part(a) for a in item.msg.attachments] for item in items]
    ids: dict[str, int] = {}
    for start in range(0, len(items), _CHUNK):
        rows = [_activity_row(item, mailbox, folder, now) for item in items[start : start + _CHUNK]]
        ids.update((mid, aid) for aid, mid in prepared.insert_returning(db, Activity, rows, Activity.message_id))
    parties, blobs, attachments, locations = [], [], [], []
    resolved = tracker._resolve(  # noqa: SLF001 - the batch's cache
        {a.address for item in items for addrs in item.msg.addresses.values() for a in addrs}
    )
    for item, digests in zip(items, blob_ids, strict=True):
        aid = ids[item.msg.message_id]
        seen: set[tuple[str, str]] = set()
        for role, addrs in item.msg.addresses.items():
            for addr in addrs:
                if (role, addr.address) in seen:
                    continue
                seen.add((role, addr.address))
                for rec in resolved[addr.address.lower()] or [None]:
                    parties.append(
                        {
                            "activity": aid,
                            "role": role,
                            "address": addr.address,
                            "display_name": addr.name,
                            "record": rec.id if rec else None,
                        }
                    )
        for position, (part, digest) in enumerate(zip(item.msg.attachments, digests, strict=True)):
            blobs.append(BlobStore.row(digest, part.data, part.nbytes))
            attachments.append(
                {
                    "activity": aid,
                    "position": position,
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": part.nbytes,
                    "blob": digest,
                }
            )
        locations.append(
            {
                "activity": aid,
                "mailbox": mailbox.row.id,
                "folder": folder.name,
                "source_id": item.source_id,
                "first_seen_at": now,
            }
        )
    for start in range(0, max(len(parties), len(blobs), len(locations)), _CHUNK):
        prepared.insert_ignore(db, ActivityParty, parties[start : start + _CHUNK])
        prepared.insert_ignore(db, Blob, blobs[start : start + _CHUNK])
        prepared.insert_many(db, Attachment, attachments[start : start + _CHUNK])
        prepared.insert_many(db, Location, locations[start : start + _CHUNK])
    # the batch's cursor: every message counted, the last one's token
    tokens = [item.token for item in items if item.token is not None]
    txsql.bump_cursor(
        db, mailbox.row.id, folder.name, folder.kind, now, tokens[-1] if tokens else None, count=True, n=len(items)
    )
    return [Outcome("tracked", ids[item.msg.message_id], item.msg.message_id, regarding.ref) for item in items]


def _activity_row(item: Item, mailbox, folder, now) -> dict:  # type: ignore[no-untyped-def]
    """The values Tracker._create_activity writes for a message its folder's record decides."""
    msg = item.msg
    outgoing = msg.sender is not None and msg.sender in mailbox.owner_addresses
    return dict(
        message_id=msg.message_id,
        synthetic_id=msg.synthetic_id,
        subject=msg.subject,
        sent_at=msg.sent_at,
        first_seen_at=now,
        updated_at=now,
        direction="outgoing" if outgoing else "incoming",
        body_text=msg.body_text,
        body_html=msg.body_html,
        size=msg.size,
        in_reply_to=msg.in_reply_to,
        references=" ".join(msg.references) or None,
        regarding=folder.regarding,
        correlation="folder",
        correlation_folder=folder.row,
        correlated_activity=None,
        subject_key=subject_key(msg.subject) or None,
        categories=None,
        owner=None,
        owner_mailbox=mailbox.row,
        parse_defects=", ".join(msg.defects) or None,
    )


__all__ = ["eligible", "fresh", "track"]
