"""The config/rule file watcher: which paths count, what is watched, and that a
save reaches ``on_change`` however the editor writes it (in-process, real inotify)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mailfiler.config.loader import LoadedConfig, load_config
from mailfiler.service.filewatch import ConfigWatcher, WatchTargets, is_editor_temp, is_rule_file_name

RULE = "rules:\n  - name: r1\n    when: {subject: x}\n    then: {regarding: account:contoso}\n"


def write_config(root: Path, rules: list[str]) -> Path:
    cfg = root / "mailfiler.yaml"
    tmp = root / "mailfiler.yaml.new"
    tmp.write_text(
        f"database: sqlite:///state/x.db\nstate_dir: state\nmailboxes: []\nrules: {rules!r}\n", encoding="utf-8"
    )
    os.replace(tmp, cfg)
    return cfg


@pytest.mark.parametrize(
    ("name", "temp"),
    [
        ("4913", True),
        (".rules.yaml.swp", True),
        (".rules.yaml.swx", True),
        ("rules.yaml~", True),
        (".#rules.yaml", True),
        ("#rules.yaml#", True),
        ("rules.yaml.tmp", True),
        (".goutputstream-AB12CD", True),
        ("rules.yaml", False),
        ("mailfiler.yaml", False),
        ("sedAb12Cd", False),  # sed -i's temp: harmless, it matches no watched name
    ],
)
def test_editor_temp_files(name: str, temp: bool) -> None:
    assert is_editor_temp(name) is temp


@pytest.mark.parametrize(
    ("name", "rule"),
    [("10-tags.yaml", True), ("a.yml", True), (".hidden.yaml", False), ("notes.txt", False), ("a.yaml~", False)],
)
def test_rule_file_names(name: str, rule: bool) -> None:
    assert is_rule_file_name(name) is rule


def test_relevant_paths(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "sub").mkdir()
    (tmp_path / "one.yaml").write_text(RULE, encoding="utf-8")
    t = WatchTargets(tmp_path / "mailfiler.yaml", frozenset({tmp_path / "rules", tmp_path / "one.yaml"}))
    yes = [
        "mailfiler.yaml",
        "one.yaml",
        "rules",  # the folder itself: created, deleted, renamed whole
        "rules/10-new.yaml",  # a new file; a deleted one is the same path
        "rules/20-x.yml",
        "rules/../one.yaml",
    ]
    no = [
        "mailfiler.yaml.new",  # the temp file of an atomic save: its rename onto the config counts
        "other.yaml",  # a yaml file next to the config that no rules: entry names
        "rules/.hidden.yaml",
        "rules/.10-new.yaml.swp",
        "rules/10-new.yaml~",
        "rules/4913",
        "rules/README.md",
        "rules/sub/deeper.yaml",  # folders load their own files only, not subfolders'
        "state/mailfiler.db",
    ]
    assert [p for p in yes if not t.relevant(tmp_path / p)] == []
    assert [p for p in no if t.relevant(tmp_path / p)] == []
    assert t.directories() == {tmp_path, tmp_path / "rules"}


def test_missing_rule_folder_watches_the_nearest_existing_folder(tmp_path: Path) -> None:
    t = WatchTargets(tmp_path / "mailfiler.yaml", frozenset({tmp_path / "conf" / "rules"}))
    assert t.directories() == {tmp_path}
    assert t.relevant(tmp_path / "conf" / "rules")
    assert t.relevant(tmp_path / "conf" / "rules" / "a.yaml")
    # once it exists, the folder itself is watched for its files
    (tmp_path / "conf" / "rules").mkdir(parents=True)
    assert t.directories() == {tmp_path, tmp_path / "conf", tmp_path / "conf" / "rules"}


def test_symlinked_config_watches_the_target_too(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "mailfiler.yaml").write_text("x: 1\n", encoding="utf-8")
    (tmp_path / "mailfiler.yaml").symlink_to(tmp_path / "real" / "mailfiler.yaml")
    t = WatchTargets(tmp_path / "mailfiler.yaml", frozenset())
    assert t.relevant(tmp_path / "real" / "mailfiler.yaml")
    assert t.directories() == {tmp_path, tmp_path / "real"}


def test_fingerprint_moves_on_edits_not_on_swap_files(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(RULE, encoding="utf-8")
    t = WatchTargets(tmp_path / "mailfiler.yaml", frozenset({rules}))
    before = t.fingerprint()
    (rules / ".a.yaml.swp").write_bytes(b"swap")
    (rules / "notes.txt").write_text("x", encoding="utf-8")
    assert t.fingerprint() == before
    (rules / "b.yaml").write_text(RULE, encoding="utf-8")
    assert t.fingerprint() != before


# --------------------------------------------------------------------------- the watcher


class Harness:
    """A ConfigWatcher over a real folder; ``on_change`` reloads the config like the daemon."""

    def __init__(self, root: Path, rules: list[str]) -> None:
        self.root = root
        self.config = write_config(root, rules)
        self.loaded: LoadedConfig = load_config(self.config)
        self.calls: list[float] = []
        self.fail_next = False
        self.stop = asyncio.Event()
        self.watcher = ConfigWatcher(lambda: self.loaded, self.on_change, self.stop, tick=0.2)

    async def on_change(self) -> None:
        self.calls.append(time.monotonic())
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("reload blew up")
        self.loaded = load_config(self.config)

    async def settle(self) -> None:
        """Let the watcher register its watches (and any pending event land)."""
        await asyncio.sleep(0.3)
        self.calls.clear()

    async def saved(self, change: Callable[[], object], *, timeout: float = 5.0) -> float:
        """Make the change; seconds until on_change ran."""
        n = len(self.calls)
        t0 = time.monotonic()
        change()
        while len(self.calls) == n:
            assert time.monotonic() - t0 < timeout, "the watcher did not notice the change"
            await asyncio.sleep(0.01)
        return self.calls[n] - t0


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[Harness]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10-a.yaml").write_text(RULE, encoding="utf-8")
    h = Harness(tmp_path, ["rules"])
    task = asyncio.create_task(h.watcher.run())
    await h.settle()
    yield h
    h.stop.set()
    await asyncio.wait_for(task, 5)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def vim_write(path: Path, text: str) -> None:
    """vim's default save: probe file, rename the original to a backup, write anew, drop the backup."""
    probe = path.parent / "4913"
    probe.write_bytes(b"")
    probe.unlink()
    backup = path.with_name(path.name + "~")
    os.rename(path, backup)
    path.write_text(text, encoding="utf-8")
    backup.unlink()


async def test_saves_of_every_kind_are_noticed(watched: Harness) -> None:
    rule = watched.root / "rules" / "10-a.yaml"
    latencies = [
        await watched.saved(lambda: rule.write_text(RULE + "# edit\n", encoding="utf-8")),  # in place (cp, nano)
        await watched.saved(lambda: atomic_write(rule, RULE)),
        await watched.saved(lambda: vim_write(rule, RULE + "# vim\n")),
        await watched.saved(lambda: (watched.root / "rules" / "20-b.yml").write_text(RULE, encoding="utf-8")),
        await watched.saved(lambda: (watched.root / "rules" / "20-b.yml").unlink()),
        await watched.saved(lambda: atomic_write(watched.config, watched.config.read_text(encoding="utf-8"))),
    ]
    assert max(latencies) < 1.0, latencies


async def test_swap_and_unrelated_files_are_ignored(watched: Harness) -> None:
    (watched.root / "rules" / ".10-a.yaml.swp").write_bytes(b"swap")
    (watched.root / "rules" / "notes.txt").write_text("x", encoding="utf-8")
    (watched.root / "other.yaml").write_text("x: 1\n", encoding="utf-8")
    await asyncio.sleep(0.6)  # longer than debounce + a tick: nothing may come
    assert watched.calls == []


async def test_watched_paths_follow_the_config(watched: Harness) -> None:
    # the config now names a folder that does not exist yet: creating it, then a file in it, both count
    await watched.saved(lambda: write_config(watched.root, ["rules", "more"]))
    more = watched.root / "more"
    await watched.saved(more.mkdir)
    await watched.saved(lambda: (more / "a.yaml").write_text(RULE, encoding="utf-8"))
    # the first folder is no longer listed: its files stop counting
    await watched.saved(lambda: write_config(watched.root, ["more"]))
    n = len(watched.calls)
    (watched.root / "rules" / "10-a.yaml").write_text(RULE + "# ignored\n", encoding="utf-8")
    await asyncio.sleep(0.6)
    assert len(watched.calls) == n


async def test_a_failing_reload_does_not_stop_the_watcher(watched: Harness, caplog: pytest.LogCaptureFixture) -> None:
    watched.fail_next = True
    rule = watched.root / "rules" / "10-a.yaml"
    with caplog.at_level(logging.ERROR, logger="mailfiler.filewatch"):
        await watched.saved(lambda: atomic_write(rule, RULE + "# one\n"))
        # restarted after the back-off: the next save is seen again
        await watched.saved(lambda: atomic_write(rule, RULE + "# two\n"))
    assert [r.event for r in caplog.records] == ["config-watch-error"]  # type: ignore[attr-defined]
