"""Inbox rules of an IMAP mailbox as Sieve scripts over ManageSieve (RFC 5804).

``managesieve`` is the client, ``sieveparse``/``sieveread`` read scripts into
the terms of :mod:`mailfiler.sources.inboxrules`, ``sievewrite`` writes
mailfiler's own script, and ``backend`` puts them together as the IMAP
backend's :class:`~mailfiler.sources.inboxrules.RulesBackend`.
"""
