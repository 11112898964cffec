"""The graph: config block (checks with FILE:LINE:COL errors, paths made absolute, no secret
in status) and the CLI on a Graph mailbox: `mailfiler login` by device code (the token cache
0600, then used by `folders list` through /me), `folders create`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mailfiler.config.loader import load_config
from mailfiler.errors import ConfigError
from tests.graph.helpers import APP_ID, UPN, tenant
from tests.graph.world import graph_block
from tests.servers.graph import GraphFake
from tests.servers.tls import make_tls


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[GraphFake]:
    (tmp_path / "tls").mkdir()
    with GraphFake(make_tls(tmp_path / "tls")) as fake:
        tenant(fake, ["INBOX/Clients/Acme"])
        yield fake


def write(tmp_path: Path, block: dict[str, Any], folders: list[str] = ("INBOX/Clients/Acme",)) -> Path:  # type: ignore[assignment]
    cfg = {
        "database": "sqlite:///state/mailfiler.db",
        "state_dir": "state",
        "mailboxes": [
            {"name": "adele", "owner": UPN, "graph": block, "tracked_folders": [{"folder": f} for f in folders]}
        ],
    }
    path = tmp_path / "mailfiler.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def run(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MAILFILER_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "mailfiler", "--config", str(config), *args],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
    )  # fmt: skip


BASE = {"tenant": "contoso.onmicrosoft.com", "client_id": APP_ID}


@pytest.mark.parametrize(
    ("block", "says"),
    [
        ({**BASE, "password_file": "s"}, "needs user"),
        ({**BASE, "user": UPN, "password_file": "s", "client_cert": "c.pem"}, "not both"),
        ({**BASE, "user": UPN}, "token_cache"),
        ({**BASE, "user": UPN, "password_file": "s", "oauth2_token_command": ["x"]}, "at most one"),
        ({**BASE, "user": UPN, "password_file": "s", "authority": "http://login.example.com"}, "https"),
        ({**BASE, "user": UPN, "password_file": "s", "poll": {"min": 10, "max": 5}}, "poll.max"),
        ({**BASE, "user": UPN, "password_file": "s", "colour": "blue"}, "colour"),
        ({**BASE, "user": UPN, "password_file": "s", "webhook": {"url": "http://crm.example.com/g"}}, "https"),
    ],
)
def test_config_problems(tmp_path: Path, block: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, block))
    (problem,) = err.value.problems
    assert says in problem.message and problem.line > 0, problem


def test_config_paths_are_absolute_and_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, {**BASE, "user": UPN, "password_file": "secret", "ca_file": "ca.pem",
                                       "categories": True})).config  # fmt: skip
    g = cfg.mailboxes[0].backend_config
    assert g.password_file == str(tmp_path / "secret") and g.ca_file == tmp_path / "ca.pem"
    assert g.category_names == ("Tracked in CRM", "Not tracked (see CRM)")
    assert (g.poll.min, g.poll.max) == (2.0, 60.0) and g.authority == "https://login.microsoftonline.com"


def test_login_by_device_code_then_folders_through_me(graph: GraphFake, tmp_path: Path) -> None:
    block = graph_block(graph, tmp_path)
    for key in ("password_file", "user"):
        block.pop(key)
    block["token_cache"] = "state/graph-adele.json"
    config = write(tmp_path, block, ["INBOX/Clients/Acme", "INBOX/Clients/New"])
    graph.identity.device_interval = 1
    approved: list[str] = []

    def approve() -> None:
        deadline = time.time() + 30
        while time.time() < deadline and not approved:
            for code in graph.identity.pending_user_codes():
                graph.identity.approve(code, UPN)
                approved.append(code)
            time.sleep(0.05)

    helper = threading.Thread(target=approve)
    helper.start()
    res = run(config, "config", "check")
    assert "run `mailfiler login adele`" in res.stdout + res.stderr, res.stdout + res.stderr
    res = run(config, "login", "adele")
    helper.join()
    assert res.returncode == 0, res.stderr
    assert approved and approved[0] in res.stderr and "devicelogin" in res.stderr
    assert f"signed in as {UPN}" in res.stdout
    cache = tmp_path / "state" / "graph-adele.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    token_text = cache.read_text()
    assert "refresh_token" in token_text.lower() or "RefreshToken" in token_text
    assert "eyJ" not in res.stdout + res.stderr  # no token printed

    res = run(config, "folders", "list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["folder"]: r for r in json.loads(res.stdout)}
    assert rows["INBOX/Clients/Acme"]["exists"] and not rows["INBOX/Clients/New"]["exists"]
    res = run(config, "folders", "create")
    assert res.returncode == 0, res.stderr
    assert graph.folder(UPN, "Inbox/Clients/New").display_name == "New"


def test_login_of_an_app_only_mailbox_needs_nothing(graph: GraphFake, tmp_path: Path) -> None:
    res = run(write(tmp_path, graph_block(graph, tmp_path)), "login", "adele")
    assert res.returncode != 0 and "app-only" in res.stderr


def test_the_daemon_log_has_no_line_per_http_request() -> None:
    import logging

    from mailfiler.service.logsetup import setup_logging

    root = logging.getLogger()
    saved = (
        list(root.handlers),
        root.level,
        {n: logging.getLogger(n).level for n in ("httpx", "httpcore", "msal", "peewee", "watchfiles")},
    )
    try:
        setup_logging("plain", "info")
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("msal").isEnabledFor(logging.INFO)
        setup_logging("plain", "debug")
        assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
