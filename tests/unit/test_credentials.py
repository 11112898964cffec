"""The one credential model (issue 21): password file, password command, OAuth2
token command (kept until it expires), client certificate, systemd credentials;
bounded commands, secrets never shown, secret files others can read warned about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailfiler.backends.imap import Imap, imap_settings
from mailfiler.config import load_config
from mailfiler.config.syncschema import SyncDav
from mailfiler.errors import ConfigError
from mailfiler.util.secrets import SecretProvider, SecretUnavailable, load_client_cert, run_secret_command

IMAP = {"host": "127.0.0.1", "username": "alice", "tls": "none"}


def script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o700)
    return [str(path)]


def test_a_token_with_a_lifetime_is_kept_until_it_expires(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    argv = script(
        tmp_path,
        "token",
        f"import json, pathlib; p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) + 1 if p.exists() else 1;"
        f" p.write_text(str(n)); print(json.dumps({{'access_token': f'tok{{n}}', 'expires_in': 3600}}))",
    )
    now = [1000.0]
    provider = SecretProvider("imap login for alice@h", oauth2_token_command=argv, clock=lambda: now[0])
    assert provider.mechanism == "oauth2"
    assert provider() == "tok1"
    now[0] += 3000
    assert provider() == "tok1"  # still valid: the command is not run again
    now[0] += 600  # within a minute of expiry: refreshed
    assert provider() == "tok2"
    provider.invalidate()  # the server refused it
    assert provider() == "tok3"
    assert "tok" not in repr(provider)


def test_a_plain_token_is_asked_for_at_each_login(tmp_path: Path) -> None:
    argv = script(tmp_path, "token", "import time; print('t%d' % time.monotonic_ns())")
    provider = SecretProvider("x", oauth2_token_command=argv)
    assert provider() != provider()


def test_a_hanging_command_is_stopped_with_its_children(tmp_path: Path) -> None:
    # the helper starts a child that keeps the output pipe open, then hangs
    argv = script(
        tmp_path,
        "hang",
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        " time.sleep(60)",
    )
    started = time.monotonic()
    with pytest.raises(SecretUnavailable, match=r"did not finish within 0.5 s"):
        run_secret_command(argv, what="imap login", timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_failing_command_says_so_without_its_output(tmp_path: Path) -> None:
    argv = script(tmp_path, "fail", "import sys; print('hunter2'); print('hunter2', file=sys.stderr); sys.exit(3)")
    with pytest.raises(SecretUnavailable) as info:
        SecretProvider("dav", password_command=argv)()
    assert "exited with status 3" in str(info.value) and "hunter2" not in str(info.value)
    with pytest.raises(SecretUnavailable, match="not found"):
        SecretProvider("dav", password_command=[str(tmp_path / "nope")])()
    bad_json = script(tmp_path, "badjson", "print('{\"token\": 1}')")
    with pytest.raises(SecretUnavailable, match="without an access_token"):
        SecretProvider("x", oauth2_token_command=bad_json)()


def test_systemd_credentials_are_expanded_at_read_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "imap-password").write_text("pw\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = imap_settings(Imap(**IMAP, password_file="${CREDENTIALS_DIRECTORY}/imap-password"))
    assert settings.secret is not None and settings.secret() == "pw"
    assert settings.mechanism == "login"


def test_every_name_of_the_token_command_logs_in_with_xoauth2(tmp_path: Path) -> None:
    argv = script(tmp_path, "token", "print('t')")
    for key in ("oauth2_token_command", "xoauth2_token_command"):
        settings = imap_settings(Imap(**IMAP, **{key: argv}))
        assert settings.mechanism == "xoauth2" and settings.secret is not None and settings.secret() == "t"
    with pytest.raises(ValueError, match="give exactly one of password_file, password_command, oauth2_token_command"):
        Imap(**IMAP, password_file="pw", oauth2_token_command=argv)
    with pytest.raises(ValueError, match="client_key needs client_cert"):
        Imap(**IMAP, password_file="pw", client_key="k.pem")


def test_dav_takes_the_same_credentials() -> None:
    url = "https://dav.example.com/a/"
    assert SyncDav(url=url, username="a", password_command=["pass", "dav"]).provider("dav") is not None
    token = SyncDav(url=url, oauth2_token_command=["helper"]).provider("dav")
    assert token is not None and token.mechanism == "oauth2"
    with pytest.raises(ValueError, match="give username: and password_file: together"):
        SyncDav(url=url, username="a")
    with pytest.raises(ValueError, match="at most one of"):
        SyncDav(url=url, username="a", password_file="p", password_command=["x"])


def test_a_client_certificate_that_cannot_be_read_is_a_clear_error(tmp_path: Path) -> None:
    import ssl

    ctx = ssl.create_default_context()
    with pytest.raises(SecretUnavailable, match="client_cert: cannot load"):
        load_client_cert(ctx, str(tmp_path / "missing.pem"), None)
    openssl = subprocess.run(["which", "openssl"], capture_output=True, text=True).stdout.strip()
    if not openssl:
        pytest.skip("openssl is needed to make a certificate")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=alice", "-days", "1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    load_client_cert(ctx, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


CONFIG = """\
database: sqlite:///state/m.db
state_dir: state
database_password_file: db.pw
mailboxes:
  - name: alice
    owner: alice@example.com
    imap: {host: 127.0.0.1, username: alice, tls: none, password_file: imap.pw}
"""


def _mf(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MAILFILER_CONFIG": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "mailfiler", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_config_check_warns_of_secret_files_others_can_read(tmp_path: Path) -> None:
    cfg = tmp_path / "mailfiler.yaml"
    cfg.write_text(CONFIG)
    for name in ("db.pw", "imap.pw"):
        (tmp_path / name).write_text("pw\n")
        (tmp_path / name).chmod(0o644)
    res = _mf("config", "check", config=cfg)
    assert res.returncode == 0, res.stderr
    assert f"database_password_file: {tmp_path / 'db.pw'} can be read by other users (mode 0644)" in res.stderr
    assert f"mailboxes[0].imap.password_file: {tmp_path / 'imap.pw'} can be read by other users" in res.stderr
    assert "chmod 600" in res.stderr
    (tmp_path / "imap.pw").chmod(0o600)
    data = json.loads(_mf("config", "check", "--json", config=cfg).stdout)
    assert data["valid"] and len(data["warnings"]) == 1 and "db.pw" in data["warnings"][0]


def test_two_ways_to_log_in_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "mailfiler.yaml"
    cfg.write_text(CONFIG.replace("password_file: imap.pw}", "password_file: imap.pw, password_command: [x]}"))
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    (problem,) = info.value.problems
    assert str(problem) == (
        f"{cfg}:7:11: mailboxes[0].imap: give exactly one of password_file, password_command, oauth2_token_command,"
        " xoauth2_token_command (got password_file, password_command)"
    )


def test_a_dav_secret_file_is_found_relative_to_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "mailfiler.yaml"
    cfg.write_text(
        CONFIG.replace("database_password_file: db.pw\n", "")
        + "    sync:\n      caldav: {url: 'https://dav.example.com/a/', username: a, password_file: secrets/dav.pw}\n"
    )
    (tmp_path / "imap.pw").write_text("pw\n")
    (tmp_path / "imap.pw").chmod(0o600)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "dav.pw").write_text("pw\n")
    (tmp_path / "secrets" / "dav.pw").chmod(0o640)
    loaded = load_config(cfg)
    assert loaded.config.mailboxes[0].sync.caldav.password_file == str(tmp_path / "secrets" / "dav.pw")
    data = json.loads(_mf("config", "check", "--json", config=cfg).stdout)
    assert [w.split(":")[0] for w in data["warnings"]] == ["mailboxes[0].sync.caldav.password_file"]
