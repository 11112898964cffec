"""Marks as Outlook categories (``Tracked in CRM``, ``Not tracked (see CRM)``).

A category is set by PATCHing the message's whole ``categories`` list with
``If-Match`` on the etag read just before, so a category the user set
meanwhile is not overwritten: a 412 (the message changed) reads it again and
retries.  Reads and writes go 20 at a time through ``$batch``: marking a
backfill of 400 messages is 40 round trips, not 800.  The other state's
category is taken off (a shunted message tracked later shows one state).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from mailfiler.sources.base import MarkState
from mailfiler.sources.graph.client import BATCH_MAX, GraphClient
from mailfiler.util.text import plural

log = logging.getLogger("mailfiler.graph")

#: tries of a message whose etag went stale between read and write
ATTEMPTS = 4


def _item_url(client: GraphClient, folder_id: str, source_id: str) -> str:
    folder, item = quote(folder_id, safe=""), quote(source_id, safe="")
    return f"{client.mailbox_path.lstrip('/')}/mailFolders/{folder}/messages/{item}"


def _want(categories: tuple[str, str], state: MarkState) -> tuple[str, str]:
    tracked, failed = categories
    return (tracked, failed) if state == "tracked" else (failed, tracked)


async def set_category(
    client: GraphClient, folder_id: str, source_ids: Sequence[str], state: MarkState, categories: tuple[str, str]
) -> int:
    """Put ``state``'s category on the messages; how many carry it now."""
    add, drop = _want(categories, state)
    done = 0
    todo = list(dict.fromkeys(source_ids))
    for _ in range(ATTEMPTS):
        if not todo:
            break
        retry: list[str] = []
        for start in range(0, len(todo), BATCH_MAX):
            chunk = todo[start : start + BATCH_MAX]
            reads = await client.batch(
                [
                    {"id": str(i), "method": "GET", "url": _item_url(client, folder_id, sid) + "?$select=categories"}
                    for i, sid in enumerate(chunk)
                ]
            )
            writes: list[dict[str, Any]] = []
            for i, sid in enumerate(chunk):
                answer = reads.get(str(i))
                if answer is None or answer.status == 404:
                    continue  # gone: nothing to mark
                if answer.status in (429, 503):
                    client.note_throttled(answer.headers)
                    retry.append(sid)
                    continue
                if answer.status != 200 or not isinstance(answer.body, dict):
                    log.debug("graph: reading categories of %s: %s", sid, answer.status)
                    continue
                have = [c for c in answer.body.get("categories") or [] if isinstance(c, str)]
                if add in have and drop not in have:
                    done += 1
                    continue
                new = [c for c in have if c != drop] + ([add] if add not in have else [])
                etag = answer.body.get("@odata.etag") or answer.headers.get("ETag") or "*"
                writes.append(
                    {
                        "id": str(i),
                        "method": "PATCH",
                        "url": _item_url(client, folder_id, sid),
                        "headers": {"If-Match": etag, "Content-Type": "application/json"},
                        "body": {"categories": new},
                    }
                )
            if not writes:
                continue
            answers = await client.batch(writes)
            for req in writes:
                sid = chunk[int(req["id"])]
                answer = answers.get(req["id"])
                status = answer.status if answer is not None else 0
                if 200 <= status < 300:
                    done += 1
                elif status in (412, 409, 429, 503):  # changed meanwhile, or throttled: read again
                    if answer is not None and status in (429, 503):
                        client.note_throttled(answer.headers)
                    retry.append(sid)
                elif status != 404:
                    log.debug("graph: setting categories of %s: %s", sid, status)
        todo = retry
    if todo:
        log.info("graph: %s kept changing and were not marked", plural(len(todo), "message"))
    return done


async def lacking(client: GraphClient, folder_id: str, state: MarkState, categories: tuple[str, str]) -> set[str]:
    """The messages of the folder without ``state``'s category."""
    add, _ = _want(categories, state)
    out: set[str] = set()
    url = f"/mailFolders/{quote(folder_id, safe='')}/messages?$select=categories&$top=500"
    async for page in client.pages(url):
        for item in page["value"]:
            if add not in (item.get("categories") or []) and isinstance(item.get("id"), str):
                out.add(item["id"])
    return out
