"""``mailfiler sync --dry-run``: the plan of every collection, performed nowhere.

The engine runs as for a sync, reads both sides and plans, then stops: no
target is written or created, and the store is left as it was (a mailbox or
collection never synced is planned from an unsaved row)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee as pw

from mailfiler.config.loader import LoadedConfig
from mailfiler.store.models import Mailbox
from mailfiler.sync.engine import SyncEngine
from mailfiler.sync.runner import collections, policies


async def plan_all(
    db: pw.Database, loaded: LoadedConfig, *, mailbox: str | None = None, force_delete: bool = False
) -> list[dict[str, Any]]:
    """Per collection: its mailbox, kind, location, state, errors, and the actions planned."""
    out: list[dict[str, Any]] = []
    for mb in loaded.config.mailboxes:
        if mb.sync is None or (mailbox is not None and mb.name != mailbox):
            continue
        row = Mailbox.get_or_none(Mailbox.name == mb.name) or Mailbox(id=0, name=mb.name, owner=mb.owner)
        colls = collections(mb.sync, loaded.path.parent)
        engine = SyncEngine(
            db, row, policies(mb.sync), state_dir=Path(loaded.config.state_dir), force_delete=force_delete,
            dry_run=True,
        )  # fmt: skip
        try:
            results = await engine.sync(colls)
        finally:
            for coll in colls:
                await coll.target.close()
        for result, (_, plan) in zip(results, engine.plans, strict=True):
            out.append(
                {
                    "mailbox": mb.name,
                    "kind": result.kind,
                    "location": result.location,
                    "role": result.role,
                    "state": result.state,
                    "quiet": result.quiet,
                    "errors": result.errors,
                    "actions": [a.describe() for a in plan],
                }
            )
    return out


__all__ = ["plan_all"]
