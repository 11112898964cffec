"""The one place where errors become messages for people.

Each error class maps to an exit code and a hint that says what to do;
nothing else in mailfiler prints errors for the user."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from mailfiler import errors as e

log = logging.getLogger("mailfiler.cli")

#: sysexits-style codes so scripts can tell failures apart
EXIT_CONFIG = 78  # EX_CONFIG
EXIT_DATAERR = 65  # EX_DATAERR
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE
EXIT_SOFTWARE = 70  # EX_SOFTWARE
EXIT_NOTFOUND = 66  # EX_NOINPUT
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: another mailfiler runs; try again once it has stopped

_HINTS: list[tuple[type[e.MailfilerError], int, str]] = [
    (e.NoConfigError, EXIT_CONFIG, "pass --config FILE or set MAILFILER_CONFIG (see config/mailfiler.example.yaml)"),
    (e.ConfigError, EXIT_CONFIG, "fix the lines above, then run `mailfiler config check` again"),
    (e.SchemaTooNew, EXIT_SOFTWARE, "install the mailfiler version that wrote this database, or a newer one"),
    (e.StoreDriverMissing, EXIT_UNAVAILABLE, "install it: {python} -m pip install 'psycopg[binary]'"),
    (e.StoreUnavailable, EXIT_UNAVAILABLE, "check `database:` in the config and that the database server is running"),
    (e.AlreadyRunning, EXIT_TEMPFAIL, "`mailfiler status` and the other read-only commands work while it runs;"
     " the lock is freed as soon as that process ends (even if it is killed)"),
    (e.RecordImportError, EXIT_DATAERR, "fix the rows above; nothing was imported"),
    (e.NotFound, EXIT_NOTFOUND, ""),
    (e.MailboxRootMissing, EXIT_UNAVAILABLE, "check `maildir:` in the config; a new mailbox: mkdir -p {path}"),
    (e.LoginRefused, EXIT_UNAVAILABLE, "check the mailbox's username and its password_file, password_command or"
     " oauth2_token_command; the server refused them (mailfiler retries with backoff)"),
    (e.TlsCertificateRefused, EXIT_UNAVAILABLE, "the server's TLS certificate is not trusted: set ca_file to the CA"
     " that signed it, or check the host name and the certificate's dates"),
    (e.ServerBusy, EXIT_UNAVAILABLE, "the server is throttling or busy; mailfiler backs off and retries. If it"
     " lasts, ask its admin or use fewer connections"),
    (e.ServerUnreachable, EXIT_UNAVAILABLE, "check host and port in the config, that the name resolves, that the"
     " server runs and that no firewall is in the way"),
    (e.MailboxMissing, EXIT_UNAVAILABLE, "check where the config says the mailbox is (a Maildir's path and its"
     " permissions, or the account on the server)"),
    (e.FolderMissing, EXIT_NOTFOUND, "fix the folder's name in tracked_folders, or make it with"
     " `mailfiler folders create`"),
    (e.ServerRulesBroken, EXIT_DATAERR, "fix or remove the script on the server (any Sieve editor), then apply again"),
    (e.ServerRulesUnsupported, EXIT_UNAVAILABLE, "README, Inbox rules on the server, says what it needs"),
    (
        e.ServerRulesUnavailable,
        EXIT_UNAVAILABLE,
        "check the mailbox's login and its server_rules: settings"
        " (IMAP: the ManageSieve port and TLS; Microsoft 365: the MailboxSettings.ReadWrite permission)",
    ),
    (e.ServerRulesChanged, EXIT_UNAVAILABLE, "someone changed the script meanwhile; run the command again"),
    (e.MailboxUnavailable, EXIT_UNAVAILABLE, "the connection failed; mailfiler retries with backoff (see the log)"),
    (e.UserError, EXIT_DATAERR, ""),
    (e.MailfilerError, EXIT_SOFTWARE, ""),
]  # fmt: skip


def describe(err: e.MailfilerError) -> tuple[int, list[str], str]:
    """(exit code, detail lines, hint) for an error."""
    for cls, code, hint in _HINTS:
        if isinstance(err, cls):
            details = [str(p) for p in getattr(err, "problems", [])]
            # the interpreter mailfiler runs on: a pip of another Python would not help
            hint = hint.replace("{python}", sys.executable).replace("{path}", str(err.fields.get("path", "PATH")))
            return code, details, hint
    return EXIT_SOFTWARE, [], ""


def hint_for(code: str | None) -> str:
    """The hint for an error known only by its code (as ``status`` stores it)."""
    if not code:
        return ""
    cls = _by_code().get(code)
    if cls is None:
        return ""
    hint = next((hint for klass, _, hint in _HINTS if issubclass(cls, klass)), "")
    return hint.replace("{python}", sys.executable).replace("{path}", "PATH")


def _by_code() -> dict[str, type[e.MailfilerError]]:
    out: dict[str, type[e.MailfilerError]] = {}
    todo: list[type[e.MailfilerError]] = [e.MailfilerError]
    while todo:
        cls = todo.pop()
        out.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return out


def report(err: e.MailfilerError, *, as_json: bool = False) -> int:
    code, details, hint = describe(err)
    if as_json:
        click.echo(
            json.dumps({"error": err.code, "message": str(err), "problems": details, "hint": hint or None}),
            err=False,
        )
        return code
    click.secho(f"error: {err}", fg="red", err=True)
    for line in details:
        click.echo(f"  {line}", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    return code


F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Decorator for commands: map mailfiler errors to messages and exit codes."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except e.MailfilerError as err:
            ctx = click.get_current_context(silent=True)
            as_json = bool(ctx and ctx.params.get("as_json"))
            sys.exit(report(err, as_json=as_json))

    return wrapper  # type: ignore[return-value]
