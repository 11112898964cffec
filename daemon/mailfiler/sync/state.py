"""What a collection's last complete sync saw of both sides, so that a resync
with no change on either side can stop before the per-item pass.

* The user's side: the target's sync token (RFC 6578), whose changes since
  then are compared with the status; or, on a target without tokens (a
  vdir), the full listing, compared the same way.  Either side "did not
  change" when every change reported is one of the sync's own writes with
  the etag it recorded: a user's edit gives another etag, a user's new item
  an href the status does not know, a user's deletion an href it does.
* The CRM side: a digest of every CRM row the sync reads
  (:meth:`mailfiler.sync.crm.CrmRows.digest`), of the policy (filters,
  field directions, conflict and delete rules), of the items the mailbox has
  in its other collections of the kind, and of the code's version.  A digest,
  not ``max(updated_at)``: a writer that changes a column without touching
  ``updated_at`` (an import, a rule, an admin's SQL) is seen all the same.

Both are kept together in ``SyncCollection.token`` (one column, written in
one statement, so they always describe the same sync), and only after a
sync that handled every item: after a failed or skipped item the digest is
dropped, so the next sync does the whole pass again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from mailfiler.sources.target import Changes, etag_key

#: bump when what the digest covers changes meaning (a stored state then simply misses once)
FORMAT = 1


@dataclass(frozen=True)
class SyncState:
    #: the target's sync token; None when it has none (or it was dropped)
    token: str | None = None
    #: the CRM digest of the last complete sync; None: unknown, do the whole pass
    crm: str | None = None

    def dump(self) -> str | None:
        if self.token is None and self.crm is None:
            return None
        return json.dumps({"v": FORMAT, "token": self.token, "crm": self.crm}, separators=(",", ":"))

    @classmethod
    def load(cls, text: str | None) -> SyncState:
        """The stored state; a bare token (stored before this format) has no digest."""
        if not text:
            return cls()
        if text.startswith('{"v":'):
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            if isinstance(data, dict):
                if data.get("v") != FORMAT:
                    return cls(token=data.get("token"))
                return cls(token=data.get("token"), crm=data.get("crm"))
        return cls(token=text)


def changes_are_ours(changes: Changes, known: Mapping[str, str]) -> bool:
    """True when *changes* (since a token) leave the user's side as *known*
    (href -> etag: the status, and shunted items at their shunted etag)."""
    return all(etag_key(known.get(href)) == etag_key(etag) for href, etag in changes.changed.items()) and not any(
        href in known for href in changes.deleted
    )


def listing_is_known(listing: Mapping[str, str], known: Mapping[str, str]) -> bool:
    """True when a full listing is exactly what the status knows."""
    return len(listing) == len(known) and all(
        href in known and etag_key(known[href]) == etag_key(etag) for href, etag in listing.items()
    )


__all__ = ["SyncState", "changes_are_ours", "listing_is_known"]
