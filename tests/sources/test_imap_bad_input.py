"""Hostile and oversized mail fetched over IMAP (a real Dovecot), through the mailbox worker.

The same inputs as ``tests/test_bad_input.py`` (which feeds them to the daemon from a Maildir):
``mailgen.malformed_corpus()``, a 30 MB attachment and a 200-attachment message.  Over IMAP they
arrive the way Dovecot serves them: bare LF as CRLF, NUL bytes as 0x80, and a zero-byte message
only from the server's own storage (APPEND refuses it).  The corpus goes through a backfill
(seeded before the scan) and through push (APPENDed while the worker follows the watcher).

Every message ends tracked or shunted with its reason, nothing crashes, a kept copy is the exact
bytes the server served, and the mailbox is only ever read.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailfiler.config.schema import Config
from mailfiler.service.runtime import MailboxRuntime, Services, build_services
from mailfiler.service.worker import MailboxWorker
from mailfiler.sources.base import Change
from mailfiler.store import db as storedb
from mailfiler.store import models as m
from mailfiler.store.blobs import BlobStore
from mailfiler.store.migrations import migrate
from tests.mailgen import (
    MALFORMED_NAMES,
    imap_utf7_encode,
    large_attachment_message,
    malformed_corpus,
    many_attachments_message,
    realistic_message,
)
from tests.servers.dovecot import ImapUser

BACKFILL = "Kunder/Åkesson AB"
LIVE = "Tracked/Unfiled"
FOLDERS = {BACKFILL: "account:akesson", LIVE: None}
#: what is not mail at all is shunted with this reason (as from a Maildir)
SHUNTED = {"empty": "empty-message", "binary_png": "not-a-message", "plain_text_no_headers": "not-a-message"}
#: where the damage is detectable, the activity records it
DEFECTS = {
    "boundary_never_appears": "StartBoundaryNotFoundDefect",
    "boundary_unterminated": "CloseBoundaryNotFoundDefect",
    "bad_charset": "text part: LookupError",
    "invalid_base64": "InvalidBase64CharactersDefect",
    "unparseable_date": "unparseable Date",
}
TRACKED = [n for n in MALFORMED_NAMES if n not in SHUNTED]
#: Dovecot refuses to APPEND a zero-byte message ("Can't save a zero byte message")
NOT_APPENDABLE = {"empty"}
LARGE_BYTES = 30 * 1024 * 1024
LARGE_ID = f"<large-{LARGE_BYTES}.0@mail.contoso.com>"
MANY = 200


@dataclass
class Tracked:
    user: ImapUser
    rt: MailboxRuntime
    services: Services
    worker: MailboxWorker


async def _tracked(user: ImapUser, tmp_path: Path, max_message_bytes: int | None) -> AsyncIterator[Tracked]:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    db = storedb.connect(url)
    migrate(db)
    secret = tmp_path / "imap.password"
    secret.write_text(user.password, encoding="utf-8")
    kw = user.settings_kwargs()
    config = Config(
        database=url,
        state_dir=tmp_path / "state",
        mailboxes=[
            {
                "name": "alice",
                "owner": "alice@example.com",
                "imap": {
                    "host": kw["host"],
                    "port": kw["port"],
                    "username": kw["username"],
                    "password_file": str(secret),
                    "tls": "none",
                    "timeout": 20,
                },
                "tracked_folders": [{"folder": f, "regarding": r} for f, r in FOLDERS.items()],
            }
        ],  # type: ignore[list-item]
        records=[{"entity": "account", "key": "akesson", "name": "Åkesson AB", "domains": ["akesson.se"]}],  # type: ignore[list-item]
        **({"limits": {"max_message_bytes": max_message_bytes}} if max_message_bytes else {}),  # type: ignore[arg-type]
    )
    services = build_services(db, config)
    rt = services.mailboxes["alice"]
    for folder in FOLDERS:
        user.create_folder(folder)
    await rt.source.open()
    try:
        yield Tracked(user, rt, services, MailboxWorker(rt, services))
    finally:
        await rt.source.close()
        db.close()


@pytest.fixture
async def tracked(imap_user: ImapUser, tmp_path: Path) -> AsyncIterator[Tracked]:
    async for t in _tracked(imap_user, tmp_path, None):
        yield t


@pytest.fixture
async def tracked_1mb(imap_user: ImapUser, tmp_path: Path) -> AsyncIterator[Tracked]:
    async for t in _tracked(imap_user, tmp_path, 1_000_000):
        yield t


# --------------------------------------------------------------------------- helpers


def served(t: Tracked, folder: str) -> dict[str, bytes]:
    """source id -> the bytes Dovecot serves for each message of ``folder`` (read with
    a plain imaplib client, BODY.PEEK[])."""
    out: dict[str, bytes] = {}
    with t.user.client() as admin:
        admin.select(folder, readonly=True)
        uidvalidity = _uidvalidity(admin)
        typ, data = admin.imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        assert typ == "OK", data
        for item in data:
            if isinstance(item, tuple):
                uid = int(item[0].split(b"UID ", 1)[1].split()[0])
                out[f"{uidvalidity}:{uid}"] = item[1]
    return out


def _uidvalidity(admin) -> int:  # type: ignore[no-untyped-def]
    _, codes = admin.imap.response("UIDVALIDITY")
    return int(codes[-1])


def which(corpus: dict[str, bytes], data: bytes) -> str:
    """The corpus name of a message as Dovecot serves it (CRLF line ends, NUL as 0x80)."""

    def key(raw: bytes) -> bytes:
        return raw.replace(b"\r", b"").replace(b"\x00", b"\x80")

    (name,) = [n for n, raw in corpus.items() if key(raw) == key(data)]
    return name


def folder_part(snapshot: list, folder: str) -> list:
    """One folder's STATUS and message list out of ``AdminClient.snapshot()``."""
    wire = imap_utf7_encode(folder)
    at = next(i for i, item in enumerate(snapshot) if isinstance(item, tuple) and item[0] == wire)
    rest = snapshot[at + 1 :]
    return [snapshot[at], rest[0] if rest and isinstance(rest[0], list) else []]


def located(folder: str) -> dict[str, m.Activity]:
    """source id -> activity of every present location in ``folder``."""
    rows = (
        m.Location.select(m.Location, m.Activity)
        .join(m.Activity)
        .where((m.Location.folder == folder) & m.Location.gone_at.is_null())
    )
    return {loc.source_id: loc.activity for loc in rows}


def shunted(folder: str) -> dict[str, m.Shunt]:
    return {s.source_id: s for s in m.Shunt.select().where((m.Shunt.folder == folder) & m.Shunt.resolved_at.is_null())}


def attachments(activity: m.Activity) -> list[tuple[int, str, int, str]]:
    rows = m.Attachment.select().where(m.Attachment.activity == activity).order_by(m.Attachment.position)
    return [(a.position, a.filename, a.size, a.blob_id) for a in rows]


def blob_path(t: Tracked, sha: str) -> Path:
    (path,) = [p for p in (t.services.state_dir / "blobs").rglob(sha) if p.is_file()]
    return path


async def follow(t: Tracked, folders: list[str], done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run the watcher and hand its batches to the worker until ``done()``."""
    stop = asyncio.Event()
    batches: asyncio.Queue[list[Change]] = asyncio.Queue()

    async def pump() -> None:
        async for batch in t.rt.source.watch(folders, stop):
            batches.put_nowait(batch)

    task = asyncio.create_task(pump())
    deadline = time.monotonic() + timeout
    try:
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, "the pushed messages were not all handled"
            getter = asyncio.ensure_future(batches.get())
            finished, _ = await asyncio.wait({getter, task}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if task in finished:
                getter.cancel()
                task.result()  # the watcher failed: raise its error
            if getter in finished:
                await t.worker.handle(getter.result())
            else:
                getter.cancel()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def assert_corpus_outcome(t: Tracked, folder: str, names: dict[str, str]) -> dict[str, m.Activity]:
    """``names``: source id -> corpus name of every message in ``folder``.  Returns
    corpus name -> activity of the tracked ones."""
    here, kept, bytes_served = located(folder), shunted(folder), served(t, folder)
    assert set(here) | set(kept) == set(names), "every message is tracked or shunted"
    assert not set(here) & set(kept)
    by_name: dict[str, m.Activity] = {}
    for sid, name in names.items():
        if name in SHUNTED:
            s = kept[sid]
            assert s.reason == SHUNTED[name], (name, s.reason, s.detail)
            assert s.detail and "Traceback" not in s.detail
            if s.raw_path:  # the copy is what the server served
                assert (t.services.state_dir / s.raw_path).read_bytes() == bytes_served[sid], name
        else:
            assert sid in here, f"{name} was not tracked: {kept[sid].reason if sid in kept else '?'}"
            by_name[name] = here[sid]
    for name, defect in DEFECTS.items():
        if name in by_name:
            assert defect in (by_name[name].parse_defects or ""), (name, by_name[name].parse_defects)
    assert len({a.id for a in by_name.values()}) == len(by_name), "distinct messages, distinct activities"
    act = by_name
    assert act["no_message_id"].synthetic_id
    assert act["duplicate_message_id"].message_id == "<dup1@malformed.example.org>"
    assert act["unparseable_date"].sent_at is None
    assert "\x00" not in act["nul_bytes_in_body"].body_text and "Hej" in act["nul_bytes_in_body"].body_text
    assert "The innermost part." in act["nested_multipart_50"].body_text
    assert 0 < len(act["header_line_100k"].subject) <= 2000
    assert act["raw_8bit_header_latin1"].subject.startswith("Offert f")
    assert {a[1] for a in attachments(act["rfc2231_non_ascii_filename"])} == {
        "Åkesson offert €.pdf",
        "Översikt för 2024.txt",
    }
    return by_name


# --------------------------------------------------------------------------- tests


async def test_the_malformed_corpus_in_a_backfill_and_pushed(tracked: Tracked) -> None:
    t = tracked
    corpus = malformed_corpus()
    # the backfill: straight into Dovecot's storage, so the zero-byte message is there too
    t.user.seed(BACKFILL, list(corpus.values()))
    with t.user.client() as admin:
        before = admin.snapshot()
    result = await t.worker.scan_folder(BACKFILL)
    assert (result.new, result.shunted) == (len(TRACKED), len(SHUNTED))
    names = {sid: which(corpus, data) for sid, data in served(t, BACKFILL).items()}
    backfilled = assert_corpus_outcome(t, BACKFILL, names)
    assert {a.regarding.ref for a in backfilled.values()} == {"account:akesson"}

    # the same input again, pushed: APPENDed while the worker follows the watcher
    live = {n: d for n, d in corpus.items() if n not in NOT_APPENDABLE}
    uids: dict[int, str] = {}

    async def append_all() -> None:
        await asyncio.sleep(1.0)  # the watcher is up (its first batch is the initial rescan)
        with t.user.client() as admin:
            for name, data in live.items():
                uids[admin.append(LIVE, data)] = name

    appender = asyncio.create_task(append_all())
    await follow(
        t,
        [BACKFILL, LIVE],
        lambda: appender.done() and len(located(LIVE)) + len(shunted(LIVE)) >= len(live),
    )
    await appender
    uidvalidity = next(iter(served(t, LIVE))).split(":")[0]
    pushed = assert_corpus_outcome(t, LIVE, {f"{uidvalidity}:{u}": n for u, n in uids.items()})
    # the same messages: the same activities, now in two folders, regarding kept
    assert {n: a.id for n, a in pushed.items()} == {n: a.id for n, a in backfilled.items()}
    assert m.Activity.select().count() == len(TRACKED)

    # a normal message after all that is tracked as usual
    with t.user.client() as admin:
        admin.append(LIVE, realistic_message(1))
    result = await t.worker.scan_folder(LIVE)
    assert result.new == 1 and m.Activity.select().count() == len(TRACKED) + 1
    with t.user.client() as admin:
        after = admin.snapshot()
    assert folder_part(after, BACKFILL) == folder_part(before, BACKFILL), "the backfilled folder changed"
    assert "\\Seen" not in repr(after)


@pytest.mark.slow
async def test_a_30_mb_message_and_one_with_200_attachments(tracked: Tracked) -> None:
    t = tracked
    large = large_attachment_message(LARGE_BYTES)
    with t.user.client() as admin:
        admin.append(BACKFILL, large)
        admin.append(BACKFILL, many_attachments_message(MANY))
    result = await t.worker.scan_folder(BACKFILL)
    assert (result.new, result.shunted) == (2, 0)
    acts = {a.message_id: a for a in located(BACKFILL).values()}
    big = acts[LARGE_ID]
    (att,) = attachments(big)
    assert att[:3] == (0, "archive.bin", LARGE_BYTES)
    path = blob_path(t, att[3])
    assert path.stat().st_size == LARGE_BYTES and hashlib.sha256(path.read_bytes()).hexdigest() == att[3]
    many = acts[f"<many-{MANY}.0@mail.contoso.com>"]
    atts = attachments(many)
    assert [a[0] for a in atts] == list(range(MANY))
    assert atts[3][1] == "Översikt-0003.csv" and atts[0][1] == "bilaga-0000.txt"
    blobs = BlobStore(t.services.state_dir)
    assert all(len(blobs.get(a[3])) == a[2] for a in atts)
    assert {a.regarding.ref for a in acts.values()} == {"account:akesson"}


@pytest.mark.slow
async def test_a_message_over_the_limit_is_shunted_with_a_streamed_copy(tracked_1mb: Tracked) -> None:
    t = tracked_1mb
    large = large_attachment_message(LARGE_BYTES)
    with t.user.client() as admin:
        admin.append(BACKFILL, large)
        admin.append(BACKFILL, realistic_message(2))
        before = admin.snapshot()
    result = await t.worker.scan_folder(BACKFILL)
    assert (result.new, result.shunted) == (1, 1)
    ((sid, s),) = shunted(BACKFILL).items()
    on_server = served(t, BACKFILL)[sid]
    assert s.reason == "too-large" and str(len(on_server)) in s.detail and "1000000" in s.detail, s.detail
    copy = t.services.state_dir / s.raw_path
    assert copy.stat().st_size == len(on_server) == s.size
    assert copy.read_bytes() == on_server
    assert m.Activity.select().where(m.Activity.message_id == LARGE_ID).count() == 0
    assert list(t.services.state_dir.glob(".shunt-*")) == [], "the temporary copy is removed"
    # a later scan neither retries it nor copies it again
    result = await t.worker.scan_folder(BACKFILL)
    assert (result.new, result.shunted) == (0, 0)
    assert m.Shunt.get_by_id(s.id).attempts == 1
    with t.user.client() as admin:
        assert admin.snapshot() == before
