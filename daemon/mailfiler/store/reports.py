"""Read-only views of the store for the CLI (tables and JSON)."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict

import peewee as pw

from mailfiler.errors import NotFound
from mailfiler.store.models import (
    Activity,
    ActivityParty,
    Attachment,
    DaemonState,
    FolderCursor,
    Location,
    Mailbox,
    Record,
    SeenMessage,
    Shunt,
    TagCursor,
    TrackedFolder,
    utcnow,
    with_aliases,
)
from mailfiler.store.records import get_by_ref, require_record


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() + "Z" if value else None


#: ``activities(kind=...)``: e-mail by default; appointments are listed by ``appointments list``
ACTIVITY_KINDS = ("email", "appointment", "all")


def activities(
    *, regarding: str | None = None, mailbox: str | None = None, limit: int | None = None, kind: str = "email"
) -> list[dict]:
    q = Activity.select().order_by(Activity.id)
    if kind != "all":
        q = q.where(Activity.kind == kind)
    if regarding:
        rec = require_record(regarding)
        q = q.where(Activity.regarding == rec)
    if mailbox:
        mb = Mailbox.get_or_none(Mailbox.name == mailbox)
        if mb is None:
            raise NotFound(f"no mailbox named {mailbox!r}")
        q = q.where(Activity.id.in_(Location.select(Location.activity).where(Location.mailbox == mb)))
    if limit:
        q = q.limit(limit)
    rows = list(q)
    ids = [a.id for a in rows]
    records = {r.id: r.ref for r in Record.select(Record.id, Record.entity, Record.key)}
    mailboxes = {m.id: m.name for m in Mailbox.select(Mailbox.id, Mailbox.name)}
    correlated_ids = {a.correlated_activity_id for a in rows if a.correlated_activity_id}
    correlated = {
        a.id: a.message_id
        for a in Activity.select(Activity.id, Activity.message_id).where(Activity.id.in_(list(correlated_ids) or [0]))
    }
    parties: dict[int, list[dict]] = defaultdict(list)
    locations: dict[int, list[dict]] = defaultdict(list)
    attachments: dict[int, list[dict]] = defaultdict(list)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for p in ActivityParty.select().where(ActivityParty.activity.in_(chunk)).order_by(ActivityParty.id):
            parties[p.activity_id].append(
                {
                    "role": p.role,
                    "address": p.address,
                    "name": p.display_name or None,
                    "record": records.get(p.record_id) if p.record_id else None,
                }
            )
        for loc in (
            Location.select().where(Location.activity.in_(chunk) & Location.gone_at.is_null()).order_by(Location.id)
        ):
            locations[loc.activity_id].append({"mailbox": mailboxes.get(loc.mailbox_id), "folder": loc.folder})
        for att in Attachment.select().where(Attachment.activity.in_(chunk)).order_by(Attachment.position):
            attachments[att.activity_id].append(
                {
                    "filename": att.filename or None,
                    "content_type": att.content_type,
                    "size": att.size,
                    "sha256": att.blob_id,
                }
            )
    out = []
    for a in rows:
        out.append(
            {
                "id": a.id,
                "kind": a.kind,
                "message_id": a.message_id,
                "synthetic_message_id": a.synthetic_id,
                "subject": a.subject,
                "sent_at": _iso(a.sent_at),
                "first_seen_at": _iso(a.first_seen_at),
                "direction": a.direction,
                "regarding": records.get(a.regarding_id) if a.regarding_id else None,
                "correlation": a.correlation,
                "correlated_to": correlated.get(a.correlated_activity_id) if a.correlated_activity_id else None,
                "categories": a.categories.split(",") if a.categories else [],
                "owner": a.owner,
                "owner_mailbox": mailboxes.get(a.owner_mailbox_id) if a.owner_mailbox_id is not None else None,
                "parties": parties[a.id],
                "locations": locations[a.id],
                "attachments": attachments[a.id],
                "defects": a.parse_defects.split(", ") if a.parse_defects else [],
                # untracked by its owner (track by tag): when and why; None while tracked
                "untracked": (
                    {"at": _iso(a.untracked_at), "reason": a.untracked_reason} if a.untracked_at is not None else None
                ),
            }
        )
    return out


def shunts(*, include_resolved: bool = False) -> list[dict]:
    q = Shunt.select(Shunt, Mailbox).join(Mailbox).order_by(Shunt.id)
    if not include_resolved:
        q = q.where(Shunt.resolved_at.is_null())
    return [
        {
            "id": s.id,
            "mailbox": s.mailbox.name,
            "folder": s.folder,
            "source_id": s.source_id,
            "message_id": s.message_id,
            "reason": s.reason,
            "detail": s.detail,
            "attempts": s.attempts,
            "size": s.size,
            "copy": s.raw_path,
            "created_at": _iso(s.created_at),
            "last_attempt_at": _iso(s.last_attempt_at),
            "resolved_at": _iso(s.resolved_at),
        }
        for s in q
    ]


def status() -> dict:
    daemons = []
    for row in DaemonState.select().where(DaemonState.key.startswith("daemon:")):
        info = json.loads(row.value)
        age = (utcnow() - row.updated_at).total_seconds()
        if info.get("state") == "running" and age > 60:
            info["state"] = "not responding"
        info["heartbeat_age_s"] = round(age, 1)
        daemons.append(info)
    tracked_counts = dict(
        ((r.mailbox_id, r.folder), r.n)
        for r in with_aliases(
            Location.select(Location.mailbox, Location.folder, pw.fn.COUNT(Location.id).alias("n"))
            .where(Location.gone_at.is_null())
            .group_by(Location.mailbox, Location.folder)
        )
    )
    shunt_counts = dict(
        ((r.mailbox_id, r.folder), r.n)
        for r in with_aliases(
            Shunt.select(Shunt.mailbox, Shunt.folder, pw.fn.COUNT(Shunt.id).alias("n"))
            .where(Shunt.resolved_at.is_null())
            .group_by(Shunt.mailbox, Shunt.folder)
        )
    )
    cursors = {(c.mailbox_id, c.folder): c for c in FolderCursor.select()}
    # judged by auto-tracking and left alone (the baseline is not counted)
    skipped_counts = dict(
        ((r.mailbox_id, r.folder), r.n)
        for r in with_aliases(
            SeenMessage.select(SeenMessage.mailbox, SeenMessage.folder, pw.fn.COUNT(SeenMessage.id).alias("n"))
            .where(SeenMessage.verdict == "skipped")
            .group_by(SeenMessage.mailbox, SeenMessage.folder)
        )
    )
    mailboxes = []
    for mb in Mailbox.select().where(Mailbox.active).order_by(Mailbox.name):
        folders = []
        active = TrackedFolder.select().where((TrackedFolder.mailbox == mb) & TrackedFolder.active)
        for tf in active.order_by(TrackedFolder.folder):
            cur = cursors.get((mb.id, tf.folder))
            regarding_ok = tf.regarding_ref is None or get_by_ref(tf.regarding_ref) is not None
            folders.append(
                {
                    "folder": tf.folder,
                    "regarding": tf.regarding_ref,
                    "regarding_exists": regarding_ok,
                    "state": cur.state if cur else "new",
                    "last_sync": _iso(cur.last_sync_at) if cur else None,
                    "tracked": tracked_counts.get((mb.id, tf.folder), 0),
                    "shunted": shunt_counts.get((mb.id, tf.folder), 0),
                    "last_error": (cur.last_error if cur else None)
                    or (None if regarding_ok else f"regarding record {tf.regarding_ref} does not exist"),
                    "error_code": _error_code(cur),
                }
            )
        watched = [
            {
                "folder": cur.folder,
                "state": cur.state,
                "last_sync": _iso(cur.last_sync_at),
                "tracked": tracked_counts.get((mb.id, cur.folder), 0),
                "skipped": skipped_counts.get((mb.id, cur.folder), 0),
                "shunted": shunt_counts.get((mb.id, cur.folder), 0),
            }
            for (mb_id, _), cur in sorted(cursors.items(), key=lambda kv: kv[0][1])
            if mb_id == mb.id and cur.kind == "watched"
        ]
        mailboxes.append(
            {
                "name": mb.name,
                "owner": mb.owner,
                "backend": mb.backend,
                "location": mb.location,
                "folders": folders,
                "watched": watched,
                "tags": _tags(mb, tracked_counts, {f["folder"] for f in folders} | {w["folder"] for w in watched}),
            }
        )
    return {
        "daemons": daemons,
        # e-mail only: appointments (sync-back) are counted apart
        "activities": Activity.select().where(Activity.kind == "email").count(),
        "appointments": Activity.select().where(Activity.kind == "appointment").count(),
        "shunted": Shunt.select().where(Shunt.resolved_at.is_null()).count(),
        "mailboxes": mailboxes,
    }


def _tags(mb: Mailbox, tracked_counts: dict[tuple[int, str], int], by_folder: set[str]) -> dict | None:
    """Track by tag in ``mb``: None until a tag pass has kept a cursor (its
    tags are not followed).  ``tracked``: messages tracked in folders neither
    tracked nor watched (a tag tracked them there, or they moved there)."""
    cursors = TagCursor.select().where(TagCursor.mailbox == mb)
    count = cursors.count()
    if not count:
        return None
    last = cursors.order_by(TagCursor.updated_at.desc()).first()
    untracked = Activity.select().where((Activity.owner_mailbox == mb) & Activity.untracked_at.is_null(False))
    return {
        "folders": count,
        "last_change": _iso(last.updated_at if last is not None else None),
        "tracked": sum(n for (mb_id, path), n in tracked_counts.items() if mb_id == mb.id and path not in by_folder),
        "untracked": untracked.count(),
    }


def _error_code(cur: FolderCursor | None) -> str | None:
    """The code of a folder's last error (its hint is the CLI's business)."""
    if cur is None or not cur.last_error:
        return None
    return cur.error_code or ("folder-missing" if cur.state == "missing" else None)
