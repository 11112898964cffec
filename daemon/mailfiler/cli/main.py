"""The ``mailfiler`` command."""

from __future__ import annotations

import asyncio
import sys

import click

from mailfiler import __version__
from mailfiler.cli.errors import handle_errors, hint_for, report
from mailfiler.cli.output import Col, emit_json, json_option, plural, table, wide_option
from mailfiler.cli.statusview import config_in_force, print_status
from mailfiler.config.credentials import config_secret_warnings
from mailfiler.config.loader import LoadedConfig, load_config, store_settings_lenient
from mailfiler.config.schema import Config
from mailfiler.errors import ConfigError
from mailfiler.service.logsetup import setup_logging

HELP = """\
mailfiler files e-mail into a CRM store.

Drag a message into a tracked folder (any mail client) and mailfiler records
it as an email activity regarding the record the folder stands for.

\b
Start here (in a clone of the source; the example's Maildir must exist):
  mkdir -p state/Maildir
  mailfiler --config config/mailfiler.example.yaml config check
  mailfiler --config config/mailfiler.example.yaml run
  mailfiler --config config/mailfiler.example.yaml activities

The config file comes from --config or the MAILFILER_CONFIG environment variable.
--config, --log-format and --log-level may also follow the command: `mailfiler run --config FILE`.
"""

#: the group's own options, each taking a value
GLOBAL_OPTIONS = ("--config", "--log-format", "--log-level")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move the group's options written after a command to the front, so that
    ``mailfiler run --config x.yaml`` means ``mailfiler --config x.yaml run``
    (no command has options of these names; ``--`` ends the search)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            take = 1 if "=" in arg else 2
            front.extend(args[i : i + take])
            i += take
            continue
        rest.append(arg)
        i += 1
    return front + rest


class MailfilerGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))


class Context:
    def __init__(self, config_path: str | None, log_format: str, log_level: str) -> None:
        self.config_path = config_path
        self.log_format = log_format
        self.log_level = log_level
        self._loaded: LoadedConfig | None = None

    def load(self) -> LoadedConfig:
        if self._loaded is None:
            self._loaded = load_config(self.config_path)
        return self._loaded

    def open_store_for_reading(self) -> list[str]:
        """Open the store for a read-only command.

        An invalid config still names its store: read-only commands go on
        with it (so an admin can look while fixing the file) and get the
        config's problems back to show."""
        from mailfiler.service.runtime import open_store

        try:
            cfg = self.load().config
        except ConfigError as exc:
            settings = store_settings_lenient(self.config_path)
            if settings is None:
                raise
            database, password_file = settings
            open_store(Config.model_construct(database=database, database_password_file=password_file))
            problems = [str(p) for p in exc.problems] or [str(exc)]
            for problem in problems:
                click.secho(f"config problem: {problem}", fg="red", err=True)
            return problems
        open_store(cfg)
        return []


pass_ctx = click.make_pass_decorator(Context)


@click.group(
    cls=MailfilerGroup, help=HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="MAILFILER_CONFIG",
    show_envvar=True,
    type=click.Path(dir_okay=False),
    help="The YAML configuration file.",
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"]),
    default="plain",
    show_default=True,
    help="plain lines for people; json: one object a line with an `event` field.",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.version_option(__version__, prog_name="mailfiler")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_format: str, log_level: str) -> None:
    setup_logging(log_format, log_level)
    ctx.obj = Context(config_path, log_format, log_level)


# -- daemon ----------------------------------------------------------------------


@cli.command()
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar during backfill (default: when stderr is a terminal)."
)
@pass_ctx
@handle_errors
def run(obj: Context, progress: bool | None) -> None:
    """Run the daemon in the foreground.

    Backfills every tracked folder, then tracks what lands in them within a
    fraction of a second.  SIGTERM finishes the message in flight and exits
    0; SIGHUP re-reads the config (a bad config is reported and the running
    one stays).  Under systemd it reports READY=1, STATUS= and watchdog pings.

    One `run` or `once` at a time on a state_dir (and an SQLite store): another
    one exits 75 at once, naming the pid that holds state_dir/daemon.lock.
    """
    from mailfiler.service.daemon import Daemon

    loaded = obj.load()
    sys.exit(asyncio.run(Daemon(loaded, progress=progress).run()))


@cli.command()
@json_option
@pass_ctx
@handle_errors
def once(obj: Context, as_json: bool) -> None:
    """One full pass over every tracked folder, then exit (for cron and tests).

    Folders that auto-tracking watches (kind "watched") are passed over too:
    "new" counts the messages tracked, "skipped" those judged and left alone.
    Beside a running daemon (or another `once`) on the same state_dir it exits 75.
    """
    from mailfiler.service.daemon import run_once

    summary = asyncio.run(run_once(obj.load()))
    data = {
        mailbox: [
            {
                "folder": r.folder,
                "kind": r.kind,
                "new": r.new,
                "skipped": r.skipped,
                "gone": r.gone,
                "shunted": r.shunted,
                "missing": r.missing,
            }
            for r in results
        ]
        for mailbox, results in summary.items()
    }
    if as_json:
        emit_json(data)
        return
    rows = [
        (
            mb,
            r["folder"],
            r["kind"],
            r["new"],
            r["skipped"],
            r["gone"],
            r["shunted"],
            "missing" if r["missing"] else "ok",
        )
        for mb, results in data.items()
        for r in results
    ]
    table("mailfiler once", ["mailbox", "folder", "kind", "new", "skipped", "gone", "shunted", "state"], rows)


@cli.command()
@json_option
@wide_option
@pass_ctx
@handle_errors
def status(obj: Context, as_json: bool, wide: bool) -> None:
    """Per mailbox and folder: state, last sync, tracked and shunted counts, last error.

    A second table lists the folders auto-tracking watches (the Inbox and
    others outside tracked folders): what it tracked there, and how many
    messages it judged and left alone (`mailfiler rules test` tells why).

    With track by tag (`track_tags:`), a line per mailbox says how many
    folders' tags are followed, when a tag change was last applied, how many
    messages tags tracked outside tracked and watched folders, and how many
    activities they untracked (`tags` in JSON).

    A third table lists the sync-back address books and calendars: state,
    last sync, items synced, unreadable items kept aside, and the last error
    (`sync` in JSON).

    Also shows each daemon's heartbeat, the config it runs on (the file, when
    it was loaded, whether the file changed since) and a config it rejected on
    reload.  When the config file itself is invalid, even as YAML, status still
    reads the store it names and lists the config's problems
    (`config_problems` and `config_in_force` in JSON).
    """
    from mailfiler.store import reports

    problems = obj.open_store_for_reading()
    data = reports.status()
    data["config_problems"] = problems
    config_in_force(data["daemons"], obj.config_path)
    from mailfiler.sync import reports as sync_reports

    data["sync"] = sync_reports.status()
    from mailfiler.serverrules.runner import status as server_rules_status

    data["server_rules"] = server_rules_status()
    for mb in data["mailboxes"]:
        for f in mb["folders"]:
            f["hint"] = hint_for(f.get("error_code")) or None
    if as_json:
        emit_json(data)
        return
    print_status(data, problems, wide)


@cli.command()
@click.option("--regarding", metavar="ENTITY:KEY", help="Only activities regarding this record.")
@click.option("--mailbox", metavar="NAME", help="Only activities held in this mailbox.")
@click.option(
    "--kind",
    type=click.Choice(["email", "appointment", "all"]),
    default="email",
    show_default=True,
    help="Which activities: e-mail, appointments (also `mailfiler appointments list`) or all.",
)
@click.option("--limit", type=int, help="At most this many.")
@json_option
@wide_option
@pass_ctx
@handle_errors
def activities(
    obj: Context, regarding: str | None, mailbox: str | None, kind: str, limit: int | None, as_json: bool, wide: bool
) -> None:
    """The tracked e-mail activities (--kind for appointments).

    An activity its owner untracked (track by tag: the untrack tag or the
    untrack folder, config `track_tags:`) stays listed: `where` says
    "(untracked: WHY)", and --json gives {"untracked": {"at", "reason"}}."""
    from mailfiler.store import reports

    obj.open_store_for_reading()
    data = reports.activities(regarding=regarding, mailbox=mailbox, limit=limit, kind=kind)
    if as_json:
        emit_json(data)
        return
    rows = []
    for a in data:
        sender = next((p["address"] for p in a["parties"] if p["role"] == "from"), "")
        held = ", ".join(f"{loc['mailbox']}/{loc['folder']}" for loc in a["locations"])
        where = held or ("(moved out)" if a["kind"] == "email" else "-")
        if a.get("untracked"):
            where = f"(untracked: {a['untracked']['reason']})"
        rows.append(
            (
                a["id"],
                *([a["kind"]] if kind == "all" else []),
                a["direction"],
                sender,
                a["subject"],
                a["regarding"] or "-",
                a["correlation"] or "-",
                where,
                len(a["attachments"]),
            )
        )
    columns = [
        Col("id", short=True), *([Col("kind", short=True)] if kind == "all" else []), Col("dir", short=True, drop=4),
        Col("from", drop=2), Col("subject"), Col("regarding", short=True), Col("by", drop=3), Col("where", drop=1),
        Col("att", short=True, drop=5),
    ]  # fmt: skip
    noun = {"email": ("e-mail activity", "e-mail activities"), "appointment": ("appointment", "appointments")}
    table(plural(len(data), *noun.get(kind, ("activity", "activities"))), columns, rows, wide=wide)


# -- config ------------------------------------------------------------------------


@cli.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
@json_option
@pass_ctx
def config_check(obj: Context, as_json: bool) -> None:
    """Validate the config; print every problem as FILE:LINE:COL: message.

    Exits 0 when the config is valid, 78 (EX_CONFIG) otherwise.
    """
    try:
        loaded = obj.load()
    except ConfigError as exc:
        if as_json:
            emit_json({"valid": False, "problems": [str(p) for p in exc.problems] or [str(exc)]})
            sys.exit(78)
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(report(exc) if not exc.problems else 78)
    from mailfiler.cli.checks import environment_problems

    found = environment_problems(loaded)
    if found:
        if as_json:
            emit_json({"valid": False, "problems": found})
        else:
            for problem in found:
                click.echo(problem, err=True)
        sys.exit(78)
    cfg = loaded.config
    warnings = config_secret_warnings(cfg)
    summary = {
        "valid": True,
        "path": str(loaded.path),
        "mailboxes": len(cfg.mailboxes),
        "tracked_folders": sum(len(m.tracked_folders) for m in cfg.mailboxes),
        "records": len(cfg.records),
        "warnings": warnings,
    }
    if as_json:
        emit_json(summary)
    else:
        for warning in warnings:
            click.secho(f"warning: {warning}", fg="yellow", err=True)
        mailboxes = plural(len(cfg.mailboxes), "mailbox", "mailboxes")
        counts = f"{mailboxes}, {plural(sum(len(m.tracked_folders) for m in cfg.mailboxes), 'tracked folder')}"
        click.echo(f"{loaded.path}: OK ({counts})")


def _register() -> None:
    from mailfiler.cli import folders as folders_cmd
    from mailfiler.cli import login as login_cmd
    from mailfiler.cli import records as records_cmd
    from mailfiler.cli import rules as rules_cmd
    from mailfiler.cli import serverrules as serverrules_cmd
    from mailfiler.cli import shunt as shunt_cmd
    from mailfiler.cli import sync as sync_cmd

    cli.add_command(folders_cmd.folders)
    cli.add_command(login_cmd.login)
    cli.add_command(records_cmd.records)
    cli.add_command(rules_cmd.rules)
    rules_cmd.rules.add_command(serverrules_cmd.server)
    cli.add_command(shunt_cmd.shunt)
    cli.add_command(sync_cmd.sync)
    cli.add_command(sync_cmd.contacts)
    cli.add_command(sync_cmd.appointments)


_register()


def main() -> None:
    cli(prog_name="mailfiler")


__all__ = ["cli", "main"]
