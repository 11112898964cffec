"""HTTP authentication of the fake Exchange: Basic, NTLM through pyspnego's acceptor, and
OAuth 2.0 bearer tokens the test grants (``EwsServer.grant_token``; no token endpoint).

pyspnego (already installed as requests-ntlm's dependency, which exchangelib uses for NTLM)
is the one maintained Python NTLM implementation with a server side; ntlm-auth is client-only
and deprecated.  NTLM authenticates a connection, not a request (as IIS does): after the
three-leg handshake the connection's later requests need no Authorization header.

pyspnego's acceptor reads its user list from the file named by NTLM_USER_FILE; the
environment is process-wide, so each handshake step sets it under one lock.
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import spnego

from tests.servers.ews.model import Store, User
from tests.servers.httpfake import Response

_ENV_LOCK = threading.Lock()


@dataclass
class ConnectionAuth:
    """Per-connection NTLM state (kept on the handler, which lives as long as the connection)."""

    context: Any = None
    user: User | None = None


@dataclass
class Authenticator:
    store: Store
    schemes: set[str] = field(default_factory=lambda: {"basic", "ntlm"})
    #: OAuth 2.0 bearer tokens this server takes (scheme "bearer"): token -> smtp of its user
    tokens: dict[str, str] = field(default_factory=dict)
    _user_file: Path | None = None

    def challenge(self, token: str | None = None) -> Response:
        offers = []
        if "ntlm" in self.schemes:
            offers.append(f"NTLM {token}" if token else "NTLM")
        if "basic" in self.schemes and token is None:
            offers.append('Basic realm="127.0.0.1"')
        if "bearer" in self.schemes and token is None:
            offers.append(
                'Bearer authorization_uri="https://login.example.com/oauth2/authorize", error="invalid_token"'
            )
        return Response(
            401, {"WWW-Authenticate": ", ".join(offers), "Content-Type": "text/html"}, b"401 - Unauthorized"
        )

    def _write_user_file(self) -> Path:
        # Heimdal format DOMAIN:USER:PASSWORD (and :UPN:PASSWORD), rewritten as users are added
        if self._user_file is None:
            fd, name = tempfile.mkstemp(prefix="ews-ntlm-users-")
            os.close(fd)
            self._user_file = Path(name)
        lines = []
        for user in self.store.users.values():
            lines.append(f"{self.store.domain}:{user.username}:{user.password}")
            lines.append(f":{user.smtp}:{user.password}")
            lines.append(f":{user.username}:{user.password}")  # no domain given: the server's own
        self._user_file.write_text("\n".join(lines) + "\n")
        return self._user_file

    def close(self) -> None:
        if self._user_file is not None:
            self._user_file.unlink(missing_ok=True)

    def authenticate(self, headers: dict[str, str], conn: ConnectionAuth) -> User | Response:
        """The authenticated user, or the 401 answer to send (a challenge or a refusal)."""
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in self.schemes:
            try:
                login, _, password = base64.b64decode(value).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return self.challenge()
            user = self.store.user_by_login(login)
            if user is not None and user.password == password:
                return user
            return self.challenge()
        if scheme == "bearer" and "bearer" in self.schemes:
            user = self.store.users.get(self.tokens.get(value.strip(), ""))
            return user if user is not None else self.challenge()
        if scheme in ("ntlm", "negotiate") and "ntlm" in self.schemes:
            return self._ntlm(value, conn)
        if conn.user is not None and not header:
            return conn.user  # an NTLM-authenticated connection
        return self.challenge()

    def _ntlm(self, value: str, conn: ConnectionAuth) -> User | Response:
        try:
            token = base64.b64decode(value)
        except ValueError:
            return self.challenge()
        with _ENV_LOCK:
            os.environ["NTLM_USER_FILE"] = str(self._write_user_file())
            try:
                if conn.context is None or token[8:12] == b"\x01\x00\x00\x00":  # a new NEGOTIATE message
                    conn.context = spnego.server(protocol="ntlm")
                    conn.user = None
                answer = conn.context.step(token)
            except spnego.exceptions.SpnegoError:
                conn.context = None
                return self.challenge()
        if not conn.context.complete:
            return self.challenge(base64.b64encode(answer or b"").decode())
        principal = conn.context.client_principal or ""
        conn.context = None
        user = self.store.user_by_login(principal)
        if user is None:
            return self.challenge()
        conn.user = user
        return user
