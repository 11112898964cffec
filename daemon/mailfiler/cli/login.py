"""``mailfiler login MAILBOX``: an interactive sign-in, for the backends that
need one (a Microsoft 365 user by device code).  A backend module offers it
by defining ``login(mailbox, echo) -> str`` next to its ``BACKEND``."""

from __future__ import annotations

import importlib
from typing import Any

import click

from mailfiler.cli.errors import handle_errors
from mailfiler.errors import NotFound, UserError


@click.command()
@click.argument("mailbox")
@click.pass_obj
@handle_errors
def login(obj: Any, mailbox: str) -> None:
    """Sign MAILBOX in interactively and keep the tokens for the daemon
    (Microsoft 365: a device code to enter at Microsoft's sign-in page; the
    token cache is the mailbox's token_cache, mode 0600, refreshed silently)."""
    from mailfiler.backends import BACKENDS

    cfg = obj.load().config
    chosen = [mb for mb in cfg.mailboxes if mb.name == mailbox]
    if not chosen:
        known = ", ".join(m.name for m in cfg.mailboxes) or "none"
        raise NotFound(f"no mailbox named {mailbox!r} in the config (mailboxes: {known})")
    mb = chosen[0]
    sign_in = getattr(importlib.import_module(BACKENDS[mb.backend]), "login", None)
    if sign_in is None:
        raise UserError(f"{mb.backend}: mailboxes sign in with what the config gives; no login needed")
    who = sign_in(mb, lambda text: click.echo(text, err=True))
    click.echo(f"{mailbox}: signed in as {who}")
