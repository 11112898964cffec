"""A protocol-faithful fake Exchange Server speaking EWS on loopback (see README.md)."""

from tests.servers.ews.server import EwsServer

__all__ = ["EwsServer"]
