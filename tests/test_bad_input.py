"""Hostile and oversized input: every message ends tracked or shunted with a clear reason,
the daemon never exits, and the Maildir is only ever read.

The real daemon (``mailfiler run``) meets the whole ``mailgen.malformed_corpus()`` twice: in
the backfill (files there before it starts) and live (files dropped while it watches), plus a
30 MB attachment and a 200-attachment message. With a 1 MB size limit the 30 MB message is
shunted ``too-large`` with a byte-identical copy kept.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from tests.daemonproc import (
    SYNTHETIC_SUFFIX,
    DaemonProc,
    World,
    assert_blobs_intact,
    cli,
    describe,
    present_locations,
    query,
    sha256_file,
    shunts,
    wait_until,
)
from tests.mailgen import (
    MALFORMED_NAMES,
    drop_into_maildir,
    large_attachment_message,
    maildirpp_folder_dir,
    make_maildir_folder,
    malformed_corpus,
    many_attachments_message,
    message_id_for,
    realistic_message,
)

BACKFILL = "Tracked/Contoso"  # the corpus is there before the daemon starts
LIVE = "Tracked/Unfiled"  # the corpus, the big ones and a normal message arrive while it runs
FOLDERS: list[tuple[str, str | None]] = [(BACKFILL, "account:contoso"), (LIVE, None)]

#: what is not mail at all is shunted, with this reason
SHUNTED = {"empty": "empty-message", "binary_png": "not-a-message", "plain_text_no_headers": "not-a-message"}
#: malformed mail is tracked; where the damage is detectable, the activity records it
DEFECTS = {
    "boundary_never_appears": "StartBoundaryNotFoundDefect",
    "boundary_unterminated": "CloseBoundaryNotFoundDefect",
    "bad_charset": "text part: LookupError",
    "invalid_base64": "InvalidBase64CharactersDefect",
    "unparseable_date": "unparseable Date",
}
TRACKED = [name for name in MALFORMED_NAMES if name not in SHUNTED]

LARGE_BYTES = 30 * 1024 * 1024
LARGE_ID = f"<large-{LARGE_BYTES}.0@mail.contoso.com>"
LARGE_COPY_ID = "<forwarded-large@mail.contoso.com>"
MANY = 200
MANY_ID = f"<many-{MANY}.0@mail.contoso.com>"


def _attachment_sha256(raw: bytes) -> str:
    """sha256 of the (single, base64) attachment of a large_attachment_message."""
    body = raw.split(b"Content-Transfer-Encoding: base64\n\n", 1)[1].split(b"--large-boundary--", 1)[0]
    return hashlib.sha256(base64.decodebytes(body)).hexdigest()


def _many_filenames() -> list[str]:
    exts = ("txt", "pdf", "png", "csv", "bin")
    return [f"Översikt-{k:04d}.{exts[k % 5]}" if k % 7 == 3 else f"bilaga-{k:04d}.{exts[k % 5]}" for k in range(MANY)]


class Dropped:
    """Files written into the Maildir by the test: path -> sha256 of what was written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: dict[Path, str] = {}
        self.data: dict[tuple[str, str], bytes] = {}

    def drop(self, folder: str, name: str, data: bytes) -> None:
        path = drop_into_maildir(maildirpp_folder_dir(self.root, folder), data, name=name)
        self.files[path] = hashlib.sha256(data).hexdigest()
        self.data[(folder, name)] = data

    def keys(self, folder: str) -> set[tuple[str, str]]:
        return {k for k in self.data if k[0] == folder}

    def assert_untouched(self) -> None:
        now = {p for p in self.root.rglob("*") if p.is_file()}
        assert now == set(self.files), f"files appeared or vanished: {now ^ set(self.files)}"
        changed = [p for p, digest in self.files.items() if sha256_file(p) != digest]
        assert changed == [], f"mailfiler changed source files: {changed}"


def _resolved(world: World) -> set[tuple[str, str]]:
    """(folder, source id) of every message that is tracked or shunted."""
    return present_locations(world.db) | {k for k, s in shunts(world.db).items() if s["resolved_at"] is None}


def _activity_at(world: World, folder: str, source_id: str) -> dict:
    rows = query(
        world.db,
        "SELECT a.id, a.message_id, a.synthetic_id, a.subject, a.body_text, a.sent_at, a.parse_defects,"
        " r.entity || ':' || r.key FROM location l JOIN activity a ON a.id = l.activity_id"
        " LEFT JOIN record r ON r.id = a.regarding_id"
        " WHERE l.folder = ? AND l.source_id = ? AND l.gone_at IS NULL",
        (folder, source_id),
    )
    assert len(rows) == 1, f"{folder}/{source_id}: {len(rows)} locations"
    keys = ("id", "message_id", "synthetic", "subject", "body_text", "sent_at", "defects", "regarding")
    return dict(zip(keys, rows[0], strict=True))


def _attachments(world: World, activity_id: int) -> list[tuple[int, str, str, int, str]]:
    return query(
        world.db,
        "SELECT position, filename, content_type, size, blob_id FROM attachment WHERE activity_id = ? ORDER BY position",
        (activity_id,),
    )


def _blob_files(world: World) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for p in (world.state_dir / "blobs").rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            found.setdefault(p.name, []).append(p)
    return found


def _assert_shunt_copy(world: World, shunt: dict, data: bytes) -> None:
    assert shunt["raw_path"], f"no copy kept for a {shunt['reason']} shunt"
    copy = world.state_dir / shunt["raw_path"]
    assert copy.is_file() and copy.read_bytes() == data, f"the kept copy {copy} differs from the source"
    assert shunt["size"] == len(data)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_daemon_tracks_or_shunts_every_bad_message_and_keeps_running(tmp_path: Path) -> None:
    world = World(tmp_path / "world", tmp_path / "Maildir", FOLDERS)
    corpus = malformed_corpus()
    assert set(SHUNTED) <= set(MALFORMED_NAMES) and set(DEFECTS) <= set(TRACKED)
    for folder, _ in FOLDERS:
        make_maildir_folder(maildirpp_folder_dir(world.maildir, folder))
    files = Dropped(world.maildir)
    large = large_attachment_message(LARGE_BYTES)
    large_sha = _attachment_sha256(large)
    # a different message carrying the same 30 MB attachment: the blob must still be stored once
    large_copy = large.replace(f"Message-ID: {LARGE_ID}".encode(), f"Message-ID: {LARGE_COPY_ID}".encode(), 1)
    assert large_copy != large

    for name, data in corpus.items():
        files.drop(BACKFILL, name, data)
    files.drop(BACKFILL, "large_copy", large_copy)

    with DaemonProc(world.config, world.base / "daemon.log") as daemon:
        daemon.start()

        def state() -> str:
            return f"resolved {sorted(_resolved(world))}\n{daemon.log_tail(10)}"

        wait_until(
            lambda: files.keys(BACKFILL) <= _resolved(world) or not daemon.alive(),
            timeout=90,
            what="the backfill of the bad messages",
            state=state,
        )
        assert daemon.alive(), daemon.log_tail()

        # the same input again, live, plus the big ones
        for name, data in corpus.items():
            files.drop(LIVE, name, data)
        files.drop(LIVE, "large_30mb", large)
        files.drop(LIVE, "many_200", many_attachments_message(MANY))
        wait_until(
            lambda: files.keys(LIVE) <= _resolved(world) or not daemon.alive(),
            timeout=120,
            what="the live bad messages",
            state=state,
        )
        assert daemon.alive(), daemon.log_tail()

        # after all that, a normal message is still tracked promptly
        files.drop(LIVE, "after_the_bad_ones", realistic_message(1))
        wait_until(
            lambda: (LIVE, "after_the_bad_ones") in present_locations(world.db) or not daemon.alive(),
            timeout=30,
            what="a normal message dropped after the bad ones",
            state=state,
        )
        assert daemon.alive(), daemon.log_tail()
        assert daemon.terminate() == 0, daemon.log_tail()
        errors = [e for e in daemon.events() if e.get("level") in ("error", "critical")]
        assert errors == [], errors[:3]
        shunt_events = {e.get("source_id"): e.get("reason") for e in daemon.events() if e.get("event") == "shunted"}
    assert shunt_events == SHUNTED, "each shunt is logged with its reason"

    files.assert_untouched()

    # -- the outcome of every input, in both folders
    located = present_locations(world.db)
    shunted = shunts(world.db)
    assert set(shunted) == {(f, n) for f, _ in FOLDERS for n in SHUNTED}
    for folder, _ in FOLDERS:
        for name, reason in SHUNTED.items():
            s = shunted[(folder, name)]
            assert s["reason"] == reason, (folder, name, s)
            assert s["detail"] and "Traceback" not in s["detail"], s["detail"]
            assert s["attempts"] == 1 and s["resolved_at"] is None
            assert (folder, name) not in located
            _assert_shunt_copy(world, s, corpus[name])
        for name in TRACKED:
            act = _activity_at(world, folder, name)
            expected = DEFECTS.get(name)
            if expected:
                assert expected in (act["defects"] or ""), f"{name}: defects {act['defects']!r}, expected {expected}"
            # in both folders: one activity, filed by the folder that has a regarding
            assert act["regarding"] == "account:contoso", (folder, name, act["regarding"])
            assert act == _activity_at(world, BACKFILL, name)

    act = {name: _activity_at(world, BACKFILL, name) for name in TRACKED}
    assert act["no_message_id"]["synthetic"] and act["no_message_id"]["message_id"].endswith(SYNTHETIC_SUFFIX)
    assert act["duplicate_message_id"]["message_id"] == "<dup1@malformed.example.org>"
    assert not any(a["synthetic"] for n, a in act.items() if n != "no_message_id")
    assert len({a["id"] for a in act.values()}) == len(TRACKED), "distinct messages, distinct activities"
    assert act["unparseable_date"]["sent_at"] is None
    assert "\x00" not in act["nul_bytes_in_body"]["body_text"] and "Hej" in act["nul_bytes_in_body"]["body_text"]
    assert "The innermost part." in act["nested_multipart_50"]["body_text"]
    assert 0 < len(act["header_line_100k"]["subject"]) <= 2000
    assert act["raw_8bit_header_latin1"]["subject"].startswith("Offert f")
    assert {a[1] for a in _attachments(world, act["rfc2231_non_ascii_filename"]["id"])} == {
        "Åkesson offert €.pdf",
        "Översikt för 2024.txt",
    }

    # -- the 30 MB message: tracked, its attachment stored once, content-addressed
    big = _activity_at(world, LIVE, "large_30mb")
    big_copy = _activity_at(world, BACKFILL, "large_copy")
    assert (big["message_id"], big_copy["message_id"]) == (LARGE_ID, LARGE_COPY_ID)
    assert big["regarding"] is None and big_copy["regarding"] == "account:contoso"
    for a in (big, big_copy):
        atts = _attachments(world, a["id"])
        assert [(p, f, s, b) for p, f, _, s, b in atts] == [(0, "archive.bin", LARGE_BYTES, large_sha)]
    blobs = _blob_files(world)
    assert len(blobs[large_sha]) == 1, f"the 30 MB attachment is stored {len(blobs[large_sha])} times"
    blob_path = blobs[large_sha][0]
    assert blob_path.is_relative_to(world.state_dir / "blobs")
    assert blob_path.stat().st_size == LARGE_BYTES and sha256_file(blob_path) == large_sha
    assert query(world.db, "SELECT size FROM blob WHERE sha256 = ?", (large_sha,)) == [(LARGE_BYTES,)]
    big_blobs = [p for paths in blobs.values() for p in paths if p.stat().st_size >= LARGE_BYTES]
    assert big_blobs == [blob_path]

    # -- 200 attachments, each with its name and its blob
    many = _activity_at(world, LIVE, "many_200")
    assert many["message_id"] == MANY_ID
    atts = _attachments(world, many["id"])
    assert [p for p, *_ in atts] == list(range(MANY))
    assert [f for _, f, *_ in atts] == _many_filenames()
    stored = assert_blobs_intact(world.db, world.state_dir)
    for _, filename, _, size, sha in atts:
        assert sha in stored, f"{filename}: blob {sha} missing"
        assert stored[sha][0] == size

    # -- and the normal message after them
    normal = _activity_at(world, LIVE, "after_the_bad_ones")
    assert normal["message_id"] == message_id_for(1) and not normal["defects"]

    # every blob row has its bytes (small ones in the row, the 30 MB one in its file), intact
    assert_blobs_intact(world.db, world.state_dir)


@pytest.mark.timeout(120)
def test_message_over_the_size_limit_is_shunted_too_large_with_a_copy(tmp_path: Path) -> None:
    world = World(tmp_path / "world", tmp_path / "Maildir", FOLDERS, limits={"max_message_bytes": 1_000_000})
    files = Dropped(world.maildir)
    large = large_attachment_message(LARGE_BYTES)
    files.drop(BACKFILL, "large_30mb", large)
    files.drop(BACKFILL, "normal", realistic_message(2))

    res = cli(world.config, "once", "--json")
    assert res.returncode == 0, describe(res)
    assert '"shunted": 1' in res.stdout and '"new": 1' in res.stdout, res.stdout

    s = shunts(world.db)
    assert set(s) == {(BACKFILL, "large_30mb")}
    shunt = s[(BACKFILL, "large_30mb")]
    assert shunt["reason"] == "too-large"
    assert re.search(rf"\b{len(large)}\b", shunt["detail"]) and "1000000" in shunt["detail"], shunt["detail"]
    assert shunt["attempts"] == 1
    _assert_shunt_copy(world, shunt, large)
    assert present_locations(world.db) == {(BACKFILL, "normal")}
    assert query(world.db, "SELECT COUNT(*) FROM activity WHERE message_id = ?", (LARGE_ID,)) == [(0,)]
    assert not any(p.stat().st_size >= 1_000_000 for paths in _blob_files(world).values() for p in paths)
    assert [p.name for p in world.state_dir.glob(".shunt-*")] == [], "the temporary copy is removed"

    # a later pass does not retry it on its own (that is `shunt retry`), nor copy it again
    res = cli(world.config, "once", "--json")
    assert res.returncode == 0, describe(res)
    assert shunts(world.db)[(BACKFILL, "large_30mb")]["attempts"] == 1
    assert len(list((world.state_dir / "shunt").rglob("*.eml"))) == 1
    files.assert_untouched()
