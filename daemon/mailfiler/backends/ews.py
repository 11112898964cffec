"""The Exchange Server (EWS) backend's registry entry: the ``ews:`` config block
and how it becomes an :class:`mailfiler.sources.ews.EwsSource` (exchangelib is
imported only when an EWS mailbox is opened)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mailfiler.backends import Backend
from mailfiler.config.base import LOOPBACK_HOSTS, Strict, resolve_path
from mailfiler.config.categories import OutlookCategories, categories_switch, category_problem
from mailfiler.config.credentials import Credentials
from mailfiler.sources.base import inbox_spelled_out

if TYPE_CHECKING:
    from mailfiler.sources.ews.rules import EwsRules

_SMTP = re.compile(r"^[^@\s]+@[^@\s]+$")
_BUILD = re.compile(r"^15\.\d+\.\d+\.\d+$")


class EwsSyncBack(Strict):
    """Which of the mailbox's own Exchange folders are sync-back collections."""

    contacts: bool | str = Field(
        default=False,
        description="true: the mailbox's Contacts folder; a name: a contacts folder of that name below it "
        "(made at the first sync); false: none.",
    )
    calendar: bool | str = Field(
        default=False,
        description="true: the mailbox's Calendar; a name: a calendar of that name below it; false: none.",
    )

    @field_validator("contacts", "calendar")
    @classmethod
    def _folder_name(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and (not value.strip() or "/" in value):
            raise ValueError(f"a folder name (no '/'), true or false, not {value!r}")
        return value


class Ews(Credentials):
    """An Exchange Server mailbox through Exchange Web Services."""

    url: str = Field(
        min_length=1, description="The EWS endpoint, e.g. https://mail.example.com/EWS/Exchange.asmx (no autodiscover)."
    )
    username: str = Field(min_length=1, description="The login: DOMAIN\\user, user@domain or a service account.")
    auth: Literal["ntlm", "basic", "oauth2"] = Field(
        default="ntlm", description="ntlm or basic with a password; oauth2 with oauth2_token_command (a bearer token)."
    )
    mailbox: str | None = Field(
        default=None, description="SMTP address of the mailbox (default: the username when it is an address)."
    )
    impersonate: str | None = Field(
        default=None,
        description="SMTP address of the mailbox a service account acts on through ApplicationImpersonation.",
    )
    ca_file: Path | None = Field(default=None, description="PEM file of the CA(s) to trust instead of the system's.")
    verify_tls: bool = Field(default=True, description="false only for a loopback test server.")
    version: str | None = Field(
        default=None, description="Pin the server version (2013, 2016, 2019, se, or a build 15.x.y.z); else one probe."
    )
    timeout: float = Field(default=60.0, gt=0, le=600, description="Seconds any one EWS call may take.")
    max_connections: int = Field(
        default=4, ge=1, le=32, description="EWS requests in flight at once to this server (per login)."
    )
    categories: OutlookCategories | None = Field(
        default=None,
        description="Mark tracked mail with the Outlook category `Tracked in CRM` and shunted mail with "
        "`Not tracked (see CRM)`: true, or {tracked: NAME, failed: NAME}.  The one write mailfiler makes "
        "to a mailbox; off by default, as IMAP keywords and Graph categories are.",
    )

    sync_back: EwsSyncBack | None = Field(
        default=None,
        description="Sync the CRM's contacts and appointments with this mailbox's Exchange Contacts and "
        "Calendar, under the mailbox's sync: policies: {contacts: true, calendar: true} (or a folder name "
        "below each).  Off by default.",
    )

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_switch(cls, value: object) -> object:
        return categories_switch(value)

    @field_validator("impersonate", "mailbox")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        if value is not None and value.lower() != "none" and not _SMTP.match(value):
            raise ValueError(f"{value!r} is not an SMTP address")
        return None if value is None or value.lower() == "none" else value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        from mailfiler.sources.ews.settings import VERSIONS

        if value is not None and value.lower() not in VERSIONS and not _BUILD.match(value):
            raise ValueError(f"version: one of {', '.join(VERSIONS)} or a build such as 15.1.2507.6, not {value!r}")
        return value

    @model_validator(mode="after")
    def _checks(self) -> Ews:
        problem = self.credential_problem(required=True)
        if problem is not None:
            raise ValueError(problem)
        if (self.auth == "oauth2") != (self.oauth2_token_command is not None):
            raise ValueError("auth: oauth2 goes with oauth2_token_command, ntlm and basic with a password")
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"url: an https:// EWS endpoint, not {self.url!r}")
        loopback = parts.hostname.lower() in LOOPBACK_HOSTS
        if parts.scheme == "http" and not loopback:
            raise ValueError(
                f"url: http:// sends the password in clear text; allowed only for a loopback host, not {parts.hostname}"
            )
        if not self.verify_tls and not loopback:
            raise ValueError(
                f"verify_tls: false is allowed only for a loopback host, not {parts.hostname}; use ca_file"
            )
        if self.address is None:
            raise ValueError("say which mailbox: impersonate: or mailbox: (an SMTP address), or a username that is one")
        return self

    @property
    def address(self) -> str | None:
        """The SMTP address of the mailbox acted on."""
        for candidate in (self.impersonate, self.mailbox, self.username):
            if candidate and _SMTP.match(candidate):
                return candidate
        return None


def ews_settings(cfg: Ews) -> Any:
    """Connection settings; secrets are read at each login, never stored here."""
    from mailfiler.sources.ews.settings import EwsSettings

    secret = cfg.provider(f"EWS login for {cfg.username} at {cfg.url}:")
    assert secret is not None  # the schema wants one
    assert cfg.address is not None
    return EwsSettings(
        url=cfg.url,
        username=cfg.username,
        secret=secret,
        auth=cfg.auth,
        mailbox=cfg.address,
        impersonate=cfg.impersonate is not None,
        ca_file=str(cfg.ca_file) if cfg.ca_file else None,
        verify_tls=cfg.verify_tls,
        version=cfg.version,
        timeout=cfg.timeout,
        max_connections=cfg.max_connections,
        categories=None if cfg.categories is None else cfg.categories.names,
    )


def _source(mailbox: Any) -> Any:
    import dataclasses

    from mailfiler.sources.ews import EwsSource

    cfg: Ews = mailbox.backend_config
    settings = dataclasses.replace(
        ews_settings(cfg),
        # track by tag: mailfiler's own categories never track; a change anywhere wakes a tag pass
        own_categories=(cfg.categories or OutlookCategories()).names,
        tag_events=mailbox.track_tags is not None,
    )
    return EwsSource(settings)


def _resolve(cfg: Ews, base_dir: Path) -> Ews:
    return cfg.model_copy(
        update={
            "ca_file": resolve_path(cfg.ca_file, base_dir) if cfg.ca_file else None,
            **cfg.resolved_credentials(base_dir),
        }
    )


def _location(mailbox: Any) -> str:
    cfg: Ews = mailbox.backend_config
    how = f" as {cfg.username}" if cfg.impersonate else ""
    return f"ews://{cfg.address}@{urlsplit(cfg.url).netloc}{how}"


def _server_rules(mailbox: Any, separator: str | None) -> EwsRules:
    """GetInboxRules/UpdateInboxRules (sources/ews/rules.py)."""
    from mailfiler.sources.ews.rules import EwsRules

    return EwsRules(ews_settings(mailbox.backend_config))


def _targets(mailbox: Any, base_dir: Path) -> list[Any]:
    """The mailbox's Exchange contacts folder and calendar, when ``sync_back`` names them."""
    cfg: Ews = mailbox.backend_config
    wanted = cfg.sync_back
    if wanted is None or (wanted.contacts is False and wanted.calendar is False):
        return []
    from mailfiler.sources.ews.calendar import CalendarTarget
    from mailfiler.sources.ews.contacts import ContactsTarget

    settings = ews_settings(cfg)
    out: list[Any] = []
    if wanted.contacts is not False:
        out.append(ContactsTarget(settings, None if wanted.contacts is True else wanted.contacts))
    if wanted.calendar is not False:
        out.append(CalendarTarget(settings, None if wanted.calendar is True else wanted.calendar))
    return out


def _check(mailbox: Any) -> list[str]:
    cfg: Ews = mailbox.backend_config
    wanted = cfg.sync_back
    if wanted is not None and (wanted.contacts is not False or wanted.calendar is not False) and mailbox.sync is None:
        return [
            f"ews.sync_back of mailbox {mailbox.name} syncs nothing without a sync: block "
            "(its filters, fields and conflicts apply to the Exchange folders); add `sync: {}`"
        ]
    return []


BACKEND = Backend(
    kind="ews",
    config=Ews,
    description="An Exchange Server mailbox through EWS: url, username, how to log in, impersonate, ca_file.",
    noun="an Exchange mailbox",
    source=_source,
    location=_location,
    resolve=_resolve,
    server_rules=_server_rules,
    targets=_targets,
    check=_check,
    tag_name=category_problem,
    folder_name=inbox_spelled_out,
)
