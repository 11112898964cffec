"""Connection settings of one EWS mailbox (no exchangelib import here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mailfiler.util.secrets import SecretProvider

#: Exchange builds a ``version:`` pin names (the first call is then GetFolder, not a probe)
VERSIONS: dict[str, tuple[int, int, int, int]] = {
    "2013": (15, 0, 1497, 2),
    "2016": (15, 1, 2507, 6),
    "2019": (15, 2, 1544, 4),
    "se": (15, 2, 2562, 17),  # Subscription Edition reports a 15.2 build
}


@dataclass(frozen=True)
class EwsSettings:
    url: str
    username: str
    secret: SecretProvider
    auth: Literal["ntlm", "basic", "oauth2"] = "ntlm"
    #: the mailbox acted on (SMTP); impersonated when ``impersonate`` is true
    mailbox: str = ""
    impersonate: bool = False
    ca_file: str | None = None
    verify_tls: bool = True
    #: a build pin (VERSIONS key or "15.1.2507.6"); None: exchangelib probes once
    version: str | None = None
    #: seconds any one EWS call may take
    timeout: float = 60.0
    #: requests in flight at once per server (the thread pool's size)
    max_connections: int = 4
    #: longest wait an ErrorServerBusy may ask for before the call gives up (ServerBusy)
    max_back_off: float = 60.0
    #: (tracked, failed) Outlook categories, or None: no marks
    categories: tuple[str, str] | None = None
    #: categories mailfiler sets itself (the marks' names, set or not): never a tag that tracks
    own_categories: tuple[str, ...] = ("Tracked in CRM", "Not tracked (see CRM)")
    #: track by tag is on: the watcher subscribes to every folder and wakes a tag pass on a change
    tag_events: bool = False
    #: items per SyncFolderItems page (Exchange's maximum is 512)
    page_size: int = 200
    #: items per GetItem request when fetching MIME
    fetch_batch: int = 50
    #: minutes a streaming connection is asked to last (Exchange closes it after 30 at most)
    stream_minutes: int = 29

    @property
    def endpoint_key(self) -> tuple[str, str]:
        """What mailboxes sharing connections have in common: the server and the login."""
        return (self.url, self.username)
