"""How to reach and log in to one IMAP mailbox: :class:`ImapSettings`, and the
TLS context made from them (implicit TLS and STARTTLS alike)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from mailfiler.util.secrets import load_client_cert

TlsMode = Literal["implicit", "starttls", "none"]


@dataclass(frozen=True)
class ImapSettings:
    """How to reach and log in to one IMAP mailbox."""

    host: str
    port: int = 993
    username: str = ""
    password: str = field(default="", repr=False)  # never in logs or tracebacks
    #: where the password (or token) comes from at each login, when not fixed:
    #: a password command or an OAuth2 token helper (tokens expire)
    secret: Callable[[], str] | None = field(default=None, repr=False)
    #: login: LOGIN with a password; xoauth2: AUTHENTICATE XOAUTH2 with a token
    mechanism: Literal["login", "xoauth2"] = "login"
    tls: TlsMode = "implicit"
    #: PEM file of the CA(s) to trust instead of the system store
    ca_file: str | None = None
    #: a TLS client certificate (PEM; with its key, or the key in ``client_key``)
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    #: False only for a loopback test server with a certificate nobody signed
    verify_tls: bool = True
    #: seconds any single IMAP command may take (reset while data flows)
    timeout: float = 30.0
    #: seconds to connect, greet, negotiate TLS and log in
    connect_timeout: float = 15.0
    #: re-issue IDLE this often (RFC 2177 says < 29 min; NATs drop idle flows sooner)
    idle_renew: float = 300.0
    #: servers without NOTIFY: folders beyond ``max_idle`` are checked this often
    poll_interval: float = 15.0
    #: with NOTIFY: a STATUS sweep of every watched folder this often, as a safety net
    #: (10 s: Dovecot's NOTIFY misses some changes until its own 30 s idle check;
    #: a STATUS per folder bounds tracking delay for those to about this)
    sweep_interval: float = 10.0
    #: with NOTIFY, on a server with LIST-STATUS: every watched folder's STATUS in
    #: one command this often (Dovecot's NOTIFY sometimes goes quiet for up to its
    #: 30 s mailbox_idle_check_interval; see bench/README.md); 0 turns it off
    quick_sweep: float = 2.0
    #: ... and this often while the mailbox is busy (a push or a change seen in the
    #: last BUSY_WINDOW seconds: Dovecot's NOTIFY goes quiet right after activity)
    busy_sweep: float = 0.5
    #: servers without NOTIFY: at most this many IDLE connections (one folder each)
    max_idle: int = 3
    #: use NOTIFY when the server offers it (False forces the IDLE + poll strategy)
    use_notify: bool = True
    #: (tracked, failed) IMAP keywords to mark messages with, e.g. ("$Tracked",
    #: "$TrackFailed"); None (the default) never writes to the mailbox
    keywords: tuple[str, str] | None = None
    #: track by tag is on: NOTIFY also subscribes to flag changes (a tag set pushes a pass)
    flag_changes: bool = False
    #: tag passes use CONDSTORE where offered (False: the search every pass, as without it)
    tag_condstore: bool = True

    def where(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


def ssl_context(settings: ImapSettings) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    if settings.client_cert is not None:
        load_client_cert(ctx, settings.client_cert, settings.client_key)
    if not settings.verify_tls:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
