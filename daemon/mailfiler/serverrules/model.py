"""The earlier home of :mod:`mailfiler.sources.inboxrules`, which moved below the backend registry
so that a mailbox backend can bring its own inbox rules; kept for its importers."""

from mailfiler.sources.inboxrules import (
    Action,
    Change,
    Condition,
    Plan,
    Route,
    RulesBackend,
    RulesSnapshot,
    ServerRule,
)

__all__ = ["Action", "Change", "Condition", "Plan", "Route", "RulesBackend", "RulesSnapshot", "ServerRule"]
