"""A throw-away Dovecot (IMAP + LMTP + ManageSieve) on loopback for the IMAP tests.

``dovecot`` (session scope) writes a config into a short temp dir under /tmp
(Dovecot's unix sockets live there and their paths must stay short), makes a
test CA and a server certificate with ``openssl``, and runs
``dovecot -F -c <dir>/dovecot.conf`` with:

* IMAP on a free 127.0.0.1 port (STARTTLS offered), IMAPS (implicit TLS) and
  LMTP on two more ports;
* with Pigeonhole installed (``dovecot-sieve``, ``dovecot-managesieved``):
  LMTP runs the Sieve plugin (each user's scripts in ``~/sieve``, the active
  one linked from ``~/.dovecot.sieve``) and ManageSieve (STARTTLS offered)
  listens on a fourth port, ``sieve_port`` (0 without Pigeonhole);
* users in a passwd-file (``{PLAIN}`` passwords) and Maildir storage under
  ``<dir>/mail/<user>``, hierarchy separator "/";
* as root (CI): mail owned by ``nobody``, ``default_internal_user=dovecot``,
  ``default_login_user=dovenull``; as a normal user, everything runs as that
  user.

``imap_user`` (function scope) adds a fresh user with a unique name to that
server, so tests never see each other's mail, and removes its mail
afterwards.  :meth:`DovecotServer.set_capabilities` restarts the server with
some capabilities not advertised (``imap_capability``), e.g. without
CONDSTORE/QRESYNC/MOVE/NOTIFY; :func:`start_dovecot` starts a separate server
for a module that needs one.  ``stop``/``start``/``restart``/``kill``/``kick``
are there for fault tests.

Without Dovecot the tests are skipped, except under ``CI=true``, where they
fail (the postgres fixture does the same).
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.mailgen import drop_into_maildir, imap_utf7_encode, maildirpp_folder_dir
from tests.servers.postgres import _unavailable, free_port
from tests.servers.tls import Tls, make_tls

START_ATTEMPTS = 3
READY_TIMEOUT = 10.0
PASSWORD = "secret-Pa55"
DOVECOT_FIXTURES = {"dovecot", "imap_user"}

_user_numbers = itertools.count(1)


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


@dataclass
class ImapUser:
    server: DovecotServer
    name: str
    password: str

    @property
    def home(self) -> Path:
        return self.server.mail_root / self.name

    def settings_kwargs(self, tls: str = "none") -> dict:
        """Keyword arguments for ``ImapSettings`` (port picked for ``tls``)."""
        port = self.server.imaps_port if tls == "implicit" else self.server.port
        ca = str(self.server.tls.ca_file) if tls != "none" and self.server.tls else None
        return {
            "host": "127.0.0.1",
            "port": port,
            "username": self.name,
            "password": self.password,
            "tls": tls,
            "ca_file": ca,
        }

    def create_folder(self, folder: str) -> None:
        self.server.create_folder(self.name, folder)

    def save(self, folder: str, data: bytes) -> None:
        self.server.save(self.name, folder, data)

    def deliver(self, data: bytes) -> None:
        self.server.deliver(self.name, data)

    def seed(self, folder: str, messages: list[bytes]) -> None:
        """Put many messages into a folder fast: files written straight into the
        user's Maildir (Dovecot gives them UIDs when it next looks), instead of
        one APPEND each.  The folder is created first if needed."""
        if folder.upper() == "INBOX":
            self.server.doveadm("mailbox", "status", "-u", self.name, "messages", "INBOX")  # makes the Maildir
            folder_dir = self.home / "Maildir"
        else:
            self.server.doveadm("mailbox", "create", "-u", self.name, folder, check=False)
            folder_dir = maildirpp_folder_dir(self.home / "Maildir", folder)
        uid, gid = self.server._mail_owner()
        for data in messages:
            path = drop_into_maildir(folder_dir, data, fsync=False)
            if self.server.as_root:
                os.chown(path, uid, gid)

    def kick(self) -> None:
        self.server.kick(self.name)

    @property
    def sieve_dir(self) -> Path:
        """Where Pigeonhole keeps this user's scripts (NAME.sieve)."""
        return self.home / "sieve"

    def write_sieve_file(self, name: str, text: str, *, active: bool = False) -> None:
        """Put a script straight into the user's sieve folder, as an admin with a
        shell would: ManageSieve's PUTSCRIPT refuses a broken one, this does not."""
        uid, gid = self.server._mail_owner()
        for folder in (self.home, self.sieve_dir):
            folder.mkdir(exist_ok=True)
            os.chown(folder, uid, gid)
        path = self.sieve_dir / f"{name}.sieve"
        path.write_text(text, encoding="utf-8")
        os.chown(path, uid, gid)
        if active:
            link = self.home / ".dovecot.sieve"
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(f"sieve/{name}.sieve")
            os.lchown(link, uid, gid)

    def client(self) -> AdminClient:
        return AdminClient(self)


@dataclass
class DovecotServer:
    base: Path
    tls: Tls | None
    port: int = 0
    imaps_port: int = 0
    lmtp_port: int = 0
    #: ManageSieve (RFC 5804); 0 when Pigeonhole is not installed
    sieve_port: int = 0
    #: more settings for Pigeonhole's plugin block (e.g. "sieve_extensions = -include")
    sieve_extra: str = ""
    separator: str = "/"
    #: capabilities not to advertise after login (None: Dovecot's own list)
    dropped: frozenset[str] = frozenset()
    process: subprocess.Popen | None = None
    full_capabilities: tuple[str, ...] = ()
    users: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.base / "dovecot.conf"

    @property
    def mail_root(self) -> Path:
        return self.base / "mail"

    @property
    def log(self) -> Path:
        return self.base / "dovecot.log"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    # -- config ------------------------------------------------------------------

    def _mail_owner(self) -> tuple[int, int]:
        if self.as_root:
            nobody = pwd.getpwnam("nobody")
            return nobody.pw_uid, nobody.pw_gid
        return os.getuid(), os.getgid()

    def write_config(self) -> None:
        uid, gid = self._mail_owner()
        me = pwd.getpwuid(os.getuid()).pw_name
        if self.as_root:
            users = "default_internal_user = dovecot\ndefault_login_user = dovenull\n"
            auth_worker = ""
        else:
            group = _group_name(os.getgid())
            users = f"default_internal_user = {me}\ndefault_internal_group = {group}\ndefault_login_user = {me}\n"
            auth_worker = f"service auth-worker {{\n  user = {me}\n}}\n"
        ssl = "ssl = no\n"
        if self.tls:
            ssl = f"ssl = yes\nssl_cert = <{self.tls.cert}\nssl_key = <{self.tls.key}\n"
        protocols, sieve = "imap lmtp", ""
        if self.sieve_port:
            protocols += " sieve"
            sieve = f"""protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
  {self.sieve_extra}
}}
service managesieve-login {{
  chroot =
  inet_listener sieve {{
    address = 127.0.0.1
    port = {self.sieve_port}
  }}
}}
"""
        capability = ""
        if self.dropped and self.full_capabilities:
            kept = [c for c in self.full_capabilities if c.upper() not in self.dropped]
            capability = f"imap_capability = {' '.join(kept)}\n"
        text = f"""# written by tests/servers/dovecot.py
instance_name = mf-test-{self.base.name}
base_dir = {self.base}/run
state_dir = {self.base}/state
log_path = {self.log}
protocols = {protocols}
listen = 127.0.0.1
{users}first_valid_uid = 1
first_valid_gid = 1
disable_plaintext_auth = no
auth_mechanisms = plain login
# wrong-password tests must not slow down every later login from 127.0.0.1
auth_failure_delay = 0
{ssl}{capability}mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = {self.separator}
}}
# one passwd-file per user: Dovecot re-reads a changed passwd-file at most once
# a second, and each test adds a user
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.base}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.mail_root}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port if self.tls else 0}
  }}
}}
service anvil {{
  chroot =
  # the auth process finds no penalty socket, so failed logins do not make
  # every later login from this IP wait up to 15 s
  unix_listener anvil-auth-penalty {{
    path = anvil-auth-penalty-disabled
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.lmtp_port}
  }}
  unix_listener lmtp {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{auth_worker}{sieve}"""
        self.conf.write_text(text)
        (self.base / "users").mkdir(exist_ok=True)

    # -- process -----------------------------------------------------------------

    def start(self) -> None:
        """Start the master (same ports as before, if it ran) and wait for the greeting."""
        dovecot = find_binary("dovecot")
        assert dovecot is not None
        self.write_config()
        out = open(self.base / "dovecot.out", "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.process = subprocess.Popen(
                [dovecot, "-F", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.process.returncode}\n{self.log_tail()}")
            if self.probe():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"dovecot did not greet on port {self.port} within {READY_TIMEOUT} s\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def probe(self) -> bool:
        """Read the ``* OK`` greeting and LOGOUT (a bare connect-and-close makes
        Dovecot's later shutdown wait for about 6 s)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s, s.makefile("rwb") as f:
                if not f.readline().startswith(b"* OK"):
                    return False
                f.write(b"p LOGOUT\r\n")
                f.flush()
                while line := f.readline():
                    if line.startswith(b"p "):
                        break
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the master and wait; then SIGKILL what is left of the server,
        as systemd would: Dovecot's imap processes outlive their master by about
        10 s before they say BYE."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def kill(self, *, master_only: bool = False) -> None:
        """SIGKILL the whole server at once, as a crash would: every client
        connection drops.  ``master_only`` kills just the master; its imap
        processes then keep their clients and say BYE about 10 s later."""
        if self.process is None or self.process.poll() is not None:
            return
        if master_only:
            self.process.kill()
        else:
            # the master was started in a session of its own: its group is the server
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._wait_port_free()

    def restart(self) -> None:
        self.stop()
        self._wait_port_free()
        self.start()

    def _wait_port_free(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                # as Dovecot binds: connections in TIME_WAIT do not block it
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", self.port))
                    return
                except OSError:
                    time.sleep(0.05)

    def set_capabilities(self, drop: set[str] | frozenset[str] = frozenset()) -> None:
        """Restart without advertising ``drop`` after login ({} restores all)."""
        self.dropped = frozenset(c.upper() for c in drop)
        self.restart()

    def log_tail(self, lines: int = 30) -> str:
        texts = []
        for path in (self.base / "dovecot.out", self.log):
            with contextlib.suppress(OSError):
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "dovecot log:\n" + "\n".join(texts)

    # -- users and mail ------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str = PASSWORD) -> ImapUser:
        name = name or f"u{next(_user_numbers)}-{uuid.uuid4().hex[:8]}"
        self.users[name] = password
        path = self.base / "users" / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        os.replace(tmp, path)  # whole or not at all
        return ImapUser(self, name, password)

    def remove_user_mail(self, name: str) -> None:
        self.kick(name)
        shutil.rmtree(self.mail_root / name, ignore_errors=True)

    def doveadm(self, *args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
        doveadm = find_binary("doveadm")
        assert doveadm is not None
        proc = subprocess.run([doveadm, "-c", str(self.conf), *args], input=stdin, capture_output=True, timeout=60)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"doveadm {' '.join(args)} exited with {proc.returncode}: {proc.stderr.decode(errors='replace')}"
            )
        return proc

    def create_folder(self, user: str, folder: str) -> None:
        """Create a folder (UTF-8 name with the server's separator), as a client would."""
        self.doveadm("mailbox", "create", "-s", "-u", user, folder)

    def save(self, user: str, folder: str, data: bytes) -> None:
        self.doveadm("save", "-u", user, "-m", folder, stdin=data)

    def deliver(self, user: str, data: bytes) -> None:
        """Deliver to INBOX over LMTP, as an MTA would."""
        with smtplib.LMTP("127.0.0.1", self.lmtp_port, timeout=30) as lmtp:
            lmtp.sendmail("sender@example.org", [user], data)

    def kick(self, user: str) -> None:
        """Disconnect every IMAP session of ``user`` (the server says BYE)."""
        self.doveadm("kick", user, check=False)

    def capabilities_after_login(self, user: ImapUser) -> list[str]:
        with user.client() as client:
            return client.capabilities()


FLAG_LETTERS = {"S": "\\Seen", "F": "\\Flagged", "R": "\\Answered", "T": "\\Deleted", "D": "\\Draft"}


class AdminClient:
    """A mail client on its own plain IMAP connection (stdlib imaplib, independent
    of the code under test): APPEND, flag, MOVE, expunge, and a snapshot of the
    whole mailbox's observable state."""

    def __init__(self, user: ImapUser) -> None:
        self.user = user
        self.imap = imaplib.IMAP4("127.0.0.1", user.server.port, timeout=30)
        try:
            self.imap.login(user.name, user.password)
        except BaseException:
            self.imap.shutdown()
            raise

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            self.imap.logout()

    @staticmethod
    def box(folder: str) -> str:
        if folder.upper() == "INBOX":
            return "INBOX"
        name = imap_utf7_encode(folder)
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def _ok(self, result: tuple[str, list], what: str) -> list:
        typ, data = result
        if typ != "OK":
            raise RuntimeError(f"{what}: {typ} {data}")
        return data

    def capabilities(self) -> list[str]:
        return self._ok(self.imap.capability(), "CAPABILITY")[0].decode().split()

    def create(self, folder: str) -> None:
        self._ok(self.imap.create(self.box(folder)), f"CREATE {folder}")

    def append(self, folder: str, data: bytes, flags: str = "") -> int:
        """APPEND; returns the new UID (APPENDUID).  ``flags``: letters as in Maildir."""
        flag_list = "(" + " ".join(FLAG_LETTERS[c] for c in flags) + ")" if flags else None
        resp = self._ok(self.imap.append(self.box(folder), flag_list, None, data), f"APPEND {folder}")
        text = resp[0].decode()
        return int(text.split("APPENDUID", 1)[1].split()[1].rstrip("]"))

    def select(self, folder: str, readonly: bool = False) -> int:
        data = self._ok(self.imap.select(self.box(folder), readonly=readonly), f"SELECT {folder}")
        return int(data[0] or 0)

    def store(self, folder: str, uid: int, flags: str, op: str = "+FLAGS") -> None:
        self.select(folder)
        flag_list = "(" + " ".join(FLAG_LETTERS[c] for c in flags) + ")"
        self._ok(self.imap.uid("STORE", str(uid), op, flag_list), f"STORE {folder} {uid}")

    def expunge(self, folder: str, uid: int) -> None:
        self.store(folder, uid, "T")
        self._ok(self.imap.uid("EXPUNGE", str(uid)), f"UID EXPUNGE {folder} {uid}")

    def move(self, folder: str, uid: int, dest: str) -> int:
        """UID MOVE; returns the UID in ``dest`` (COPYUID)."""
        self.select(folder)
        self._ok(self.imap.uid("MOVE", str(uid), self.box(dest)), f"UID MOVE {folder} {uid}")
        _, codes = self.imap.response("COPYUID")
        return int(codes[-1].split()[2])

    def uids(self, folder: str) -> list[int]:
        self.select(folder, readonly=True)
        data = self._ok(self.imap.uid("SEARCH", "ALL"), f"UID SEARCH {folder}")
        return [int(x) for x in data[0].split()]

    def folders(self) -> list[str]:
        """Selectable folders, wire names (modified UTF-7, unquoted)."""
        out = []
        for line in self._ok(self.imap.list(), "LIST"):
            flags, _, rest = line.decode().partition(") ")
            if "\\Noselect" in flags or "\\NonExistent" in flags:
                continue
            name = rest.split(" ", 1)[1]
            if name.startswith('"'):
                name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
            out.append(name)
        return sorted(out)

    def snapshot(self) -> list:
        """Every folder's STATUS and every message's UID, flags and size."""
        caps = self.capabilities()
        items = "MESSAGES UIDNEXT UIDVALIDITY UNSEEN" + (" HIGHESTMODSEQ" if "CONDSTORE" in caps else "")
        state: list = []
        for wire in self.folders():
            box = '"' + wire.replace("\\", "\\\\").replace('"', '\\"') + '"'
            status = self._ok(self.imap.status(box, f"({items})"), f"STATUS {wire}")
            state.append((wire, status[0].decode().rsplit("(", 1)[1]))
            n = int(self._ok(self.imap.select(box, readonly=True), f"EXAMINE {wire}")[0] or 0)
            if n:
                data = self._ok(self.imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE)"), f"FETCH {wire}")
                state.append(sorted(x.decode() for x in data if isinstance(x, bytes)))
        return state


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def sieve_installed() -> bool:
    """Pigeonhole (the LMTP Sieve plugin and ManageSieve) is installed."""
    return find_binary("sievec") is not None and Path("/usr/lib/dovecot/managesieve").exists()


def require_sieve(server: DovecotServer) -> None:
    """Skip (fail under CI=true) a test that needs Sieve when Pigeonhole is missing."""
    if not server.sieve_port:
        _unavailable(
            "Pigeonhole is not installed (no sievec or managesieve); "
            "install it with: apt-get install dovecot-sieve dovecot-managesieved"
        )


def _check_installed() -> None:
    if find_binary("dovecot") is None or find_binary("doveadm") is None:
        _unavailable(
            "Dovecot is not installed (no dovecot/doveadm on PATH or in /usr/sbin); "
            "install it with: apt-get install dovecot-imapd dovecot-lmtpd"
        )
    if os.geteuid() == 0:
        for user in ("dovecot", "dovenull", "nobody"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                _unavailable(f"running as root but there is no {user!r} user for Dovecot (is dovecot-core installed?)")


def start_dovecot(
    *, tls: bool = True, drop: set[str] | frozenset[str] = frozenset(), separator: str = "/", sieve_extra: str = ""
) -> Iterator[DovecotServer]:
    """Start a server (or skip/fail); yield it; stop it and remove its directory."""
    _check_installed()
    # Short path under /tmp: Dovecot's unix socket paths must stay below ~100 bytes.
    base = Path(tempfile.mkdtemp(prefix="mf-dc-", dir="/tmp"))
    os.chmod(base, 0o755)  # the login and mail processes run as other users
    server = DovecotServer(base=base, tls=make_tls(base) if tls else None, separator=separator, sieve_extra=sieve_extra)
    try:
        server.mail_root.mkdir()
        if server.as_root:
            uid, gid = server._mail_owner()
            os.chown(server.mail_root, uid, gid)
        for attempt in range(START_ATTEMPTS):  # another process may grab a free port first
            server.port, server.imaps_port, server.lmtp_port = free_port(), free_port(), free_port()
            server.sieve_port = free_port() if sieve_installed() else 0
            try:
                server.start()
                break
            except RuntimeError:
                server.kill()
                if attempt == START_ATTEMPTS - 1:
                    raise
        if drop:
            probe = server.add_user("capability-probe")
            server.full_capabilities = tuple(server.capabilities_after_login(probe))
            server.set_capabilities(set(drop))
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """The session's Dovecot: IMAP (+STARTTLS), IMAPS and LMTP on loopback."""
    yield from start_dovecot()


@pytest.fixture
def imap_user(dovecot: DovecotServer) -> Iterator[ImapUser]:
    """A new user with an empty INBOX, for this test only."""
    if dovecot.process is None or dovecot.process.poll() is not None:
        dovecot.start()  # a fault test left it stopped
    user = dovecot.add_user()
    try:
        yield user
    finally:
        dovecot.remove_user_mail(user.name)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "dovecot: needs a real Dovecot server (started by the dovecot fixture; skipped if Dovecot is not "
        "installed, failed under CI=true)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use a Dovecot fixture get the `dovecot` marker, so `-m "not dovecot"` works.
    for item in items:
        if DOVECOT_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dovecot)
