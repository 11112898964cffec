"""The config loader: every problem reported at once, at its exact FILE:LINE:COL."""

from __future__ import annotations

import dataclasses
import hashlib
import textwrap
from pathlib import Path

import pytest

from mailfiler.config import ENV_VAR, LoadedConfig, Problem, load_config, sqlite_path
from mailfiler.errors import ConfigError, NoConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "mailfiler.example.yaml"

# A valid config; tests append to it or edit it.  Line numbers are 1-based.
BASE = """\
database: sqlite:///db/mailfiler.db
state_dir: state
mailboxes:
  - name: alice
    owner: alice@example.com
    maildir: Maildir
    tracked_folders:
      - folder: Tracked/Contoso
        regarding: account:contoso
"""


def write(tmp_path: Path, text: str, name: str = "mailfiler.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    """Load *text*; return its problems as (line, col, message), checking the error's headline."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    n = len(err.problems)
    assert err.message == f"{n} problem{'s' if n != 1 else ''} in {path}"
    assert all(p.file == str(path) for p in err.problems)
    return [(p.line, p.col, p.message) for p in err.problems]


def only(tmp_path: Path, text: str) -> tuple[int, int, str]:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


# --- the example -------------------------------------------------------------


def test_example_config_loads() -> None:
    loaded = load_config(EXAMPLE)
    cfg = loaded.config
    assert loaded.path == EXAMPLE
    assert loaded.text_sha256 == hashlib.sha256(EXAMPLE.read_bytes()).hexdigest()
    assert cfg.database.startswith("sqlite:////")  # made absolute
    assert sqlite_path(cfg.database) == REPO / "state" / "mailfiler.db"
    assert cfg.state_dir == REPO / "state"
    [mb] = cfg.mailboxes
    assert (mb.name, mb.owner, mb.maildir, mb.layout, mb.create_missing_folders) == (
        "alice",
        "alice@example.com",
        REPO / "state" / "Maildir",
        "maildir++",
        True,
    )
    assert [(tf.folder, tf.regarding) for tf in mb.tracked_folders] == [
        ("Tracked/Contoso", "account:contoso"),
        ("Tracked/Fabrikam", "account:fabrikam"),
        ("Cases/CAS-01001", "case:CAS-01001"),
        ("Tracked/Unfiled", None),
    ]
    refs = {f"{r.entity}:{r.key}": r for r in cfg.records}
    assert {"account:contoso", "account:fabrikam", "contact:bob.smith", "case:CAS-01001"} <= set(refs)
    assert refs["account:contoso"].domains == ["contoso.com"]
    assert refs["contact:bob.smith"].parent == "account:contoso"
    assert refs["case:CAS-01001"].parent == "account:contoso"
    assert any(r.entity == "lead" for r in cfg.records)


def test_loaded_config_is_frozen(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, BASE))
    assert isinstance(loaded, LoadedConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.path = tmp_path  # type: ignore[misc]


def test_problem_str() -> None:
    assert str(Problem("/etc/m.yaml", 3, 7, "boom")) == "/etc/m.yaml:3:7: boom"


# --- finding the file --------------------------------------------------------


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE)
    monkeypatch.setenv(ENV_VAR, str(path))
    assert load_config().path == path
    # an explicit path wins over the environment
    other = write(tmp_path, BASE.replace("state_dir: state", "state_dir: other"), "other.yaml")
    assert load_config(other).config.state_dir == tmp_path / "other"


def test_no_path_and_no_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(NoConfigError) as info:
        load_config()
    assert "--config FILE" in str(info.value)
    assert ENV_VAR in str(info.value)


def test_relative_config_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, BASE)
    monkeypatch.chdir(tmp_path)
    loaded = load_config("mailfiler.yaml")
    assert loaded.path == tmp_path / "mailfiler.yaml"
    assert loaded.config.state_dir == tmp_path / "state"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value) == f"config file {tmp_path / 'nope.yaml'} does not exist"
    assert info.value.problems == []


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, BASE)

    # chmod 0 does not stop root (tests may run as root in containers): fake the refusal
    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError, match="permission denied"):
        load_config(path)


# --- YAML-level problems -----------------------------------------------------


def test_yaml_syntax_error_position(tmp_path: Path) -> None:
    text = BASE + "  - name: bob\n    owner: [bob@example.com\n"
    line, col, msg = only(tmp_path, text)
    assert msg.startswith("YAML syntax error: ")
    assert (line, col) == (12, 1)  # the flow list is still open at the end of the file


def test_yaml_syntax_error_bad_indentation(tmp_path: Path) -> None:
    text = "database: sqlite:///x.db\nstate_dir: state\n  oops: 1\n"
    assert only(tmp_path, text)[:2] == (3, 7)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    assert only(tmp_path, text) == (
        1,
        1,
        "the file is empty: expected a mapping with at least database: and state_dir:",
    )


@pytest.mark.parametrize(("text", "found"), [("- a\n- b\n", "a list"), ("just words\n", "a single value")])
def test_top_level_not_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    line, col, msg = only(tmp_path, text)
    assert (line, col) == (1, 1)
    assert msg.startswith("the top level must be a mapping") and msg.endswith(f"found {found}")


def test_duplicate_keys(tmp_path: Path) -> None:
    text = BASE.replace("state_dir: state\n", "state_dir: state\nstate_dir: other\n").replace(
        "    maildir: Maildir\n", "    maildir: Maildir\n    owner: bob@example.com\n"
    )
    assert problems(tmp_path, text) == [
        (3, 1, "duplicate key 'state_dir' (first on line 2)"),
        (8, 5, "mailboxes[0]: duplicate key 'owner' (first on line 6)"),
    ]


def test_unsupported_tag_merge_key_and_recursive_alias(tmp_path: Path) -> None:
    text = BASE + "    create_missing_folders: !!binary aGVsbG8=\n" + "limits:\n  <<: {max_message_bytes: 1}\n"
    text += "rules: &r [*r]\n"
    assert problems(tmp_path, text) == [
        (10, 29, "mailboxes[0].create_missing_folders: unsupported YAML tag !!binary"),
        (12, 3, "limits: merge keys (<<) are not supported"),
        (13, 12, "rules[0]: an alias refers to a node that contains it"),
    ]


def test_problem_in_an_aliased_value_points_at_the_alias(tmp_path: Path) -> None:
    text = BASE.replace("state_dir: state", "state_dir: &s state").replace("owner: alice@example.com", "owner: *s")
    assert only(tmp_path, text) == (5, 12, "mailboxes[0].owner: owner 'state' is not an e-mail address")


def test_plain_yaml_scalars(tmp_path: Path) -> None:
    text = BASE.replace("    maildir: Maildir\n", "    maildir: Maildir\n    create_missing_folders: yes\n")
    text += "limits:\n  max_message_bytes: 0x100\n"
    cfg = load_config(write(tmp_path, text)).config
    assert cfg.mailboxes[0].create_missing_folders is True
    assert cfg.limits.max_message_bytes == 256


# --- schema problems ---------------------------------------------------------


def test_unknown_key_points_at_the_key_with_a_suggestion(tmp_path: Path) -> None:
    text = BASE.replace("    tracked_folders:", "    tracked_folder:")
    assert only(tmp_path, text) == (
        7,
        5,
        "mailboxes[0]: unknown key 'tracked_folder' (did you mean 'tracked_folders'?)",
    )


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path: Path) -> None:
    text = BASE + "colour: blue\n"
    line, col, msg = only(tmp_path, text)
    assert (line, col) == (10, 1)
    assert msg.startswith("unknown key 'colour' (expected one of: database, state_dir, ")


def test_unknown_key_deep_inside(tmp_path: Path) -> None:
    text = BASE + "        regardin: x\n"
    assert only(tmp_path, text) == (
        10,
        9,
        "mailboxes[0].tracked_folders[0]: unknown key 'regardin' (did you mean 'regarding'?)",
    )


def test_field_error_names_the_path_without_pydantic_noise(tmp_path: Path) -> None:
    text = BASE + "      - folder: Tracked/Other\n        regarding: contoso\n"
    assert only(tmp_path, text) == (
        11,
        20,
        "mailboxes[0].tracked_folders[1].regarding: expected ENTITY:KEY such as account:contoso, got 'contoso'",
    )


def test_missing_required_key_points_at_the_item(tmp_path: Path) -> None:
    text = BASE.replace("    owner: alice@example.com\n", "")
    assert only(tmp_path, text) == (4, 5, "mailboxes[0]: missing required key 'owner'")


def test_missing_top_level_key(tmp_path: Path) -> None:
    text = BASE.replace("state_dir: state\n", "")
    assert only(tmp_path, text) == (1, 1, "missing required key 'state_dir'")


def test_wrong_type(tmp_path: Path) -> None:
    text = BASE + "limits: [1, 2]\n"
    assert only(tmp_path, text) == (10, 9, "limits: expected a mapping (key: value lines), found a list")


# --- checks across items -----------------------------------------------------


def test_duplicate_mailbox_name(tmp_path: Path) -> None:
    text = BASE + "  - name: alice\n    owner: a2@example.com\n    maildir: Maildir2\n"
    assert only(tmp_path, text) == (
        10,
        11,
        "mailboxes[1].name: mailbox name 'alice' is already used by mailboxes[0] (line 4)",
    )


def test_duplicate_maildir(tmp_path: Path) -> None:
    # ./Maildir and Maildir are the same directory once resolved
    text = BASE + "  - name: bob\n    owner: bob@example.com\n    maildir: ./Maildir\n"
    assert only(tmp_path, text) == (
        12,
        14,
        f"mailboxes[1].maildir: maildir '{tmp_path / 'Maildir'}' is already used by mailboxes[0] (line 6)",
    )


def test_duplicate_folder_in_a_mailbox(tmp_path: Path) -> None:
    text = BASE + "      - folder: Tracked/Other\n      - folder: Tracked/Contoso\n"
    assert only(tmp_path, text) == (
        11,
        17,
        "mailboxes[0].tracked_folders[2].folder: folder 'Tracked/Contoso' is listed twice in this mailbox (first on line 8)",
    )


def test_same_folder_in_two_mailboxes_is_fine(tmp_path: Path) -> None:
    text = BASE + "  - name: bob\n    owner: bob@example.com\n    maildir: M2\n    tracked_folders:\n"
    text += "      - folder: Tracked/Contoso\n"
    assert len(load_config(write(tmp_path, text)).config.mailboxes) == 2


def test_regarding_with_unknown_entity_type(tmp_path: Path) -> None:
    text = BASE.replace("regarding: account:contoso", "regarding: acount:contoso")
    assert only(tmp_path, text) == (
        9,
        20,
        "mailboxes[0].tracked_folders[0].regarding: unknown entity type 'acount' (did you mean 'account'?)",
    )


def test_records_with_unknown_entity_type(tmp_path: Path) -> None:
    text = BASE + textwrap.dedent("""\
        records:
          - entity: project
            key: apollo
            name: Apollo
          - entity: contact
            key: bob
            name: Bob
            parent: projekt:apollo
        """)
    assert problems(tmp_path, text) == [
        (11, 13, "records[0].entity: unknown entity type 'project' (declare it under entities:)"),
        (17, 13, "records[1].parent: unknown entity type 'projekt' (declare it under entities:)"),
    ]


def test_declared_entity_types_are_known(tmp_path: Path) -> None:
    text = BASE.replace("regarding: account:contoso", "regarding: project:apollo")
    text += "entities:\n  - name: project\nrecords:\n  - {entity: project, key: apollo, name: Apollo}\n"
    cfg = load_config(write(tmp_path, text)).config
    assert "project" in cfg.entity_types()


def test_entity_type_declared_twice(tmp_path: Path) -> None:
    text = BASE + "entities:\n  - name: project\n  - name: project\n"
    assert only(tmp_path, text) == (12, 11, "entities[1].name: entity type 'project' is declared twice")


@pytest.mark.parametrize(
    ("line", "col", "text"),
    [(2, 12, 'state_dir: ""'), (1, 11, "database: sqlite:///")],
)
def test_empty_paths(tmp_path: Path, line: int, col: int, text: str) -> None:
    key = text.split(":")[0]
    source = BASE.replace("database: sqlite:///db/mailfiler.db", "database: sqlite:///x.db")
    source = "\n".join(text if ln.startswith(key + ":") else ln for ln in source.splitlines()) + "\n"
    got = only(tmp_path, source)
    assert got[:2] == (line, col)
    assert got[2].startswith(f"{key}: ")


def test_many_problems_are_all_reported_in_file_order(tmp_path: Path) -> None:
    text = """\
database: mysql://x
state_dir: state
state_dir: again
mailboxes:
  - name: alice
    owner: nobody
    maildir: Maildir
    layout: mbox
    tracked_folders:
      - folder: /abs
      - folder: A
      - folder: A
        regarding: ticket:1
  - name: alice
    owner: a@example.com
    maildir: M2
    colour: red
"""
    found = problems(tmp_path, text)
    assert [(line, col) for line, col, _ in found] == [
        (1, 11),
        (3, 1),
        (6, 12),
        (8, 13),
        (10, 17),
        (12, 17),
        (13, 20),
        (14, 11),
        (17, 5),
    ]
    messages = [msg for _, _, msg in found]
    assert messages[0].startswith("database: database must be a URL")
    assert messages[3] == "mailboxes[0].layout: Input should be 'maildir++' or 'fs'"
    assert "must be a relative path" in messages[4]
    assert "listed twice" in messages[5]
    assert "unknown entity type 'ticket'" in messages[6]
    assert "already used" in messages[7]
    assert messages[8].startswith("mailboxes[1]: unknown key 'colour'")


# --- paths -------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    confdir = tmp_path / "etc" / "mailfiler"
    confdir.mkdir(parents=True)
    text = BASE.replace("state_dir: state", "state_dir: ../../state") + "rules:\n  - ../rules\n  - /abs/rules\n"
    path = write(confdir, text)
    monkeypatch.chdir("/")  # the current directory must not matter
    cfg = load_config(path).config
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.mailboxes[0].maildir == confdir / "Maildir"
    assert cfg.rules == [tmp_path / "etc" / "rules", Path("/abs/rules")]
    assert cfg.database == f"sqlite:///{confdir / 'db' / 'mailfiler.db'}"
    assert sqlite_path(cfg.database) == confdir / "db" / "mailfiler.db"


def test_absolute_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = BASE.replace("sqlite:///db/mailfiler.db", "sqlite:////var/lib/mailfiler/m.db")
    text = text.replace("state_dir: state", "state_dir: ~/state").replace("maildir: Maildir", "maildir: ~/Maildir")
    cfg = load_config(write(tmp_path, text)).config
    assert cfg.database == "sqlite:////var/lib/mailfiler/m.db"
    assert cfg.state_dir == tmp_path / "home" / "state"
    assert cfg.mailboxes[0].maildir == tmp_path / "home" / "Maildir"


def test_sqlite_url_round_trips_through_the_store(tmp_path: Path) -> None:
    # the store decodes %-escapes; the resolved URL must decode to the resolved path
    from mailfiler.store.db import make_database

    text = BASE.replace("sqlite:///db/mailfiler.db", "sqlite:///my%20db/mail 100%.db")
    cfg = load_config(write(tmp_path, text)).config
    assert sqlite_path(cfg.database) == tmp_path / "my db" / "mail 100%.db"
    assert make_database(cfg.database).database == str(tmp_path / "my db" / "mail 100%.db")


def test_postgres_url_is_untouched(tmp_path: Path) -> None:
    url = "postgresql://mailfiler@db.example.com:5432/mailfiler"
    cfg = load_config(write(tmp_path, BASE.replace("sqlite:///db/mailfiler.db", url))).config
    assert cfg.database == url
    assert sqlite_path(cfg.database) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////abs/m.db", Path("/abs/m.db")),
        ("sqlite:///rel/m.db", Path("rel/m.db")),
        ("sqlite:////abs/my%20mail.db", Path("/abs/my mail.db")),
        ("sqlite:///:memory:", None),
        ("postgres://u@h/db", None),
    ],
)
def test_sqlite_path(url: str, expected: Path | None) -> None:
    assert sqlite_path(url) == expected


# --- track by tag (issue 20) ----------------------------------------------------------


# track_tags on an IMAP mailbox (a Maildir has no tags); the lines stay where BASE has them
_TAGS_BASE = BASE.replace(
    "    maildir: Maildir\n", "    imap: {host: imap.example.com, username: alice, password_file: pw}\n"
)


def test_track_tags(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, _TAGS_BASE + "    track_tags: true\n"))
    tags = loaded.config.mailboxes[0].track_tags
    assert tags is not None
    assert (tags.tag, tags.set_regarding_prefix, tags.untrack_tag) == ("CRM", "CRM:", "CRM-untrack")
    assert load_config(write(tmp_path, _TAGS_BASE + "    track_tags: false\n")).config.mailboxes[0].track_tags is None
    got = only(tmp_path, _TAGS_BASE + "    track_tags: {tag: CRM, untrack_tag: crm}\n")
    assert got[0] == 10 and "both 'CRM'" in got[2]
    got = only(tmp_path, _TAGS_BASE + "    track_tags: {untrack_tag: 'CRM:off'}\n")
    assert "starts with set_regarding_prefix" in got[2]
    got = only(tmp_path, _TAGS_BASE + "    track_tags: {tag: ''}\n")
    assert "cannot be a tag" in got[2]
    got = only(tmp_path, _TAGS_BASE + "    track_tags: {untrack_folder: Tracked/Contoso}\n")
    assert got[0] == 10 and "is a tracked folder of this mailbox (line 8)" in got[2]


_TAGGED = """\
database: sqlite:///db/mailfiler.db
state_dir: state
mailboxes:
  - name: alice
    owner: alice@example.com
    {backend}
    track_tags: {{tag: {tag}}}
"""
_IMAP = "imap: {host: imap.example.com, username: alice, password_file: pw}"
_EWS = "ews: {url: 'https://mail.example.com/EWS/Exchange.asmx', username: alice@example.com, password_file: pw}"


def test_track_tags_take_what_the_backend_can_tag_with(tmp_path: Path) -> None:
    # an IMAP keyword is one atom; an Outlook category may hold spaces; a Maildir has no tags
    got = only(tmp_path, _TAGGED.format(backend=_IMAP, tag="'Follow up'"))
    assert got[0] == 7 and "cannot be a tag on IMAP" in got[2]
    assert load_config(write(tmp_path, _TAGGED.format(backend=_IMAP, tag="$label1"))).config.mailboxes[0].track_tags
    tags = load_config(write(tmp_path, _TAGGED.format(backend=_EWS, tag="'Follow up'"))).config.mailboxes[0].track_tags
    assert tags is not None and tags.tag == "Follow up"
    got = only(tmp_path, _TAGGED.format(backend="maildir: Maildir", tag="CRM"))
    assert got[0] == 7 and "a Maildir has no tags" in got[2]


def test_exchange_folders_spell_the_inbox_as_listed(tmp_path: Path) -> None:
    # EWS and Graph list the Inbox as INBOX and take Inbox/... for it: a tracked folder written
    # Inbox/Clients/Contoso is INBOX/Clients/Contoso everywhere (status, auto-tracking, the
    # server-rules check); IMAP children are case-sensitive and stay as written
    text = _TAGGED.replace("    track_tags: {{tag: {tag}}}\n", "") + (
        "    tracked_folders: [{{folder: Inbox/Clients/Contoso, regarding: 'account:contoso'}}]\n"
        "    track_tags: {{untrack_folder: inbox/Untrack}}\n"
    )
    ews = load_config(write(tmp_path, text.format(backend=_EWS))).config.mailboxes[0]
    assert ews.tracked_folders[0].folder == "INBOX/Clients/Contoso"
    assert ews.track_tags is not None and ews.track_tags.untrack_folder == "INBOX/Untrack"
    imap = load_config(write(tmp_path, text.format(backend=_IMAP))).config.mailboxes[0]
    assert imap.tracked_folders[0].folder == "Inbox/Clients/Contoso"


def test_sqlite_store_runs_wal_with_a_large_checkpoint_interval(tmp_path: Path) -> None:
    # the backfill's commits depend on these (store/db.py says why): a regression is silent otherwise
    from mailfiler.store.db import make_database

    db = make_database(f"sqlite:///{tmp_path / 'm.db'}")
    db.connect()
    try:
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert db.execute_sql("PRAGMA wal_autocheckpoint").fetchone()[0] == 10_000
    finally:
        db.close()
