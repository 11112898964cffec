"""Inbox rules on the mail server (issue 20).

``model`` holds the backend-neutral terms (rules, conditions, actions, routes,
plans) and the :class:`~mailfiler.sources.inboxrules.RulesBackend` protocol;
``sieve`` implements it over ManageSieve (``managesieve``), reading scripts
with ``sieveparse``/``sieveread`` and writing mailfiler's own with
``sievewrite``; ``analyze`` marks rules against tracking; ``runner`` ties them
to the config, the CLI (``mailfiler rules server``) and the daemon.
"""
