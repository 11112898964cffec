"""The login to a CalDAV/CardDAV server: HTTP Basic, or Digest (RFC 7616)
when the server asks for it, with nothing to configure.

Basic goes with every request from the first (one round trip each, as
before) when the password is safe on the wire anyway: over TLS, or to
this machine.  Over plain http to another host the first request goes
without a password, so that a server that only takes Digest, the reason
to use Digest at all, never sees the password in clear; its 401 says
which scheme it wants.  Once Digest is chosen, every request carries it
(httpx reuses the server's nonce), so the extra round trips are paid once
per target.
"""

from __future__ import annotations

import base64
from collections.abc import Generator

import httpx


class LoginAuth(httpx.Auth):
    def __init__(self, username: str, password: str, *, basic_first: bool) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._basic = f"Basic {token}"
        self._digest = httpx.DigestAuth(username, password)
        #: basic | digest | None (not known yet: nothing sent until the server says)
        self.scheme: str | None = "basic" if basic_first else None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.scheme == "digest":
            yield from self._digest.auth_flow(request)
            return
        if self.scheme == "basic":
            request.headers["Authorization"] = self._basic
        response = yield request
        if response.status_code != 401:
            return
        offered = {
            h.strip().split(None, 1)[0].lower() for h in response.headers.get_list("www-authenticate") if h.strip()
        }
        if "digest" in offered:
            self.scheme = "digest"
            request.headers.pop("Authorization", None)
            yield from self._digest.auth_flow(request)
        elif self.scheme is None:
            # Basic, or a server that names no scheme: the one left to try
            self.scheme = "basic"
            request.headers["Authorization"] = self._basic
            yield request
        # else: Basic was sent and refused: the 401 stands (a wrong password)


class BearerAuth(httpx.Auth):
    """An OAuth2 access token (RFC 6750), for servers that take one."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


__all__ = ["BearerAuth", "LoginAuth"]
