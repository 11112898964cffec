"""The config's route: (per tracked folder) and server_rules: (per mailbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailfiler.backends.imap import sieve_settings
from mailfiler.config import load_config
from mailfiler.errors import ServerRulesUnsupported
from mailfiler.serverrules.runner import routes_of, watched
from tests.test_config import problems, write

IMAP = """\
database: sqlite:///db/mailfiler.db
state_dir: state
mailboxes:
  - name: alice
    owner: alice@example.com
    imap: {host: imap.example.com, username: alice, password_file: pw, ca_file: ca.pem}
    tracked_folders:
      - folder: Tracked/Contoso
        regarding: account:contoso
"""


def test_route_and_server_rules_load_normalised(tmp_path: Path) -> None:
    text = IMAP + (
        "        route:\n"
        "          from_domains: ['@Contoso.COM', eu.contoso.com]\n"
        "          from_addresses: [Bob@Gmail.com]\n"
        "          subject_contains: ['Invoice \"Q4\"']\n"
        "    server_rules: {managesieve: {port: 4190}, script: crm-rules, interval: 60}\n"
    )
    mb = load_config(write(tmp_path, text)).config.mailboxes[0]
    [route] = routes_of(mb)
    assert route.from_domains == ("contoso.com", "eu.contoso.com")
    assert route.from_addresses == ("bob@gmail.com",)
    assert route.subject_contains == ('Invoice "Q4"',)
    assert route.rule_name == "mailfiler: Tracked/Contoso"
    assert watched(mb)
    s = sieve_settings(mb)
    # the login, TLS and CA are the imap: ones; ManageSieve's port and STARTTLS by default
    assert (s.host, s.port, s.username, s.tls, s.ca_file) == (
        "imap.example.com",
        4190,
        "alice",
        "starttls",
        str(tmp_path / "ca.pem"),
    )


def test_a_mailbox_without_route_or_server_rules_is_not_watched(tmp_path: Path) -> None:
    mb = load_config(write(tmp_path, IMAP)).config.mailboxes[0]
    assert not watched(mb) and routes_of(mb) == []


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("{}", "a route needs at least one of"),
        ("{from_domains: ['bob@contoso.com']}", "is not a domain"),
        ("{from_addresses: [contoso.com]}", "is not an e-mail address"),
        ("{subject_contains: ['']}", "give some text"),
        ("{from_domain: [contoso.com]}", "from_domains"),
    ],
)
def test_bad_routes_are_reported_with_their_line(tmp_path: Path, route: str, message: str) -> None:
    found = problems(tmp_path, IMAP + f"        route: {route}\n")
    assert len(found) == 1 and found[0][0] == 10 and message in found[0][2], found


def test_a_route_on_a_maildir_mailbox_is_an_error(tmp_path: Path) -> None:
    text = IMAP.replace(
        "    imap: {host: imap.example.com, username: alice, password_file: pw, ca_file: ca.pem}\n",
        "    maildir: Maildir\n",
    )
    found = problems(tmp_path, text + "        route: {from_domains: [contoso.com]}\n")
    assert found == [
        (10, 16, "mailboxes[0].tracked_folders[0].route: route: writes a rule on a mail server; a Maildir has none")
    ]


def test_plain_text_managesieve_only_on_loopback(tmp_path: Path) -> None:
    mb = load_config(write(tmp_path, IMAP + "    server_rules: {managesieve: {tls: none}}\n")).config.mailboxes[0]
    with pytest.raises(ServerRulesUnsupported, match="only for a loopback host"):
        sieve_settings(mb)
