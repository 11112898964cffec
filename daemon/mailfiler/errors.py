"""The one error hierarchy of mailfiler.

Every error a user can meet derives from :class:`MailfilerError`.  Errors
carry typed keyword attributes (vdirsyncer's way) so that the single mapper
in :mod:`mailfiler.cli.errors` can turn them into a message that says what
to do, and log lines can carry the fields as structured data.

How far an error reaches is told by its class, where it is caught: the
worker shunts a message on :class:`MessageError`, drops a folder on
:class:`FolderMissing`, and leaves a :class:`MailboxUnavailable` to the
mailbox's supervisor, which reconnects with backoff; the sync shunts an item
on :class:`SyncItemUnreadable`.  (A separate severity grade was dropped: nothing
read it, and it could only drift from the classes.)
"""

from __future__ import annotations

from typing import Any


class MailfilerError(Exception):
    """Base class.  ``str(err)`` is a complete sentence for a human."""

    #: short machine name, used as ``reason`` in shunts, status and JSON logs
    code = "error"

    def __init__(self, message: str = "", **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message or self.__class__.__doc__ or self.code


class UserError(MailfilerError):
    """An error the user can fix; shown without a traceback."""

    code = "user-error"


class ProblemsError(UserError):
    """A user error made of several problems, all reported at once."""

    def __init__(self, message: str, problems: list[Any] | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.problems = list(problems or [])


# --- configuration -------------------------------------------------------


class ConfigError(ProblemsError):
    """The configuration is invalid.

    ``problems`` is a list of :class:`mailfiler.config.loader.Problem`, each
    printable as ``FILE:LINE:COL: message``.
    """

    code = "config-invalid"


class NoConfigError(ConfigError):
    """No configuration file was named."""

    code = "config-missing"


# --- store -----------------------------------------------------------------


class StoreError(MailfilerError):
    """The CRM store could not be used."""

    code = "store-error"


class StoreUnavailable(StoreError):
    """The database could not be reached or opened."""

    code = "store-unavailable"


class StoreDriverMissing(StoreUnavailable, UserError):
    """The database URL needs a driver that is not installed (psycopg for PostgreSQL)."""

    code = "store-driver-missing"


class SchemaTooNew(StoreError, UserError):
    """The database was written by a newer mailfiler."""

    code = "schema-too-new"


class AlreadyRunning(UserError):
    """Another mailfiler (``run`` or ``once``) holds the single-instance lock
    on this state_dir or SQLite store (service/instancelock.py); its ``pid``
    and the lock file's ``path`` are named in the message."""

    code = "already-running"


class RecordImportError(ProblemsError):
    """A records file could not be imported; ``problems`` lists each row."""

    code = "records-invalid"


class NotFound(UserError):
    """A named object does not exist."""

    code = "not-found"


# --- sources ---------------------------------------------------------------


class SourceError(MailfilerError):
    """A mailbox backend failed."""

    code = "source-error"


class FolderMissing(SourceError):
    """A tracked folder does not exist in the mailbox."""

    code = "folder-missing"


class MailboxUnavailable(SourceError):
    """The mailbox as a whole cannot be read.  The subclasses say why, each
    with its own hint; a lost connection or an unexpected answer stays this."""

    code = "mailbox-unavailable"


class LoginRefused(MailboxUnavailable):
    """The server refused the login (a wrong password, an expired token, a locked account)."""

    code = "login-refused"


class TlsCertificateRefused(MailboxUnavailable):
    """The server's TLS certificate is not trusted (an unknown CA, a wrong host name, expired)."""

    code = "tls-untrusted"


class ServerBusy(MailboxUnavailable):
    """The server is throttling or too busy (too many connections, [UNAVAILABLE], HTTP 429/503)."""

    code = "server-busy"


class ServerUnreachable(MailboxUnavailable):
    """The server cannot be reached: connection refused, a name that does not resolve, no answer in time."""

    code = "server-unreachable"


class MailboxMissing(MailboxUnavailable):
    """The mailbox itself does not exist or cannot be opened (a Maildir root, a mailbox on the server)."""

    code = "mailbox-missing"


class MailboxRootMissing(MailboxMissing, UserError):
    """A local mailbox's root directory does not exist.  Missing tracked folders
    inside a mailbox may be created (``create_missing_folders``), the root never:
    a mistyped path must not become a new, silently watched, empty Maildir."""

    code = "mailbox-root-missing"


#: the codes of the source errors that stop a whole mailbox, for status
SOURCE_ERROR_CODES = (
    "login-refused",
    "tls-untrusted",
    "server-busy",
    "server-unreachable",
    "mailbox-missing",
    "mailbox-root-missing",
)


# --- per-message failures (these shunt the message) ------------------------


class MessageError(MailfilerError):
    """One message cannot be tracked; it goes to the shunt with this reason."""

    code = "message-error"


class EmptyMessage(MessageError):
    """The message file is empty."""

    code = "empty-message"


class NotAMessage(MessageError):
    """The file does not look like an email message (no header block)."""

    code = "not-a-message"


class MessageTooLarge(MessageError):
    """The message exceeds the configured size limit."""

    code = "too-large"


class MessageVanished(MessageError):
    """The message file disappeared before it could be read.

    Not shunted: a vanished file is a move or delete the watcher will see.
    """

    code = "vanished"


class ProcessingFailed(MessageError):
    """An unexpected failure while tracking one message (a bug or a store
    error that persisted through retries)."""

    code = "processing-failed"


# --- sync-back of contacts and appointments (mailfiler.sync) ----------------


class SyncError(MailfilerError):
    """Syncing one address book or calendar failed; the others go on."""

    code = "sync-error"


class SyncTargetUnavailable(SyncError):
    """An address book or calendar cannot be reached (a missing folder, a server down)."""

    code = "sync-target-unavailable"


class SyncSideEmpty(SyncError, UserError):
    """One side of a sync suddenly looks empty while the status says it held
    items: a changed path or a wiped server, not N deletions (vdirsyncer's
    StorageEmpty).  Nothing is deleted until the user says so."""

    code = "sync-side-empty"


class SyncPreconditionFailed(SyncError):
    """An item changed or vanished under the sync (its etag no longer matches);
    the next sync sees the new state."""

    code = "sync-precondition-failed"


class SyncItemNotFound(SyncPreconditionFailed):
    """The item does not exist (any more)."""

    code = "sync-item-not-found"


class SyncItemExists(SyncPreconditionFailed):
    """An item with this name exists already."""

    code = "sync-item-exists"


class SyncItemUnreadable(SyncError):
    """A vCard or iCalendar item cannot be read; it is shunted with ``reason``
    (``bad-vcard``, ``bad-icalendar``, ``empty-item``) and the rest goes on."""

    code = "sync-item-unreadable"


# --- rules on the mail server (mailfiler.serverrules) -------------------------


class ServerRulesError(MailfilerError):
    """A mailbox's rules on its server could not be read or written; tracking goes on."""

    code = "server-rules-error"


class ServerRulesUnavailable(ServerRulesError):
    """The rules server cannot be reached, timed out, or refused the login."""

    code = "server-rules-unavailable"


class ServerRulesUnsupported(ServerRulesError, UserError):
    """The server cannot hold mailfiler's rules (no ManageSieve, no Sieve include, no STARTTLS)."""

    code = "server-rules-unsupported"


class ServerRulesBroken(ServerRulesError, UserError):
    """A script on the server is broken (or is not mailfiler's); it is reported, never overwritten."""

    code = "server-rules-broken"


class ServerRulesChanged(ServerRulesError):
    """A script changed on the server between the plan and the write; nothing was written over it."""

    code = "server-rules-changed"
