"""The Exchange Server backend through EWS (exchangelib).

Modules: ``settings`` (connection settings), ``client`` (exchangelib in a
bounded thread pool per server, timeouts, back-off, error mapping),
``folders`` (folder paths <-> folder ids), ``tokens`` (SyncFolderItems states
as cursor tokens), ``source`` (the Source), ``watch`` (streaming
notifications).  exchangelib is imported by ``client`` only, when a mailbox is
opened; this package's ``__init__`` stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailfiler.sources.ews.settings import EwsSettings
    from mailfiler.sources.ews.source import EwsSource


def __getattr__(name: str) -> Any:
    if name == "EwsSource":
        from mailfiler.sources.ews.source import EwsSource

        return EwsSource
    if name == "EwsSettings":
        from mailfiler.sources.ews.settings import EwsSettings

        return EwsSettings
    raise AttributeError(name)


__all__ = ["EwsSettings", "EwsSource"]
