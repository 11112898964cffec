"""SyncFolderItems states as cursor tokens.

A sync state covers a whole page of changes, not one message, yet the worker
commits a token with every message ("this one and those before it").  So a
token is the folder's id, the state *before* the page, and short hashes of the
items of that page already processed: a catch-up from it asks Exchange for the
changes since that state and leaves out the creates whose hash it holds.  The
last token of a listing or delta is the final state with no hashes.  A crash
mid-page thus re-reads only the rest of the page; nothing is skipped that was
not committed, and a re-reported item is one the worker already knows.

The folder id in the token keeps a renamed folder tracked: the token is only
ever used for the folder path it was made for (``p``), whatever the folder is
called now.  One gap is left: an item created and deleted after the state the
token holds (a crash mid-page, the item deleted before the restart) may be
reported by Exchange as nothing at all; a full listing (a rejected state, a
rescan) corrects the store then."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

PREFIX = "ews1."


def item_hash(item_id: str) -> str:
    """10 hex digits: enough to tell apart the items of a page (<= 512), short in a token."""
    return hashlib.blake2s(item_id.encode(), digest_size=5).hexdigest()


@dataclass(frozen=True)
class Cursor:
    path: str
    folder_id: str
    state: str | None
    done: frozenset[str] = frozenset()

    def encode(self) -> str:
        data = {"p": self.path, "f": self.folder_id, "s": self.state or "", "d": sorted(self.done)}
        return PREFIX + base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()

    @classmethod
    def decode(cls, token: str) -> Cursor | None:
        """None for a token this backend did not make (or an older format)."""
        if not token.startswith(PREFIX):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(token[len(PREFIX) :].encode()))
            return cls(str(data["p"]), str(data["f"]), str(data["s"]) or None, frozenset(map(str, data["d"])))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None


@dataclass
class Page:
    #: the state the page was asked from, and the hashes every token of it carries
    state_before: str | None
    carried: frozenset[str]
    creates: list[str] = field(default_factory=list)


@dataclass
class Walk:
    """The pages of one listing or catch-up, to hand out each message's token."""

    path: str
    folder_id: str
    pages: list[Page] = field(default_factory=list)
    final_state: str | None = None
    _where: dict[str, tuple[int, int]] = field(default_factory=dict)

    def add_page(self, state_before: str | None, carried: Iterable[str], creates: Sequence[str]) -> None:
        page = Page(state_before, frozenset(carried), list(creates))
        for pos, sid in enumerate(page.creates):
            self._where[sid] = (len(self.pages), pos)
        self.pages.append(page)

    @property
    def token(self) -> str:
        return Cursor(self.path, self.folder_id, self.final_state).encode()

    def step(self, sid: str) -> str | None:
        where = self._where.get(sid)
        if where is None:
            return None
        page = self.pages[where[0]]
        done = page.carried | {item_hash(s) for s in page.creates[: where[1] + 1]}
        return Cursor(self.path, self.folder_id, page.state_before, done).encode()


__all__ = ["Cursor", "Walk", "item_hash"]
