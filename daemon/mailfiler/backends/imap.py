"""The IMAP backend's registry entry: the ``imap:`` config block and how it
becomes an :class:`mailfiler.sources.imap.ImapSource` (aioimaplib is imported
only when an IMAP mailbox is opened)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from mailfiler.backends import Backend
from mailfiler.config.base import LOOPBACK_HOSTS, Strict, resolve_path
from mailfiler.config.credentials import SECRET_KEYS, Credentials

if TYPE_CHECKING:
    from mailfiler.sources.imap import ImapSettings
    from mailfiler.sources.sieve.backend import SieveBackend
    from mailfiler.sources.sieve.managesieve import SieveSettings

_IMAP_KEYWORD = re.compile(r"^[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|~]+$")


def _imap_keyword(value: str) -> str:
    if not _IMAP_KEYWORD.match(value):
        raise ValueError(
            f'{value!r} is not an IMAP keyword: printable ASCII without spaces, ( ) {{ % * " \\ ], '
            "and no leading backslash (system flags such as \\Seen are never set)"
        )
    return value


class ImapKeywords(Strict):
    """The IMAP keywords that show tracking in the user's mail client."""

    tracked: Annotated[str, AfterValidator(_imap_keyword)] = Field(
        default="$Tracked", description="Set on every tracked message."
    )
    failed: Annotated[str, AfterValidator(_imap_keyword)] = Field(
        default="$TrackFailed", description="Set on a message kept aside in the shunt."
    )


class Imap(Credentials):
    """An IMAP mailbox.  Exactly one way to log in (the shared credential
    model; ``xoauth2_token_command`` is the older name of ``oauth2_token_command``)."""

    secret_key_names: ClassVar[tuple[str, ...]] = (*SECRET_KEYS, "xoauth2_token_command")

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: 993 with implicit TLS, else 143.")
    username: str = Field(min_length=1)
    xoauth2_token_command: list[str] | None = Field(
        default=None, description="The older name of oauth2_token_command (SASL XOAUTH2)."
    )
    tls: Literal["implicit", "starttls", "none"] = Field(default="implicit")
    ca_file: Path | None = Field(default=None, description="PEM file of the CA(s) to trust instead of the system's.")
    verify_tls: bool = Field(default=True, description="false only for a loopback test server.")
    timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds any one IMAP command may take.")
    keywords: ImapKeywords | None = Field(
        default=None,
        description="Mark tracked mail with $Tracked and shunted mail with $TrackFailed: true, or "
        "{tracked: NAME, failed: NAME}.  The one write mailfiler makes to a mailbox; off by default.",
    )

    @field_validator("keywords", mode="before")
    @classmethod
    def _keywords_switch(cls, value: object) -> object:
        if value is True:
            return {}
        if value is False:
            return None
        return value

    @property
    def keyword_names(self) -> tuple[str, str] | None:
        """(tracked, failed), or None when keywords are off."""
        return None if self.keywords is None else (self.keywords.tracked, self.keywords.failed)

    @model_validator(mode="after")
    def _checks(self) -> Imap:
        problem = self.credential_problem(required=True)
        if problem is not None:
            raise ValueError(problem)
        loopback = self.host.lower() in LOOPBACK_HOSTS
        if self.tls == "none" and not loopback:
            raise ValueError(
                f"tls: none sends the password in clear text; allowed only for a loopback host, not {self.host}"
            )
        if not self.verify_tls and not loopback:
            raise ValueError(f"verify_tls: false is allowed only for a loopback host, not {self.host}; use ca_file")
        return self

    @property
    def token_command(self) -> list[str] | None:
        return self.oauth2_token_command or self.xoauth2_token_command

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)


def imap_settings(cfg: Imap) -> ImapSettings:
    """Connection settings; secrets are read at each login, never stored here."""
    from mailfiler.sources.imap import ImapSettings

    secret = cfg.provider(f"imap login for {cfg.username}@{cfg.host}:")
    assert secret is not None  # the schema wants one
    return ImapSettings(
        host=cfg.host,
        port=cfg.effective_port,
        username=cfg.username,
        secret=secret,
        mechanism="xoauth2" if secret.mechanism == "oauth2" else "login",
        tls=cfg.tls,
        ca_file=str(cfg.ca_file) if cfg.ca_file else None,
        client_cert=cfg.client_cert,
        client_key=cfg.client_key,
        verify_tls=cfg.verify_tls,
        timeout=cfg.timeout,
        keywords=cfg.keyword_names,
    )


def _source(mailbox: Any) -> Any:
    import dataclasses

    from mailfiler.sources.imap import ImapSource

    settings = imap_settings(mailbox.backend_config)
    # track by tag: a flag change is pushed (NOTIFY FlagChange) to start a tag pass
    return ImapSource(dataclasses.replace(settings, flag_changes=mailbox.track_tags is not None))


def _resolve(cfg: Imap, base_dir: Path) -> Imap:
    return cfg.model_copy(
        update={
            "ca_file": resolve_path(cfg.ca_file, base_dir) if cfg.ca_file else None,
            **cfg.resolved_credentials(base_dir),
        }
    )


def _location(mailbox: Any) -> str:
    cfg: Imap = mailbox.backend_config
    return f"imap://{cfg.username}@{cfg.host}:{cfg.effective_port}"


def keyword_problem(name: str) -> str | None:
    """Why *name* cannot be an IMAP keyword (RFC 3501's atom), or None."""
    if any(c.isspace() or ord(c) < 32 or ord(c) > 126 for c in name) or any(c in name for c in '(){%*"\\]'):
        return f'{name!r} cannot be a tag on IMAP: a keyword is one ASCII word, none of ( ) {{ % * " \\ ]'
    return None


def sieve_settings(mailbox: Any) -> SieveSettings:
    """The ManageSieve login of the mailbox: the imap: one, on the server_rules.managesieve port and TLS."""
    from mailfiler.config.schema import ServerRules
    from mailfiler.errors import ServerRulesUnsupported
    from mailfiler.sources.sieve.managesieve import SieveSettings

    imap = imap_settings(mailbox.backend_config)
    ms = (mailbox.server_rules or ServerRules()).managesieve
    host = ms.host or imap.host
    if ms.tls == "none" and host.lower() not in LOOPBACK_HOSTS:
        raise ServerRulesUnsupported(
            f"mailbox {mailbox.name}: server_rules.managesieve.tls: none sends the password in clear text;"
            f" allowed only for a loopback host, not {host}"
        )
    return SieveSettings(
        host=host,
        port=ms.port,
        username=imap.username,
        secret=imap.secret,
        password=imap.password,
        mechanism="xoauth2" if imap.mechanism == "xoauth2" else "plain",
        tls=ms.tls,
        ca_file=imap.ca_file,
        verify_tls=imap.verify_tls,
        timeout=imap.timeout,
        connect_timeout=imap.connect_timeout,
    )


def _server_rules(mailbox: Any, separator: str | None) -> SieveBackend:
    """Sieve scripts over ManageSieve; mailfiler's rules in a script of their own (server_rules.script)."""
    from mailfiler.config.schema import ServerRules
    from mailfiler.sources.sieve.backend import SieveBackend

    script = (mailbox.server_rules or ServerRules()).script
    return SieveBackend(sieve_settings(mailbox), script=script, separator=separator)


BACKEND = Backend(
    kind="imap",
    config=Imap,
    description="An IMAP mailbox: host, username, how to log in, TLS.",
    noun="an IMAP mailbox",
    source=_source,
    location=_location,
    resolve=_resolve,
    server_rules=_server_rules,
    tag_name=keyword_problem,
)
