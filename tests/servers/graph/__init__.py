"""A protocol-faithful fake of Microsoft Graph (mail, contacts, calendar, subscriptions)
and of the Microsoft identity platform's token endpoint, on loopback over HTTPS.
See README.md beside this file."""

from tests.servers.graph.server import GraphFake, start_graph

__all__ = ["GraphFake", "start_graph"]
