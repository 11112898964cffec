"""Shared by the EWS benchmarks: the fake Exchange and a config for it."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import benchconfig  # noqa: E402
import yaml  # noqa: E402

SVC = "svc@example.com"


def users(mailboxes: list[str], folders: list[str]) -> list[dict]:
    return [
        *({"smtp": m, "password": "pw-user", "folders": folders} for m in mailboxes),
        {"smtp": SVC, "username": "svc", "password": "pw-svc", "impersonate": ["*"]},
    ]


def write_ews_config(base: Path, url: str, mailboxes: list[str], folders: list[str], *, writer: str) -> Path:
    """bench/benchconfig.py's mailbox on each of ``mailboxes``, through EWS under impersonation."""
    cfg = benchconfig.write_config(base, "unused", folders, writer=writer)
    data = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    secret = base / "ews.password"
    secret.write_text("pw-svc\n", encoding="utf-8")
    secret.chmod(0o600)
    template = data["mailboxes"][0]
    template.pop("maildir", None)
    template.pop("layout", None)
    out = []
    for n, address in enumerate(mailboxes):
        mb = dict(template, name=f"m{n}" if len(mailboxes) > 1 else template["name"], owner=address)
        mb["ews"] = {"url": url, "username": "svc", "password_file": str(secret), "auth": "ntlm",
                     "impersonate": address, "version": "2016", "categories": True}  # fmt: skip
        out.append(mb)
    data["mailboxes"] = out
    cfg.write_text(
        f"# written by {writer}\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )
    return cfg
