"""The Dovecot test server itself: missing binaries, user isolation, TLS files."""

from __future__ import annotations

import pytest

import tests.servers.dovecot as dovecot_module
from tests.servers.dovecot import DovecotServer, ImapUser


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_without_dovecot_tests_skip_or_fail_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type) -> None:
    monkeypatch.setattr(dovecot_module, "find_binary", lambda name: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install dovecot-imapd dovecot-lmtpd"):
        dovecot_module._check_installed()


def test_each_test_user_sees_only_its_own_mail(dovecot: DovecotServer, imap_user: ImapUser) -> None:
    other = dovecot.add_user()
    try:
        with imap_user.client() as mine, other.client() as theirs:
            mine.append("INBOX", b"Subject: mine\r\n\r\nx\r\n")
            assert len(mine.uids("INBOX")) == 1
            assert theirs.uids("INBOX") == []
    finally:
        dovecot.remove_user_mail(other.name)


def test_the_server_offers_what_the_imap_tests_rely_on(dovecot: DovecotServer, imap_user: ImapUser) -> None:
    caps = set(dovecot.capabilities_after_login(imap_user))
    assert {"IDLE", "NOTIFY", "CONDSTORE", "QRESYNC", "MOVE", "UIDPLUS", "ESEARCH"} <= caps
    assert dovecot.tls is not None and dovecot.tls.ca_file.is_file()
    assert len(str(dovecot.base / "run" / "imap-login")) < 100  # unix socket paths stay short
