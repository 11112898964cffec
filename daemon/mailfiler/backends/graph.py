"""The Microsoft Graph backend's registry entry (Exchange Online, Microsoft 365):
the ``graph:`` config block and how it becomes a
:class:`mailfiler.sources.graph.source.GraphSource` (httpx and msal are
imported only when a Graph mailbox is opened)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from mailfiler.backends import Backend
from mailfiler.config.base import LOOPBACK_HOSTS, Strict, resolve_path
from mailfiler.config.categories import OutlookCategories, categories_switch, category_problem
from mailfiler.config.credentials import Credentials
from mailfiler.sources.base import inbox_spelled_out

if TYPE_CHECKING:
    from mailfiler.sources.graph.rules import GraphRules

DEFAULT_AUTHORITY = "https://login.microsoftonline.com"
DEFAULT_GRAPH = "https://graph.microsoft.com/v1.0"


def _https(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" and not (parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS):
        raise ValueError(f"{what} must be an https:// URL, not {value!r}")
    return value.rstrip("/")


class GraphPoll(Strict):
    """Adaptive delta polling: ``min`` seconds after a change, stretching to ``max`` when quiet."""

    min: float = Field(default=2.0, ge=0.05, le=600, description="Seconds between polls while mail arrives.")
    max: float = Field(
        default=60.0, ge=0.05, le=3600, description="Seconds between polls of an idle folder (60 requests/hour)."
    )

    @model_validator(mode="after")
    def _order(self) -> GraphPoll:
        if self.max < self.min:
            raise ValueError(f"poll.max ({self.max}) is below poll.min ({self.min})")
        return self


class GraphWebhook(Strict):
    """Change notifications: Graph POSTs to ``url`` (public HTTPS, e.g. a reverse proxy),
    which forwards to the local listener; polling goes on as the safety net."""

    url: str = Field(min_length=1, description="The public https:// URL Graph sends notifications to.")
    listen_host: str = Field(default="127.0.0.1", description="Where the local listener listens.")
    listen_port: int = Field(default=8435, ge=1, le=65535)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _https(value, "webhook.url")


class GraphWindow(Strict):
    """The span of the calendar that sync-back compares occurrence by occurrence (Graph's
    calendar view): changes to events wholly outside it are seen at the next full listing."""

    days_back: int = Field(default=30, ge=0, le=3650, description="Days before today.")
    days_ahead: int = Field(default=365, ge=1, le=3650, description="Days after today.")


class GraphSyncBack(Strict):
    """Sync-back into the mailbox itself: CRM contacts and appointments to the user's Outlook
    contacts and calendar and back, under the mailbox's ``sync:`` policies.  Needs the
    Contacts.ReadWrite and Calendars.ReadWrite permissions."""

    contacts: bool = Field(default=False, description="Sync the default contacts folder.")
    calendar: bool = Field(default=False, description="Sync the primary calendar.")
    calendar_window: GraphWindow = Field(default_factory=GraphWindow)


class Graph(Credentials):
    """A Microsoft 365 mailbox through Microsoft Graph.

    App-only (an organisation's app registration): ``user`` and a client
    secret (``password_file`` or ``password_command``) or a certificate
    (``client_cert`` + ``client_key``).  One user by device code: no secret,
    a ``token_cache`` file, and ``mailfiler login MAILBOX`` once."""

    tenant: str = Field(min_length=1, description="The tenant's id or domain (contoso.onmicrosoft.com).")
    client_id: str = Field(min_length=1, description="The app registration's application (client) id.")
    authority: str = Field(default=DEFAULT_AUTHORITY, description="The Microsoft identity platform's host.")
    graph_url: str = Field(default=DEFAULT_GRAPH, description="The Graph root (a national cloud's differs).")
    user: str | None = Field(
        default=None,
        description="The mailbox's UPN or id (needed app-only; signed in by device code, default: the user's own).",
    )
    token_cache: Path | None = Field(
        default=None,
        description="Device-code sign-in: the token cache file (mode 0600), e.g. in state_dir;"
        " written by `mailfiler login MAILBOX`.",
    )
    ca_file: Path | None = Field(default=None, description="PEM file of the CA(s) to trust instead of the system's.")
    timeout: float = Field(default=60.0, gt=0, le=600, description="Seconds any one request may take.")
    poll: GraphPoll = Field(default_factory=GraphPoll)
    webhook: GraphWebhook | None = Field(
        default=None, description="Change notifications to a public HTTPS URL (default: delta polling only)."
    )
    categories: OutlookCategories | None = Field(
        default=None,
        description="Mark tracked and shunted mail with Outlook categories: true, or {tracked: NAME, failed: NAME}."
        "  Needs Mail.ReadWrite; off by default (Mail.Read is enough then).",
    )
    sync_back: GraphSyncBack | None = Field(
        default=None,
        description="Sync CRM contacts and appointments into the mailbox's Outlook contacts and calendar"
        " ({contacts: true, calendar: true}); off by default.",
    )

    secret_key_names: ClassVar[tuple[str, ...]] = ("password_file", "password_command", "oauth2_token_command")

    @field_validator("categories", mode="before")
    @classmethod
    def _categories_switch(cls, value: object) -> object:
        return categories_switch(value)

    @field_validator("authority")
    @classmethod
    def _authority(cls, value: str) -> str:
        return _https(value, "authority")

    @field_validator("graph_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        return _https(value, "graph_url")

    @model_validator(mode="after")
    def _checks(self) -> Graph:
        problem = self.credential_problem(required=False)
        if problem is not None:
            raise ValueError(problem)
        if self.oauth2_token_command is not None:
            raise ValueError("graph: signs in with msal; give a client secret or certificate, or none (device code)")
        if self.app_only and self.user is None:
            raise ValueError("app-only sign-in (a client secret or certificate) needs user: the mailbox's UPN or id")
        if self.app_only and self.secret_keys() and self.client_cert:
            raise ValueError("give a client secret (password_file/password_command) or client_cert, not both")
        if not self.app_only and self.token_cache is None:
            raise ValueError(
                "without a client secret or certificate the mailbox signs in by device code: give token_cache"
                " (a file in state_dir), then run `mailfiler login MAILBOX`"
            )
        return self

    @property
    def app_only(self) -> bool:
        return bool(self.secret_keys()) or self.client_cert is not None

    @property
    def category_names(self) -> tuple[str, str] | None:
        return None if self.categories is None else self.categories.names


def sign_in(cfg: Graph) -> Any:
    """How the mailbox signs in; the secret is read at each sign-in, never held here."""
    from mailfiler.sources.graph.auth import SYNC_BACK_SCOPES, SignIn

    back = cfg.sync_back is not None and (cfg.sync_back.contacts or cfg.sync_back.calendar)

    secret = cfg.provider(f"graph sign-in of app {cfg.client_id}") if cfg.secret_keys() else None
    return SignIn(
        tenant=cfg.tenant,
        client_id=cfg.client_id,
        authority=cfg.authority,
        secret=secret,
        client_cert=cfg.client_cert,
        client_key=cfg.client_key,
        cache_file=cfg.token_cache,
        ca_file=str(cfg.ca_file) if cfg.ca_file else None,
        timeout=min(cfg.timeout, 60.0),
        extra_scopes=SYNC_BACK_SCOPES if back else (),
    )


def graph_settings(cfg: Graph) -> Any:
    from mailfiler.sources.graph.source import GraphSettings

    return GraphSettings(
        sign_in=sign_in(cfg),
        user=cfg.user,
        graph_root=cfg.graph_url,
        ca_file=str(cfg.ca_file) if cfg.ca_file else None,
        timeout=cfg.timeout,
        poll_min=cfg.poll.min,
        poll_max=cfg.poll.max,
        categories=cfg.category_names,
        webhook_url=cfg.webhook.url if cfg.webhook else None,
        webhook_listen=(cfg.webhook.listen_host, cfg.webhook.listen_port) if cfg.webhook else ("127.0.0.1", 8435),
    )


def _source(mailbox: Any) -> Any:
    import dataclasses

    from mailfiler.sources.graph.source import GraphSource

    cfg: Graph = mailbox.backend_config
    settings = dataclasses.replace(
        graph_settings(cfg),
        # track by tag: mailfiler's own categories never track; a changed message wakes a tag pass
        own_categories=(cfg.categories or OutlookCategories()).names,
        tag_events=mailbox.track_tags is not None,
    )
    return GraphSource(settings)


def _resolve(cfg: Graph, base_dir: Path) -> Graph:
    return cfg.model_copy(
        update={
            "ca_file": resolve_path(cfg.ca_file, base_dir) if cfg.ca_file else None,
            "token_cache": resolve_path(cfg.token_cache, base_dir) if cfg.token_cache else None,
            **cfg.resolved_credentials(base_dir),
        }
    )


def _location(mailbox: Any) -> str:
    cfg: Graph = mailbox.backend_config
    return f"graph://{cfg.user or 'me'}@{cfg.tenant}"


def _identity(value: Any, base_dir: Path) -> Any:
    """Two mailboxes must not be the same Graph mailbox (tenant and user)."""
    if not isinstance(value, dict) or not isinstance(value.get("tenant"), str):
        return None
    user = value.get("user")
    return ("graph", value["tenant"].lower(), user.lower() if isinstance(user, str) else value.get("token_cache"))


def _targets(mailbox: Any, base_dir: Path) -> list[Any]:
    """The mailbox's contacts and calendar, when ``sync_back`` asks for them (one Graph client for both)."""
    cfg: Graph = mailbox.backend_config
    back = cfg.sync_back
    if back is None or not (back.contacts or back.calendar):
        return []
    from mailfiler.sources.graph.calendar import GraphCalendar
    from mailfiler.sources.graph.contacts import GraphContacts
    from mailfiler.sources.graph.targets import GraphConnection

    connection = GraphConnection(graph_settings(cfg))
    where = _location(mailbox)
    out: list[Any] = []
    if back.contacts:
        out.append(GraphContacts(connection, f"{where}/contacts"))
    if back.calendar:
        window = back.calendar_window
        out.append(
            GraphCalendar(connection, f"{where}/calendar", days_back=window.days_back, days_ahead=window.days_ahead)
        )
    return out


def _check(mailbox: Any) -> list[str]:
    """What config check finds wrong here: a device-code mailbox not signed in yet (or its
    token cache readable by others), a CA or certificate file that is not there."""
    import os
    import stat

    cfg: Graph = mailbox.backend_config
    problems = []
    back = cfg.sync_back
    if back is not None and (back.contacts or back.calendar) and getattr(mailbox, "sync", None) is None:
        problems.append(
            f"{mailbox.name}: graph.sync_back syncs under the mailbox's sync: policies; add a sync: block"
            " (e.g. sync: {filters: {contacts: [{all: true}], appointments: [{all: true}]}})"
        )
    if not cfg.app_only and cfg.token_cache is not None:
        if not cfg.token_cache.exists():
            problems.append(f"{mailbox.name} is not signed in yet: run `mailfiler login {mailbox.name}`")
        elif stat.S_IMODE(os.stat(cfg.token_cache).st_mode) & 0o077:
            problems.append(f"the token cache {cfg.token_cache} can be read by others: chmod 600 {cfg.token_cache}")
    for key in ("ca_file", "client_cert", "client_key"):
        path = getattr(cfg, key)
        if path is not None and "$" not in str(path) and not Path(path).exists():
            problems.append(f"graph.{key} {path} does not exist")
    return problems


def login(mailbox: Any, echo: Any) -> str:
    """``mailfiler login MAILBOX``: the device-code sign-in of one user."""
    from mailfiler.errors import UserError
    from mailfiler.sources.graph.auth import device_login

    cfg: Graph = mailbox.backend_config
    if cfg.app_only:
        raise UserError(f"{mailbox.name} signs in app-only (a client secret or certificate): no login needed")
    return str(device_login(sign_in(cfg), echo))


def _server_rules(mailbox: Any, separator: str | None) -> GraphRules:
    """Graph messageRules (sources/graph/rules.py)."""
    from mailfiler.sources.graph.rules import GraphRules

    return GraphRules(graph_settings(mailbox.backend_config))


BACKEND = Backend(
    kind="graph",
    config=Graph,
    description="A Microsoft 365 / Exchange Online mailbox through Microsoft Graph: tenant, app, user, sign-in.",
    source=_source,
    location=_location,
    resolve=_resolve,
    identity=_identity,
    targets=_targets,
    check=_check,
    noun="a Microsoft 365 mailbox",
    server_rules=_server_rules,
    tag_name=category_problem,
    folder_name=inbox_spelled_out,
)
