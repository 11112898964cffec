"""Track by tag (issue 20): the Track and Set Regarding buttons without an add-in.

What a message's tags ask for (:func:`decide`), and the store's side of it:
the tag cursor per folder (:func:`save_tag_cursor`, in the transaction of the
tracking it covers), Set Regarding on an activity tracked already
(:func:`set_regarding`) and untracking (:func:`untrack`).  Backend-neutral:
the tags come from :meth:`mailfiler.sources.base.Source.tag_changes` (IMAP
keywords here; Outlook categories later), and tracking a tagged message is
the tracker's, with :func:`~mailfiler.tracking.context.tagged_message` as
its folder context.

As in Dynamics: removing the tag does not untrack; the untrack tag or the
untrack folder does, and only for the mailbox that tracked the activity (its
owner mailbox: Dynamics lets the owner untrack); the activity stays in the
store, marked untracked with the reason, and this mailbox's locations of it
are removed.  The mail itself is never altered.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import peewee as pw

from mailfiler.sources.base import TagQuery
from mailfiler.store.models import Activity, Location, Mailbox, Record, TagCursor, utcnow
from mailfiler.store.records import get_by_ref

TagAction = Literal["track", "regard", "untrack", "none"]
#: a shunted tagged message's detail starts with this: `shunt retry` tracks it as tagged
TAGGED_SHUNT = "tagged: "


@dataclass(frozen=True)
class TagSettings:
    """A mailbox's track-by-tag settings (config ``track_tags:``), backend-neutral."""

    tag: str = "CRM"
    set_regarding_prefix: str | None = "CRM:"
    untrack_tag: str | None = "CRM-untrack"
    untrack_folder: str | None = None

    @property
    def query(self) -> TagQuery:
        names = {self.tag} | ({self.untrack_tag} if self.untrack_tag else set())
        prefixes = (self.set_regarding_prefix,) if self.set_regarding_prefix else ()
        every = frozenset({self.untrack_folder}) if self.untrack_folder else frozenset()
        return TagQuery(frozenset(names), prefixes, every)


@dataclass(frozen=True)
class Decision:
    action: TagAction
    #: regard: the record reference the tag names ("account:contoso")
    ref: str | None = None
    #: why, for the log and for an untracked activity's reason
    reason: str = ""
    #: more than one record tag: the one taken, the others named here
    ignored: tuple[str, ...] = ()


def decide(settings: TagSettings, folder: str, tags: frozenset[str]) -> Decision:
    """What the tags of a message in ``folder`` ask for.  The untrack folder and
    the untrack tag win over any other tag (an explicit request to stop); a
    record tag sets the regarding (Set Regarding) and tracks; the plain tag
    tracks.  No tag left: nothing (removing a tag does not untrack)."""
    low = {t.lower(): t for t in tags}
    if settings.untrack_folder and folder == settings.untrack_folder:
        return Decision("untrack", reason=f"moved to the untrack folder {folder}")
    if settings.untrack_tag and settings.untrack_tag.lower() in low:
        return Decision("untrack", reason=f"untrack tag {settings.untrack_tag} in {folder}")
    prefix = settings.set_regarding_prefix
    if prefix:
        refs = sorted(t[len(prefix) :] for t in tags if t.lower().startswith(prefix.lower()) and len(t) > len(prefix))
        if refs:
            return Decision("regard", refs[0], f"tag {prefix}{refs[0]} in {folder}", tuple(refs[1:]))
    if settings.tag.lower() in low:
        return Decision("track", reason=f"tag {settings.tag} in {folder}")
    return Decision("none")


def find_record(ref: str) -> Record | None:
    """The record a tag names: ``entity:key`` as written, else its key lower-cased
    (a mail client may keep the tag's case its own way)."""
    if ":" not in ref:
        return None
    record = get_by_ref(ref)
    if record is None:
        entity, _, key = ref.partition(":")
        record = get_by_ref(f"{entity.lower()}:{key.lower()}")
    return record


# -- the store ---------------------------------------------------------------------


def tag_cursors(mailbox: Mailbox) -> dict[str, str | None]:
    """folder -> tag cursor, for every folder a tag pass has looked at."""
    return {c.folder: c.token for c in TagCursor.select().where(TagCursor.mailbox == mailbox)}


def save_tag_cursor(mailbox_id: int, folder: str, token: str | None, now: dt.datetime | None = None) -> None:
    """Advance the folder's tag cursor (in the caller's transaction: the one
    of the tracking it covers)."""
    if token is None:
        return
    now = now or utcnow()
    TagCursor.insert(mailbox=mailbox_id, folder=folder, token=token, updated_at=now).on_conflict(
        conflict_target=[TagCursor.mailbox, TagCursor.folder],
        update={TagCursor.token: token, TagCursor.updated_at: now},
    ).execute()


def located_activity(mailbox_id: int, folder: str, source_id: str) -> int | None:
    """The activity whose message sits at this location (not gone), or None."""
    row = (
        Location.select(Location.activity)
        .where(
            (Location.mailbox == mailbox_id)
            & (Location.folder == folder)
            & (Location.source_id == source_id)
            & Location.gone_at.is_null()
        )
        .first()
    )
    return row.activity_id if row is not None else None


def activity_by_message_id(message_id: str) -> int | None:
    row = Activity.select(Activity.id).where(Activity.message_id == message_id).first()
    return row.id if row is not None else None


@dataclass(frozen=True)
class TagOutcome:
    """What a tag did to an activity; ``event`` names the log event."""

    event: str  # untracked | untrack-refused | untracked-already | regarding-set | regarding-kept | known
    activity_id: int | None
    detail: str = ""
    regarding: str | None = None


def untrack(db: pw.Database, mailbox: Mailbox, activity_id: int, reason: str, now: dt.datetime) -> TagOutcome:
    """Mark the activity untracked and remove this mailbox's locations of it, when
    this mailbox tracked it (the owner rule); in the caller's transaction."""
    activity = Activity.get_or_none(Activity.id == activity_id)
    if activity is None:
        return TagOutcome("untracked-already", None, "no such activity")
    if activity.owner_mailbox_id != mailbox.id:
        owner_row = Mailbox.get_or_none(Mailbox.id == activity.owner_mailbox_id)
        owner = owner_row.name if owner_row is not None else "none"
        detail = f"tracked by mailbox {owner}, not {mailbox.name}: only its owner untracks it"
        return TagOutcome("untrack-refused", activity_id, detail)
    if activity.untracked_at is not None:
        return TagOutcome("untracked-already", activity_id, activity.untracked_reason or "")
    Activity.update(untracked_at=now, untracked_reason=reason[:1000], updated_at=now).where(
        Activity.id == activity_id
    ).execute()
    Location.delete().where((Location.activity == activity_id) & (Location.mailbox == mailbox.id)).execute()
    return TagOutcome("untracked", activity_id, reason)


def set_regarding(activity_id: int, record: Record, folder_regarding: Record | None, now: dt.datetime) -> TagOutcome:
    """Set Regarding on a tracked activity (in the caller's transaction).  A
    tracked folder with a regarding of its own keeps it: the folder decides
    there, as in Dynamics (a manual change is overwritten by the next sync)."""
    activity = Activity.get_by_id(activity_id)
    held = Record.get_or_none(Record.id == activity.regarding_id) if activity.regarding_id is not None else None
    current = held.ref if held is not None else None
    if folder_regarding is not None and folder_regarding.id != record.id:
        return TagOutcome(
            "regarding-kept", activity_id, f"its tracked folder sets {folder_regarding.ref}", folder_regarding.ref
        )
    if activity.regarding_id == record.id and activity.untracked_at is None:
        return TagOutcome("known", activity_id, "", record.ref)
    Activity.update(
        regarding=record, correlation="tag", correlation_folder=None, untracked_at=None, untracked_reason=None,
        updated_at=now,
    ).where(Activity.id == activity_id).execute()  # fmt: skip
    return TagOutcome("regarding-set", activity_id, f"from {current or '-'}", record.ref)


__all__ = [
    "TAGGED_SHUNT",
    "Decision",
    "TagAction",
    "TagOutcome",
    "TagSettings",
    "activity_by_message_id",
    "decide",
    "find_record",
    "located_activity",
    "save_tag_cursor",
    "set_regarding",
    "tag_cursors",
    "untrack",
]
