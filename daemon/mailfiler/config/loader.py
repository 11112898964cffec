"""Load, check and normalise the YAML configuration file.

Every problem in the file is reported at once, each as ``FILE:LINE:COL:
message`` so that an admin (or an editor) can jump straight to it.  To know
those positions we compose the YAML node tree ourselves and build plain
Python values from it while recording where every value and every key came
from; pydantic errors, which only carry a key path, are then mapped back to
a line and column.

Relative paths in the file are resolved against the directory holding the
file, so an example config can say ``state_dir: ../state`` and work from any
current directory.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import yaml
from pydantic import BaseModel, ValidationError

from mailfiler.backends import Backend, registry
from mailfiler.config import schema
from mailfiler.config.base import parse_ref
from mailfiler.config.base import resolve_path as _resolve
from mailfiler.config.base import secret_path as _secret_path
from mailfiler.config.credentials import Credentials
from mailfiler.config.yamlpos import MAP, Builder, KeyPath, Problem, compose, describe_value, is_empty
from mailfiler.config.yamlpos import fmt_path as _fmt
from mailfiler.config.yamlpos import path_prefix as _prefix
from mailfiler.errors import ConfigError, NoConfigError

__all__ = ["ENV_VAR", "LoadedConfig", "Problem", "load_config", "sqlite_path"]

#: environment variable naming the config file when no path is passed
ENV_VAR = "MAILFILER_CONFIG"

_SQLITE_PREFIX = "sqlite:///"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated configuration and where it came from."""

    #: absolute path of the config file
    path: Path
    #: the validated config, with every path made absolute
    config: schema.Config
    #: SHA-256 of the file bytes, to notice when the file changed
    text_sha256: str


def load_config(path: str | os.PathLike[str] | None = None) -> LoadedConfig:
    """Read, check and normalise the config file at *path*.

    Without *path*, the file named by ``$MAILFILER_CONFIG`` is read.  Raises
    :class:`NoConfigError` if neither names a file, and :class:`ConfigError`
    (with every problem in ``.problems``) if the file is unreadable or
    invalid.
    """
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or None
    if path is None:
        raise NoConfigError(f"no configuration file given: pass --config FILE or set {ENV_VAR}=FILE")
    shown = Path(path).expanduser()  # as the user named it, for messages
    abspath = Path(os.path.normpath(shown.absolute()))
    raw = _read_bytes(shown)
    config = _parse(raw, str(shown), abspath.parent)
    return LoadedConfig(path=abspath, config=config, text_sha256=hashlib.sha256(raw).hexdigest())


def sqlite_path(database_url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL, or None.

    None for PostgreSQL URLs and for SQLite's ``:memory:``.  ``PATH`` is what
    follows the third slash, so ``sqlite:////abs/file.db`` is absolute and
    ``sqlite:///rel/file.db`` is relative (the loader has already made it
    absolute in a loaded config).  %-escapes are decoded, as
    :func:`mailfiler.store.db.make_database` does.
    """
    if not database_url.startswith(_SQLITE_PREFIX):
        return None
    rest = unquote(database_url[len(_SQLITE_PREFIX) :])
    if not rest or rest == ":memory:":
        return None
    return Path(rest).expanduser()


# --- reading ----------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        reason = "does not exist"
    except IsADirectoryError:
        reason = "is a directory, not a file"
    except PermissionError:
        reason = "cannot be read: permission denied"
    except OSError as exc:
        reason = f"cannot be read: {exc.strerror or exc}"
    # A daemon's working directory is rarely where the admin thinks: show both.
    shown = str(path) if path.is_absolute() else f"{path} ({path.absolute()})"
    raise ConfigError(f"config file {shown} {reason}", path=str(path))


def _fail(file: str, problems: list[Problem]) -> ConfigError:
    problems = sorted(problems, key=lambda p: (p.line, p.col))
    n = len(problems)
    return ConfigError(f"{n} problem{'s' if n != 1 else ''} in {file}", problems=problems, path=file)


def _parse(raw: bytes, file: str, base_dir: Path) -> schema.Config:
    """Bytes to validated, normalised config; raises ConfigError."""
    root, problem = compose(raw, file)
    if problem is not None:
        raise _fail(file, [problem])
    if is_empty(root):
        msg = "the file is empty: expected a mapping with at least database: and state_dir:"
        raise _fail(file, [Problem(file, 1, 1, msg)])
    if not isinstance(root, yaml.MappingNode) or root.tag != MAP:
        found = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        msg = f"the top level must be a mapping of keys (database:, state_dir:, mailboxes:, ...), found {found}"
        raise _fail(file, [Problem(file, 1, 1, msg)])

    built = Builder(file)
    data = built.build(root, ())
    problems = list(built.problems)
    config: schema.Config | None = None
    try:
        config = schema.Config.model_validate(data)
    except ValidationError as exc:
        problems += _pydantic_problems(exc, built)
    problems += _cross_checks(data, built, base_dir)
    if problems:
        raise _fail(file, problems)
    assert config is not None
    return _resolve_paths(config, base_dir)


# --- pydantic errors to problems ---------------------------------------------


def _pydantic_problems(exc: ValidationError, built: Builder) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        if any(loc[:i] in built.poisoned for i in range(len(loc) + 1)):
            continue  # already reported as a YAML problem at that spot
        kind = err["type"]
        if kind == "extra_forbidden":
            key = loc[-1]
            line, col = built.keys.get(loc) or built.pos(loc)
            message = _prefix(loc[:-1]) + _unknown_key(str(key), _field_names(loc[:-1]))
        elif kind == "missing":
            known = built.known(loc[:-1])
            line, col = built.pos(known)
            message = _prefix(known) + f"missing required key {loc[-1]!r}"
        else:
            known = built.known(loc)
            line, col = built.pos(known)
            message = _prefix(known) + _readable(err)
        problems.append(Problem(built.file, line, col, message))
    return problems


def _readable(err: Any) -> str:
    msg: str = err["msg"]
    for noise in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(noise)
    if err["type"] in ("path_type", "path_parsing"):
        msg = "expected a file system path (a string)"
    elif err["type"] in ("list_type", "model_type", "model_attributes_type", "dict_type"):
        want = "a list (lines starting with '- ')" if err["type"] == "list_type" else "a mapping (key: value lines)"
        msg = f"expected {want}, found {describe_value(err.get('input'))}"
    return msg


def _unknown_key(key: str, fields: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f"unknown key {key!r} (did you mean {close[0]!r}?)"
    if fields:
        return f"unknown key {key!r} (expected one of: {', '.join(fields)})"
    return f"unknown key {key!r}"


def _field_names(loc: Sequence[str | int]) -> list[str]:
    """Field names of the schema model found at *loc* (empty if none)."""
    tp: Any = schema.Config
    for part in loc:
        tp = _unwrap_optional(tp)
        if isinstance(part, int):
            if typing.get_origin(tp) is not list:
                return []
            tp = typing.get_args(tp)[0]
        elif isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        else:
            return []
    tp = _unwrap_optional(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


# --- checks across items -----------------------------------------------------


def _cross_checks(data: dict[str, Any], built: Builder, base_dir: Path) -> list[Problem]:
    """Checks that span several items, each pointing at the offending item.

    They run on the raw data, not on a validated model, so that they are
    reported together with any schema problems; items the schema rejects
    are skipped here by only looking at values of the expected type.
    """
    problems: list[Problem] = []

    def add(path: KeyPath, message: str) -> None:
        line, col = built.pos(path)
        problems.append(Problem(built.file, line, col, f"{_prefix(path)}{message}"))

    def line_of(path: KeyPath) -> int:
        return built.pos(path)[0]

    # Entity types: built-in plus declared; declared twice is a mistake.
    known = list(schema.BUILTIN_ENTITIES)
    for i, ent in _items(data.get("entities")):
        name = ent.get("name")
        if isinstance(name, str):
            if name in known and name not in schema.BUILTIN_ENTITIES:
                add(("entities", i, "name"), f"entity type {name!r} is declared twice")
            known.append(name)

    def check_entity(path: KeyPath, entity: str) -> None:
        if entity in known:
            return
        close = difflib.get_close_matches(entity, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "declare it under entities:"
        add(path, f"unknown entity type {entity!r} ({hint})")

    def check_ref(path: KeyPath, ref: Any) -> None:
        if not isinstance(ref, str):
            return
        try:
            entity, _ = parse_ref(ref)
        except ValueError:
            return  # the schema reports malformed references
        check_entity(path, entity)

    # Paths that must not be empty: pydantic turns "" into Path("."), which
    # would silently mean "the config directory".
    if _is_blank(data.get("state_dir")):
        add(("state_dir",), "state_dir must not be empty")
    rules = data.get("rules")
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if _is_blank(rule):
            add(("rules", i), "rule path must not be empty")
    db = data.get("database")
    if isinstance(db, str) and db.startswith(_SQLITE_PREFIX) and _is_blank(db[len(_SQLITE_PREFIX) :]):
        hint = "use sqlite:///PATH (relative to this file) or sqlite:////ABS/PATH"
        add(("database",), f"the sqlite URL names no file: {hint}")

    names: dict[str, KeyPath] = {}
    taken: dict[tuple[str, Any], KeyPath] = {}  # (kind, identity): what two mailboxes must not share
    for i, mb in _items(data.get("mailboxes")):
        name = mb.get("name")
        if isinstance(name, str):
            if name in names:
                first = names[name]
                used = f"{_fmt(first[:2])} (line {line_of(first)})"
                add(("mailboxes", i, "name"), f"mailbox name {name!r} is already used by {used}")
            else:
                names[name] = ("mailboxes", i, "name")
        for kind, backend in registry().items():
            if kind not in mb:
                continue
            here_b: KeyPath = ("mailboxes", i, kind)
            try:
                identity = backend.identity(mb[kind], base_dir)
            except ValueError as exc:
                add(here_b, str(exc))
                continue
            if identity is None:
                continue
            if (kind, identity) in taken:
                first = taken[(kind, identity)]
                add(here_b, f"{kind} {identity!r} is already used by {_fmt(first[:2])} (line {line_of(first)})")
            else:
                taken[(kind, identity)] = here_b
        backends = [b for kind, b in registry().items() if kind in mb]
        folders: dict[str, KeyPath] = {}
        for j, tf in _items(mb.get("tracked_folders")):
            folder = tf.get("folder")
            if isinstance(folder, str) and folder.strip():
                here: KeyPath = ("mailboxes", i, "tracked_folders", j, "folder")
                folder = folder.strip()  # as the schema normalises it
                if folder in folders:
                    first_line = line_of(folders[folder])
                    add(here, f"folder {folder!r} is listed twice in this mailbox (first on line {first_line})")
                else:
                    folders[folder] = here
            check_ref(("mailboxes", i, "tracked_folders", j, "regarding"), tf.get("regarding"))
            if tf.get("route") is not None and len(backends) == 1 and backends[0].server_rules is None:
                where = ("mailboxes", i, "tracked_folders", j, "route")
                add(where, f"route: writes a rule on a mail server; {backends[0].noun} has none")
        tags = mb.get("track_tags")
        if len(backends) == 1 and tags not in (None, False):
            _check_tags(add, ("mailboxes", i, "track_tags"), tags, backends[0])
        untrack = tags.get("untrack_folder") if isinstance(tags, dict) else None
        if isinstance(untrack, str) and untrack.strip() in folders:
            # a tracked folder tracks what is filed there: it cannot untrack it too
            first_line = line_of(folders[untrack.strip()])
            add(
                ("mailboxes", i, "track_tags", "untrack_folder"),
                f"{untrack!r} is a tracked folder of this mailbox (line {first_line}); the untrack folder must not be",
            )

    for i, rec in _items(data.get("records")):
        entity = rec.get("entity")
        if isinstance(entity, str):
            check_entity(("records", i, "entity"), entity)
        check_ref(("records", i, "parent"), rec.get("parent"))
    return problems


def _check_tags(add: Callable[[KeyPath, str], None], where: KeyPath, tags: Any, backend: Backend) -> None:
    """``track_tags:`` against what the mailbox's backend can tag with."""
    if backend.tag_name is None:
        add(where, f"tracks tagged mail, but {backend.noun} has no tags (IMAP keywords, Outlook categories)")
        return
    if not isinstance(tags, dict):
        return
    for key in ("tag", "set_regarding_prefix", "untrack_tag"):
        value = tags.get(key)
        problem = backend.tag_name(value) if isinstance(value, str) and value else None
        if problem is not None:
            add((*where, key), problem)


def _items(value: Any) -> Iterable[tuple[int, dict[str, Any]]]:
    """(index, item) for the mapping items of a list; anything else is skipped."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict):
                yield i, item


def _is_blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


# --- path resolution ---------------------------------------------------------


def _resolve_db_url(url: str, base_dir: Path) -> str:
    if not url.startswith(_SQLITE_PREFIX):
        return url
    rest = unquote(url[len(_SQLITE_PREFIX) :])
    if rest == ":memory:":
        return url
    # sqlite:///rel -> "rel"; sqlite:////abs -> "/abs"; the result always has
    # four slashes.  Re-quoted so that the store's unquote() gives this path back.
    return _SQLITE_PREFIX + quote(str(_resolve(Path(rest), base_dir)), safe="/:")


def _resolve_mailbox(mb: Any, base_dir: Path) -> Any:
    backend = registry()[mb.backend]
    return mb.model_copy(update={mb.backend: backend.resolve(mb.backend_config, base_dir)})


def _resolve_credentials(value: Any, base_dir: Path) -> Any:
    """Every credential block's files made absolute, wherever it sits (a
    backend, a DAV server), so that warnings and reads look at the same file."""
    if isinstance(value, list):
        items = [_resolve_credentials(v, base_dir) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if not isinstance(value, BaseModel):
        return value
    updates = {}
    for name in type(value).model_fields:
        old = getattr(value, name)
        new = _resolve_credentials(old, base_dir)
        if new is not old:
            updates[name] = new
    if isinstance(value, Credentials):
        own = value.resolved_credentials(base_dir)
        updates.update({k: v for k, v in own.items() if v != getattr(value, k)})
    return value.model_copy(update=updates) if updates else value


def _resolve_paths(config: schema.Config, base_dir: Path) -> schema.Config:
    mailboxes = [_resolve_credentials(_resolve_mailbox(mb, base_dir), base_dir) for mb in config.mailboxes]
    return config.model_copy(
        update={
            "database": _resolve_db_url(config.database, base_dir),
            "state_dir": _resolve(config.state_dir, base_dir),
            "database_password_file": _secret_path(config.database_password_file, base_dir),
            "rules": [_resolve(r, base_dir) for r in config.rules],
            "mailboxes": mailboxes,
        }
    )


def _top_level_lines(raw: bytes, keys: Sequence[str]) -> dict[str, Any]:
    """``key: value`` lines at the top level (column 0) of a file that is not
    valid YAML as a whole, each read as YAML on its own; the first of each key."""
    found: dict[str, Any] = {}
    text = raw.decode("utf-8", "replace")
    for line in text.splitlines():
        key = line.partition(":")[0]
        if key not in keys or key in found:
            continue
        try:
            value = yaml.safe_load(line)
        except yaml.YAMLError:
            continue
        if isinstance(value, dict) and isinstance(value.get(key), str):
            found[key] = value[key]
    return found


def store_settings_lenient(path: str | os.PathLike[str] | None) -> tuple[str, str | None] | None:
    """(database URL, database_password_file) read from a config that may be
    invalid, so ``mailfiler status`` can still show the store while the admin
    fixes the file.  None if even that cannot be read."""
    if path is None:
        path = os.environ.get(ENV_VAR)
    if not path:
        return None
    cfg_path = Path(path).expanduser().absolute()
    try:
        raw = cfg_path.read_bytes()
    except OSError:
        return None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("database"), str):
        # a YAML syntax error anywhere (a bad indent ten lines down) makes the whole
        # file unreadable: the store settings are then read from their own lines
        data = _top_level_lines(raw, ("database", "database_password_file"))
    if not isinstance(data.get("database"), str):
        return None
    base_dir = cfg_path.parent
    url = _resolve_db_url(data["database"], base_dir)
    pw_file = data.get("database_password_file")
    if isinstance(pw_file, str) and "$" not in pw_file:
        pw_file = str(_resolve(Path(pw_file), base_dir))
    return url, pw_file if isinstance(pw_file, str) else None
