"""A throw-away PostgreSQL server on loopback for the store tests.

``postgres_url`` (session scope) runs ``initdb`` in a short temp dir under /tmp, starts the
server on a free 127.0.0.1 port with durability switched off, creates the database
``mailfiler`` and yields ``postgresql://test@127.0.0.1:PORT/mailfiler`` (trust auth, no
password). ``fresh_postgres_url`` (function scope) gives each test its own empty database
on that server and drops it afterwards.

Without PostgreSQL binaries the tests are skipped, except under ``CI=true``, where they
fail: CI must really run them. As root, initdb and pg_ctl run as the ``postgres`` user
(initdb refuses root); as a normal user they run directly.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

DB_USER = "test"
DB_NAME = "mailfiler"
START_ATTEMPTS = 3


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: the highest /usr/lib/postgresql/N/bin, else PATH."""

    def version(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin/", path)
        return tuple(int(x) for x in m.group(1).split(".") if x) if m else (0,)

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version, reverse=True)
    for initdb in candidates:
        bindir = Path(initdb).parent
        if os.access(bindir / "pg_ctl", os.X_OK):
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl", path=str(Path(initdb).parent)):
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when running in CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


@dataclass
class PostgresServer:
    bindir: Path
    base: Path  # temp dir: data/, log, and the unix socket
    port: int
    as_user: str | None  # run the server binaries via `runuser -u <as_user>`; None = as ourselves

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "log"

    def url(self, dbname: str = DB_NAME) -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        # Keep the caller's PG* settings (PGDATA, PGPORT, ...) from steering the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        proc = subprocess.run(
            cmd, cwd=self.base, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd)} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}\n{self.log_tail()}"
            )
        return proc

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    def initdb(self) -> None:
        self._run(
            "initdb", "-D", str(self.datadir), "-U", DB_USER, "--auth=trust", "--no-sync",
            "-E", "UTF8", "--locale=C.UTF-8",
        )  # fmt: skip

    def start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.logfile), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False)

    def admin_connect(self):  # -> psycopg (3) connection, autocommit, on the maintenance db
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=DB_USER, dbname="postgres", autocommit=True)

    def create_database(self, name: str) -> None:
        with contextlib.closing(self.admin_connect()) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        with contextlib.closing(self.admin_connect()) as conn, conn.cursor() as cur:
            # WITH (FORCE) (PostgreSQL 13+) also ends connections a test forgot to close.
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres() -> Iterator[PostgresServer]:
    """Start a server (or skip/fail); yield it; stop it and remove its directory."""
    bindir = find_pg_bindir()
    if bindir is None:
        _unavailable(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb and no initdb on PATH); "
            "install them with: apt-get install postgresql"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]' installs it with mailfiler)")

    as_user = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root but there is no 'postgres' user to run initdb as")
        as_user = "postgres"

    # Short path under /tmp: the unix socket path must stay below ~100 bytes.
    base = Path(tempfile.mkdtemp(prefix="mf-pg-", dir="/tmp"))
    server = PostgresServer(bindir=bindir, base=base, port=0, as_user=as_user)
    started = False
    try:
        if as_user:
            shutil.chown(base, user=as_user)
        server.initdb()
        for attempt in range(START_ATTEMPTS):  # another process may grab the free port first
            server.port = free_port()
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                if attempt == START_ATTEMPTS - 1:
                    raise
        started = True
        server.create_database(DB_NAME)
        yield server
    finally:
        if started:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The running PostgreSQL server object (port, admin_connect, create/drop_database)."""
    yield from start_postgres()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://test@127.0.0.1:PORT/mailfiler``: shared by the whole session."""
    return postgres_server.url(DB_NAME)


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database for this test only; dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    postgres_server.create_database(name)
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
