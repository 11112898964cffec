"""Exchange Online / Microsoft 365 mailboxes through Microsoft Graph (issue 19).

* :mod:`.client`: HTTPS to Graph (httpx): tokens, throttling, errors, paging, ``$batch``;
* :mod:`.auth`: sign-in with msal (app-only, device code, the token cache);
* :mod:`.folders`: folder paths <-> ids, kept current through the folder delta;
* :mod:`.reader`: raw MIME through ``$value``;
* :mod:`.source`: the :class:`~mailfiler.sources.base.Source` (delta links as cursor tokens);
* :mod:`.marks`: Outlook categories as marks;
* :mod:`.watch`: adaptive delta polling.
"""
