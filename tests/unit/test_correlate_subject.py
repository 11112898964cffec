from __future__ import annotations

import pytest

from mailfiler.tracking.correlate import format_token, is_forward, subject_key, token_regex


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        ("Re: Invoice 4711", "invoice 4711"),
        ("RE: re:  Invoice   4711", "invoice 4711"),
        ("SV: VS: Offert", "offert"),
        ("Aw: Wg: Angebot", "angebot"),
        ("Re[2]: Meeting", "meeting"),
        ("Fwd: Re: Meeting", "meeting"),
        ("Out of office: Meeting", "out of office: meeting"),
        ("", ""),
    ],
)
def test_subject_key(subject: str, key: str) -> None:
    assert subject_key(subject) == key


def test_forwards() -> None:
    assert is_forward("Fwd: x") and is_forward("VS: x") and is_forward("WG: x") and is_forward("TR: x")
    assert not is_forward("Re: x") and not is_forward("Forward planning")


def test_token_round_trip() -> None:
    token = format_token("CRM", 1234)
    assert token == "CRM:0001234"
    found = token_regex("CRM").search(f"Re: Offer {token} for Contoso")
    assert found and int(found.group(1)) == 1234
    assert token_regex("CRM").search("XCRM:0001234") is None
