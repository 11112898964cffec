"""Secrets come from files (or systemd credentials) and commands, never from
the config text or the environment, and are never logged.

:class:`SecretProvider` is the one way every backend, sync target and the
store get theirs: a password file, a password command, or an OAuth2 token
command whose token is kept until it expires.  A command runs without a
shell, in its own process group, and is killed with its children when it
takes longer than its timeout."""

from __future__ import annotations

import json
import os
import signal
import ssl
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailfiler.errors import UserError

#: a token is asked for again this long before it expires
TOKEN_MARGIN = 60.0


class SecretUnavailable(UserError):
    """A secret file could not be read or a secret command failed."""

    code = "secret-unavailable"


def expand(spec: str, *, what: str) -> Path:
    """The file a secret spec names: ``${CREDENTIALS_DIRECTORY}`` (systemd's
    ``LoadCredential=``) and other variables are expanded now."""
    if "${CREDENTIALS_DIRECTORY}" in spec and "CREDENTIALS_DIRECTORY" not in os.environ:
        raise SecretUnavailable(
            f"{what}: {spec} names $CREDENTIALS_DIRECTORY, which is only set under systemd with LoadCredential=",
            path=spec,
        )
    return Path(os.path.expandvars(spec)).expanduser()


def read_secret(spec: str, *, what: str) -> str:
    """Read a secret from a file (its first line's end stripped)."""
    path = expand(spec, what=what)
    try:
        value = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretUnavailable(f"{what}: cannot read {path}: {exc.strerror}", path=str(path)) from exc
    value = value.rstrip("\r\n")
    if not value:
        raise SecretUnavailable(f"{what}: {path} is empty", path=str(path))
    return value


def permission_problem(spec: str, *, what: str) -> str | None:
    """Why a secret file is too open (group or others may read or write it,
    as ssh and fetchmail refuse), or None.  A file that cannot be looked at now
    (a systemd credential outside systemd, a missing file) is no problem here:
    reading it says what is wrong."""
    try:
        path = expand(spec, what=what)
        st = path.stat()
    except (SecretUnavailable, OSError):
        return None
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        return (
            f"{what}: {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):04o});"
            f" make it readable by mailfiler alone: chmod 600 {path}"
        )
    return None


def run_secret_command(argv: list[str], *, what: str, timeout: float = 30.0) -> str:
    """Run a program (no shell) that prints a secret, e.g. a password manager
    or an OAuth2 token helper; return its first output line.  Its output is
    never logged, nor its error output (it might echo the secret)."""
    try:
        # argv from the admin's config, never a shell; its own session, so a
        # helper that hangs is killed with whatever it started
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise SecretUnavailable(f"{what}: program {argv[0]!r} not found") from None
    except OSError as exc:
        raise SecretUnavailable(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SecretUnavailable(f"{what}: {argv[0]} did not finish within {timeout:g} s; it was stopped") from None
    if proc.returncode != 0:
        raise SecretUnavailable(f"{what}: {argv[0]} exited with status {proc.returncode}")
    value = out.split("\n", 1)[0].rstrip("\r")
    if not value:
        raise SecretUnavailable(f"{what}: {argv[0]} printed nothing")
    return value


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        proc.kill()
    try:
        proc.communicate(timeout=2.0)
    except subprocess.TimeoutExpired:  # a child that left the group holds the pipe: stop reading
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait(timeout=2.0)


def load_client_cert(ctx: ssl.SSLContext, cert: str, key: str | None, *, what: str = "client_cert") -> None:
    """Present a TLS client certificate (PEM; its key in ``key`` or in the same file)."""
    cert_path = expand(cert, what=what)
    key_path = expand(key, what=what) if key is not None else None
    try:
        ctx.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise SecretUnavailable(f"{what}: cannot load {cert_path}: {reason}", path=str(cert_path)) from None


def parse_token(line: str, *, what: str, now: float) -> tuple[str, float | None]:
    """(token, expiry as a time.time(), or None when unknown) from a token
    command's output: the token itself, or JSON with ``access_token`` and
    ``expires_in`` (seconds) or ``expires_at`` (Unix time)."""
    if not line.startswith("{"):
        return line, None
    try:
        data = json.loads(line)
        token = data["access_token"]
    except (ValueError, KeyError, TypeError):
        raise SecretUnavailable(f"{what}: the token command printed JSON without an access_token") from None
    if not isinstance(token, str) or not token:
        raise SecretUnavailable(f"{what}: the token command printed an empty access_token")
    if isinstance(data.get("expires_in"), int | float):
        return token, now + float(data["expires_in"])
    if isinstance(data.get("expires_at"), int | float):
        return token, float(data["expires_at"])
    return token, None


@dataclass
class SecretProvider:
    """A login's secret, read when it is needed (call it; it may block, so not
    on the event loop).  OAuth2 tokens with a known lifetime are kept until
    :data:`TOKEN_MARGIN` seconds before they expire; :meth:`invalidate` (after
    a refused login) makes the next call ask again."""

    what: str
    password_file: str | None = None
    password_command: list[str] | None = None
    oauth2_token_command: list[str] | None = None
    timeout: float = 30.0
    clock: object = field(default=time.time, repr=False)
    _token: str | None = field(default=None, repr=False)
    _expires: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def mechanism(self) -> str:
        """``oauth2`` (a bearer token) or ``password``."""
        return "oauth2" if self.oauth2_token_command else "password"

    def __call__(self) -> str:
        if self.password_file is not None:
            return read_secret(self.password_file, what=f"{self.what} password_file")
        if self.password_command is not None:
            what = f"{self.what} password_command"
            return run_secret_command(self.password_command, what=what, timeout=self.timeout)
        assert self.oauth2_token_command is not None
        with self._lock:
            now = self.clock()  # type: ignore[operator]
            if self._token is not None and now < self._expires - TOKEN_MARGIN:
                return self._token
            what = f"{self.what} oauth2_token_command"
            line = run_secret_command(self.oauth2_token_command, what=what, timeout=self.timeout)
            token, expires = parse_token(line, what=what, now=now)
            # a token of unknown lifetime is asked for at each login (the helper keeps its own)
            self._token, self._expires = (token, expires) if expires is not None else (None, 0.0)
            return token

    def invalidate(self) -> None:
        with self._lock:
            self._token, self._expires = None, 0.0

    def __repr__(self) -> str:  # never the secret
        return f"SecretProvider({self.what!r}, {self.mechanism})"


__all__ = [
    "SecretProvider",
    "SecretUnavailable",
    "load_client_cert",
    "parse_token",
    "permission_problem",
    "read_secret",
    "run_secret_command",
]
