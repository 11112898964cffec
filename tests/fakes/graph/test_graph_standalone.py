"""``python -m tests.servers.graph --users FILE`` serves a tenant on its own."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[3]


def test_runs_on_its_own_with_a_users_file(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps({
        "apps": [{"client_id": "app-1", "secret": "pw"}],
        "users": [{"upn": "adele@contoso.onmicrosoft.com", "folders": ["Inbox/Clients/Acme"], "messages": {"Inbox/Clients/Acme": 3}}],
    }))  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.graph", "--users", str(users), "--tls-dir", str(tmp_path / "tls")],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    with proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(4)]
            authority = re.search(r"authority: (\S+)", lines[0])
            assert authority, lines
            verify = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.crt"))
            token = httpx.post(f"{authority[1]}/oauth2/v2.0/token", verify=verify, timeout=10, data={
                "grant_type": "client_credentials", "client_id": "app-1", "client_secret": "pw",
                "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]  # fmt: skip
            base = authority[1].rsplit("/", 1)[0] + "/v1.0/users/adele@contoso.onmicrosoft.com"
            with httpx.Client(verify=verify, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
                inbox = client.get(f"{base}/mailFolders/inbox/childFolders").json()["value"][0]
                acme = client.get(f"{base}/mailFolders/{inbox['id']}/childFolders").json()["value"][0]
                assert acme["displayName"] == "Acme" and acme["totalItemCount"] == 3
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
    assert proc.returncode == 0
