"""Inbox rules on the mail server (issue 20), whatever the backend.

The backend-neutral terms (rules, conditions, actions, routes, plans) and the
:class:`~mailfiler.sources.inboxrules.RulesBackend` protocol live in
:mod:`mailfiler.sources.inboxrules`, below the backend registry; each backend
makes its own through ``Backend.server_rules`` (Sieve over ManageSieve in
:mod:`mailfiler.sources.sieve`, EWS in :mod:`mailfiler.sources.ews.rules`,
Graph in :mod:`mailfiler.sources.graph.rules`).  Here ``analyze`` marks rules
against tracking and ``runner`` ties them to the config, the CLI
(``mailfiler rules server``), ``status`` and the daemon.
"""
