"""Sync-back: CRM contacts and appointments in the user's address book and
calendar, and the user's changes back into the CRM (issue 5).

The shape follows vdirsyncer:

- :mod:`~mailfiler.sources.target` is the storage abstraction: one collection
  (an address book or a calendar) listed with etags, read, and written with
  etag guards; :mod:`~mailfiler.sync.vdir` and :mod:`~mailfiler.sync.memory`
  implement it, :mod:`~mailfiler.sync.dav` for CalDAV/CardDAV; a mailbox
  backend may bring its own (see ``Backend.targets``).
- :mod:`~mailfiler.sync.vcard` and :mod:`~mailfiler.sync.ical` turn items
  into plain field dicts and back, merging into the user's item so that
  properties mailfiler does not manage survive.
- :mod:`~mailfiler.sync.crm` reads and writes the same field dicts in the
  store; :mod:`~mailfiler.sync.filters` decides which CRM items a mailbox
  gets; :mod:`~mailfiler.sync.merge` is the per-field three-way merge.
- :mod:`~mailfiler.sync.engine` reads both sides and the status table
  (``SyncItem``); :mod:`~mailfiler.sync.plan` decides each item's action
  from them without writing; :mod:`~mailfiler.sync.apply` performs the plan
  and commits each item alone; :mod:`~mailfiler.sync.runner` builds the
  engine from the config for the CLI and the daemon (and
  :mod:`~mailfiler.sync.preview` for ``sync --dry-run``).
"""
