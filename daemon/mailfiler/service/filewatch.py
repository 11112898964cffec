"""Watch the config file and the rule files it lists; reload within a second of a save.

Editors rarely write a file in place: vim renames the old file away and writes a
new one, others write a temp file and rename it over the old one, ``sed -i`` does
the same.  A watch on the file itself would die with the old inode, so the
*parent directories* are watched (not recursively: a config folder often holds
the Maildir and the store) and events are filtered down to the paths that matter:

* the config file;
* every entry of the config's ``rules:`` (a file, or a folder created, deleted or
  renamed whole);
* any ``*.yaml`` / ``*.yml`` file inside a rule folder, new and deleted ones too
  (dotfiles are ignored, as the rule loader ignores them).

Editor temp and swap files never count.  The set of watched paths follows the
config: the one in force, and the one on disk when it parses (a config that now
names a rule folder whose files are broken must still be watched for the fix).

inotify alone leaves gaps: the moment between dropping one set of watches and
registering the next, a rule folder created just before its files.  So each time
the watcher wakes (on events, or every ``tick`` seconds when idle) it also
compares a cheap fingerprint (stat of every watched file) with the one taken at
the last reload, and reloads when they differ.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import watchfiles

from mailfiler.config.loader import LoadedConfig, load_config
from mailfiler.errors import MailfilerError
from mailfiler.rules.loader import rule_files
from mailfiler.util import retrypolicy
from mailfiler.util.retrypolicy import RetryPolicy
from mailfiler.util.text import plural

__all__ = ["ConfigWatcher", "WatchTargets", "is_editor_temp", "is_rule_file_name"]

log = logging.getLogger("mailfiler.filewatch")

#: batch the events of one save (an editor's rename dance takes a few ms)
DEBOUNCE_MS = 100
STEP_MS = 30
#: how often the idle watcher wakes to re-check its paths and the fingerprint
TICK_S = 1.0
#: back-off after the watcher itself failed (doubling, capped)
RETRY_MIN_S = 1.0
RETRY_MAX_S = 30.0

_RULE_SUFFIXES = (".yaml", ".yml")

#: path -> (mtime_ns, size, inode), or None for a path that is missing
Fingerprint = dict[str, tuple[int, int, int] | None]


def is_editor_temp(name: str) -> bool:
    """Swap, backup and lock files of vim, emacs, nano, kate and friends."""
    return (
        name == "4913"  # vim's probe for whether it may write in the folder
        or name.endswith(("~", ".swp", ".swx", ".swo", ".tmp", ".kate-swp"))
        or name.startswith((".#", "#"))  # emacs lock and auto-save files
        or name.startswith(".goutputstream-")  # gedit / GIO atomic writes
    )


def is_rule_file_name(name: str) -> bool:
    """A name the rule loader reads from a rule folder."""
    return name.endswith(_RULE_SUFFIXES) and not name.startswith(".") and not is_editor_temp(name)


def _norm(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def _with_targets(paths: Iterable[Path]) -> set[Path]:
    """The paths and, for symlinks, what they point at (an edit of the target
    shows up in the target's folder, not the link's)."""
    out: set[Path] = set()
    for p in paths:
        p = _norm(p)
        out.add(p)
        try:
            real = p.resolve()
        except OSError:
            continue
        out.add(real)
    return out


def _existing_dir(path: Path) -> Path:
    """*path*, or its nearest ancestor that is a directory (what can be watched
    for *path* to appear)."""
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return path


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        # a folder's mtime moves whenever an editor drops a swap file in it; its
        # rule files are fingerprinted one by one, so only "it exists" counts
        return (0, 0, 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(frozen=True)
class WatchTargets:
    """What to watch for one config file and the rule paths of its config(s)."""

    config: Path
    #: the ``rules:`` entries, each a file or a folder (or missing, for now)
    rule_paths: frozenset[Path]

    @classmethod
    def of(cls, config_path: Path, configs: Iterable[LoadedConfig | None]) -> WatchTargets:
        rules = {_norm(p) for loaded in configs if loaded is not None for p in loaded.config.rules}
        return cls(_norm(config_path), frozenset(rules))

    @cached_property
    def _exact(self) -> frozenset[Path]:
        """The config and the rule paths, with their symlink targets."""
        return frozenset(_with_targets([self.config, *self.rule_paths]))

    def relevant(self, path: str | os.PathLike[str]) -> bool:
        """Whether an event at *path* may change the config or the rules."""
        p = _norm(path)
        if is_editor_temp(p.name):
            return False
        return p in self._exact or (p.parent in self._exact and is_rule_file_name(p.name))

    def directories(self) -> frozenset[Path]:
        """The existing directories to watch (not recursively)."""
        dirs: set[Path] = set()
        for p in self._exact:
            dirs.add(_existing_dir(p.parent))
            if p.is_dir():
                dirs.add(p)
        return frozenset(dirs)

    def fingerprint(self) -> Fingerprint:
        """Stat of the config and of every rule file the loader would read now."""
        files, _ = rule_files(sorted(self.rule_paths))
        paths = sorted(self._exact | {_norm(f) for f in files})
        return {str(p): _stat(p) for p in paths}


class ConfigWatcher:
    """Calls ``on_change`` (the daemon's reload) when the config or a rule file is
    saved.  ``running`` gives the config in force; it may change under the watcher
    (a reload), and the watched paths follow it."""

    def __init__(
        self,
        running: Callable[[], LoadedConfig],
        on_change: Callable[[], Awaitable[None]],
        stop: asyncio.Event,
        *,
        tick: float = TICK_S,
        debounce_ms: int = DEBOUNCE_MS,
        step_ms: int = STEP_MS,
    ) -> None:
        self.running = running
        self.on_change = on_change
        self.stop = stop
        self.tick = tick
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self._seen: Fingerprint | None = None
        self._on_disk: tuple[tuple[int, int, int] | None, LoadedConfig | None] = (None, None)

    def targets(self) -> WatchTargets:
        loaded = self.running()
        return WatchTargets.of(loaded.path, [loaded, self._config_on_disk(loaded.path)])

    def _config_on_disk(self, path: Path) -> LoadedConfig | None:
        """The config file as it is now, if it loads; parsed again only when it changed."""
        key = _stat(path)
        if key is None or key != self._on_disk[0]:
            try:
                loaded: LoadedConfig | None = load_config(path)
            except MailfilerError:
                loaded = None  # the reload reports it; the config in force still names what to watch
            self._on_disk = (key, loaded)
        return self._on_disk[1]

    async def run(self) -> None:
        """Watch until ``stop`` is set.  Never raises: a failure is logged and the
        watch starts again after a pause."""
        # a watch that worked once resets the pause: healthy_after=0
        backoff = RetryPolicy(initial=RETRY_MIN_S, max=RETRY_MAX_S, healthy_after=0).backoff()
        while not self.stop.is_set():
            try:
                await self._watch()
                backoff.healthy()
            except asyncio.CancelledError:
                raise
            except Exception:  # a broken watcher must not take the daemon down
                delay = backoff.failed()
                log.error(
                    "watching the config and rule files failed; retrying in %.0f s",
                    delay,
                    exc_info=True,
                    extra={"event": "config-watch-error"},
                )
                await retrypolicy.wait(delay, self.stop)

    async def _watch(self) -> None:
        """One awatch over the current directories; returns when they change (or on stop)."""
        targets = self.targets()
        dirs = targets.directories()
        if self._seen is None:
            self._seen = targets.fingerprint()
        log.info(
            "watching the config and %s for changes (%s)",
            plural(len(targets.rule_paths), "rule path"),
            plural(len(dirs), "folder"),
            extra={"event": "config-watch"},
        )

        def keep(_change: watchfiles.Change, path: str) -> bool:
            return targets.relevant(path)

        async for batch in watchfiles.awatch(
            *dirs,
            watch_filter=keep,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=self.stop,  # the rust side polls it, so stopping never waits for a tick
            recursive=False,
            rust_timeout=max(1, int(self.tick * 1000)),
            yield_on_timeout=True,
        ):
            # an empty batch is the idle tick: reload only if the fingerprint moved
            # (a change that fell between two sets of watches)
            now = targets.fingerprint()
            if batch or now != self._seen:
                # taken before the reload: a save during it shows up as a difference next time
                self._seen = now
                paths = sorted({p for _, p in batch})
                log.debug("changed: %s", ", ".join(paths) or "(seen by stat)", extra={"event": "config-changed"})
                await self.on_change()
                targets = self.targets()
                # paths the reload just added to the watch (a newly listed rule folder)
                # count as read by it; paths already watched keep their stat from
                # before it, so a save during the reload still shows
                seen = self._seen
                self._seen = {p: seen.get(p, st) for p, st in targets.fingerprint().items()}
            else:
                targets = self.targets()
            if targets.directories() != dirs:
                return  # a reload named other rule paths, or a rule folder came or went
