"""mailfiler under the unit's system call filter: the hardening in systemd/mailfiler.service
must not break what the daemon does, parse helper processes included.

PID 1 on the test machines is not systemd, so the unit itself cannot be started. Its
``SystemCallFilter=`` is the hardening most likely to break a feature (a system call the
daemon or a helper needs, refused with EPERM), and it can be applied without systemd: the
allow-list is built from the unit's lines with ``systemd-analyze syscall-filter`` (as systemd
does: ``@default`` is always allowed, ``~`` lines remove), and ``tests/seccomp_exec.py``
loads it with libseccomp before it execs ``mailfiler``. The other settings (users, mounts,
namespaces) are checked by ``tests/test_systemd_unit.py`` with ``systemd-analyze``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemonproc import DaemonProc, ImapWorld, World, cli, committed_count, scalar, wait_until
from tests.mailgen import drop_into_maildir, maildirpp_folder_dir, realistic_message
from tests.servers.dovecot import DovecotServer, start_dovecot
from tests.servers.radicale import DavUser, dav_user, radicale

__all__ = ["dav_user", "radicale"]

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "mailfiler.service"
SECCOMP_EXEC = Path(__file__).resolve().parent / "seccomp_exec.py"
#: Debian's python3, where python3-seccomp installs libseccomp's binding
SYSTEM_PYTHON = "/usr/bin/python3"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _has_seccomp() -> bool:
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return False
    res = subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True, check=False)
    return res.returncode == 0


def _missing() -> str | None:
    """Why these tests cannot run here, or None."""
    if SYSTEMD_ANALYZE is None:
        return "systemd-analyze is not on PATH (Debian package systemd)"
    if not _has_seccomp():
        return f"{SYSTEM_PYTHON} cannot import seccomp (Debian package python3-seccomp)"
    return None


_MISSING = _missing()
# scripts/test.sh installs both; under CI a missing one is a failure, not a skip
pytestmark = pytest.mark.skipif(_MISSING is not None and not os.environ.get("CI"), reason=_MISSING or "")


def _groups() -> dict[str, list[str]]:
    """Every group systemd-analyze knows: name -> its members (system calls and @groups)."""
    assert SYSTEMD_ANALYZE is not None, _MISSING
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    out = subprocess.run(
        [SYSTEMD_ANALYZE, "--no-pager", "syscall-filter"], capture_output=True, text=True, env=env, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith(" ") and current is not None:
            item = line.strip()
            if item and not item.startswith("#"):
                current.append(item)
        else:
            current = None  # the trailing "# Ungrouped ..." comments
    return groups


def _expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    todo = list(names)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name.startswith("@"):
            assert name in groups, f"systemd-analyze does not know {name}"
            todo.extend(groups[name])
        else:
            out.add(name)
    return out


def unit_allowed_syscalls() -> set[str]:
    """The system calls the unit's SystemCallFilter= lines allow, as systemd computes them."""
    lines = [
        line.partition("=")[2].split()
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if line.startswith("SystemCallFilter=")
    ]
    assert lines and not lines[0][0].startswith("~"), "expected an allow-list first"
    groups = _groups()
    allowed = _expand(["@default"], groups)  # systemd always allows @default in an allow-list
    for words in lines:
        deny = words[0].startswith("~")
        names = [words[0].lstrip("~"), *words[1:]]
        if deny:
            allowed -= _expand(names, groups)
        else:
            allowed |= _expand(names, groups)
    assert "SystemCallErrorNumber=EPERM" in UNIT.read_text(encoding="utf-8")
    return allowed


@pytest.fixture(scope="module")
def allowed_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seccomp") / "allowed.txt"
    path.write_text("\n".join(sorted(unit_allowed_syscalls())) + "\n", encoding="utf-8")
    return path


def seccomp_prefix(allowed: Path) -> list[str]:
    """The command that runs the rest of a command line under the allow-list in ``allowed``."""
    return [SYSTEM_PYTHON, str(SECCOMP_EXEC), str(allowed), "--"]


def test_allow_list_is_what_the_unit_says() -> None:
    allowed = unit_allowed_syscalls()
    # what a Python daemon with helper processes needs at all ...
    for name in ("execve", "clone", "pipe2", "wait4", "fsync", "rename", "epoll_wait", "connect", "futex"):
        assert name in allowed, name
    # ... and what the unit takes away (~@privileged @resources)
    for name in ("setpriority", "sched_setaffinity", "mount", "chown", "setuid"):
        assert name not in allowed, name


def test_the_filter_is_enforced(allowed_file: Path) -> None:
    """The harness really filters: a call the unit forbids fails with EPERM, others work."""
    probe = (
        "import os, errno\n"
        "os.getpid()\n"
        "try:\n"
        "    os.setpriority(os.PRIO_PROCESS, 0, 1)\n"
        "except PermissionError:\n"
        "    print('refused')\n"
        "else:\n"
        "    print('allowed')\n"
    )
    res = subprocess.run(
        [*seccomp_prefix(allowed_file), sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "refused"


@pytest.fixture(scope="module")
def server() -> Iterator[DovecotServer]:
    yield from start_dovecot(tls=False)


@pytest.mark.dovecot
@pytest.mark.timeout(240)
def test_imap_backfill_with_parse_helpers_under_the_filter(
    server: DovecotServer, allowed_file: Path, tmp_path: Path
) -> None:
    """``mailfiler once`` backfills an IMAP folder with a parse helper process, all under the
    unit's filter: the helper starts, parses, and every message is tracked; none is shunted."""
    n = 300
    user = server.add_user()
    user.seed("Clients/Contoso", [realistic_message(i, seed=7) for i in range(n)])
    world = ImapWorld(tmp_path / "world", user, [("Clients/Contoso", "account:contoso")], limits={"parse_processes": 1})
    res = cli(
        world.config,
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "once",
        "--json",
        prefix=seccomp_prefix(allowed_file),
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    events = []
    for line in res.stderr.splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    names = [e.get("event") for e in events]
    assert "parse-helper-failed" not in names, res.stderr[-4000:]
    assert names.count("parse-helper-started") == 1, res.stderr[-4000:]
    stopped = [e for e in events if e.get("event") == "parse-helpers-stopped"]
    assert stopped and "parsed 0 " not in stopped[-1]["msg"], stopped
    assert names.count("tracked") == n
    results = [r for rs in json.loads(res.stdout).values() for r in rs]
    assert sum(r["new"] for r in results) == n
    assert sum(r["shunted"] for r in results) == 0
    assert scalar(world.db, "SELECT count(*) FROM activity") == n


@pytest.mark.timeout(180)
def test_maildir_daemon_under_the_filter(allowed_file: Path, tmp_path: Path) -> None:
    """``mailfiler run`` on a Maildir under the unit's filter: it starts, backfills (with
    ``parse_processes: 1``), sees new mail through inotify, reloads on SIGHUP and stops cleanly
    on SIGTERM, without an error logged."""
    folder = "Tracked/Contoso"
    maildir = tmp_path / "Maildir"
    box = maildirpp_folder_dir(maildir, folder)
    for i in range(40):
        drop_into_maildir(box, realistic_message(i, seed=3), fsync=False)
    world = World(tmp_path / "world", maildir, [(folder, "account:contoso")], limits={"parse_processes": 1})
    with DaemonProc(world.config, tmp_path / "daemon.log", prefix=seccomp_prefix(allowed_file)).start() as daemon:

        def state() -> str:
            return daemon.log_tail()

        wait_until(lambda: committed_count(world) == 40 or not daemon.alive(), timeout=60, what="backfill", state=state)
        assert daemon.alive(), state()
        for i in range(40, 45):
            drop_into_maildir(box, realistic_message(i, seed=3))
        wait_until(lambda: committed_count(world) == 45, timeout=30, what="new mail tracked", state=state)
        assert daemon.has_event("started"), state()
        os.kill(daemon.pid, signal.SIGHUP)
        wait_until(lambda: daemon.has_event("reloaded"), timeout=30, what="reload", state=state)
        assert daemon.terminate() == 0, state()
        names = [e.get("event") for e in daemon.events()]
        assert "stopped" in names, state()
        assert "parse-helper-failed" not in names, state()
        assert not [e for e in daemon.events() if e.get("level") in ("error", "critical")], state()


SYNC_EVENT = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:sandbox-1\r\nDTSTAMP:20240101T000000Z\r\n"
    "DTSTART;TZID=Europe/Stockholm:20240618T100000\r\nDTEND;TZID=Europe/Stockholm:20240618T110000\r\n"
    "SUMMARY:Review\r\nCATEGORIES:Tracked\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


@pytest.mark.timeout(180)
def test_sync_back_under_the_filter(allowed_file: Path, tmp_path: Path, dav_user: DavUser) -> None:
    """``mailfiler sync`` under the unit's filter, to each kind of target the drop-ins in
    systemd/drop-ins/ open the sandbox for (vdir folders; a CalDAV/CardDAV server over
    HTTP): contacts go out, a tracked event comes in, nothing is refused."""
    (tmp_path / "Maildir").mkdir()
    (tmp_path / "vdir" / "calendar").mkdir(parents=True)
    (tmp_path / "vdir" / "calendar" / "review.ics").write_text(SYNC_EVENT)
    records = (
        "records:\n"
        "  - {entity: account, key: contoso, name: Contoso AB, domains: [contoso.com]}\n"
        "  - {entity: contact, key: bob, name: Bob Smith, emails: [bob@contoso.com]}\n"
    )
    head = "database: sqlite:///state/mf.db\nstate_dir: state\n" + records + "mailboxes:\n"
    mailbox = "  - name: anna\n    owner: anna@example.com\n    maildir: Maildir\n    sync:\n"
    auth = f"username: {dav_user.name}, password_file: {dav_user.password_file}"
    configs = {
        "vdir": "      vdir: {contacts: vdir/contacts, calendar: vdir/calendar}\n",
        "dav": f'      carddav: {{url: "{dav_user.url("crm-contacts")}", {auth}}}\n'
        f'      caldav: {{url: "{dav_user.url("crm-calendar")}", {auth}}}\n',
    }
    for name, sync in configs.items():
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(head + mailbox + sync + "      filters: {contacts: [{all: true}]}\n")
        res = cli(cfg, "sync", "--json", prefix=seccomp_prefix(allowed_file))
        assert res.returncode == 0, (name, res.stdout, res.stderr)
        results = {r["kind"]: r for r in json.loads(res.stdout)}
        assert results["contacts"]["uploaded"] == 1 and results["contacts"]["state"] == "ok", (name, results)
        assert results["calendar"]["state"] == "ok", (name, results)
    # the vdir's tracked event became a CRM appointment; the DAV run found it there and sent it up
    assert len(list((tmp_path / "vdir" / "contacts").glob("*.vcf"))) == 1
    assert len(list(dav_user.collection_dir("crm-calendar").glob("*.ics"))) == 1
