"""The ``ews:`` block: what it accepts, what it refuses, and the settings it gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mailfiler.backends import registry
from mailfiler.backends.ews import BACKEND as EWS_BACKEND
from mailfiler.backends.ews import Ews, ews_settings

URL = "https://mail.example.com/EWS/Exchange.asmx"


def ews(**kw: object) -> Ews:
    return Ews.model_validate({"url": URL, "username": "EXAMPLE\\svc", "password_file": "/x", **kw})


def test_registered_and_defaults() -> None:
    assert registry()["ews"] is EWS_BACKEND
    cfg = ews(impersonate="alice@example.com")
    assert cfg.auth == "ntlm" and cfg.address == "alice@example.com"
    settings = ews_settings(cfg)
    assert settings.impersonate and settings.mailbox == "alice@example.com"
    assert settings.categories is None  # the one write to a mailbox: off by default
    assert ews_settings(ews(mailbox="a@example.com", categories=True)).categories == (
        "Tracked in CRM",
        "Not tracked (see CRM)",
    )
    assert settings.version is None and settings.verify_tls


def test_categories_switch_and_names() -> None:
    assert ews(mailbox="a@example.com", categories=False).categories is None
    named = ews(mailbox="a@example.com", categories={"tracked": "CRM ✓", "failed": "CRM ✗"})
    assert ews_settings(named).categories == ("CRM ✓", "CRM ✗")
    with pytest.raises(ValidationError, match="empty"):
        ews(mailbox="a@example.com", categories={"tracked": " "})


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"impersonate": "not an address"}, "not an SMTP address"),
        ({}, "say which mailbox"),
        ({"mailbox": "a@example.com", "url": "http://mail.example.com/EWS/Exchange.asmx"}, "clear text"),
        ({"mailbox": "a@example.com", "verify_tls": False}, "loopback"),
        ({"mailbox": "a@example.com", "auth": "oauth2"}, "oauth2_token_command"),
        ({"mailbox": "a@example.com", "version": "2007"}, "version"),
        ({"mailbox": "a@example.com", "password_command": ["pass"]}, "exactly one"),
    ],
)
def test_refused(extra: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ews(**extra)


def test_loopback_http_version_pin_and_location(tmp_path: Path) -> None:
    cfg = ews(url="http://127.0.0.1:8080/EWS/Exchange.asmx", username="alice@example.com", version="2019",
              ca_file="ca.pem", impersonate="none")  # fmt: skip
    assert cfg.address == "alice@example.com" and cfg.impersonate is None
    resolved = EWS_BACKEND.resolve(cfg, tmp_path)
    assert resolved.ca_file == tmp_path / "ca.pem"

    class Mailbox:
        backend_config = cfg

    assert EWS_BACKEND.location(Mailbox()) == "ews://alice@example.com@127.0.0.1:8080"
