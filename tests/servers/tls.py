"""Test certificates made with ``openssl``: a CA, a server certificate for
127.0.0.1/localhost signed by it, and an unrelated CA (for "wrong CA" tests).

Shared by every loopback test server that speaks TLS (Dovecot, the Exchange
and Graph fakes)."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Tls:
    ca_file: Path  # the CA that signed the server certificate
    wrong_ca_file: Path  # a CA that signed nothing here
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def make_tls(base: Path) -> Tls:
    """A test CA, a server certificate for 127.0.0.1/localhost, and an unrelated CA."""
    openssl = shutil.which("openssl") or shutil.which("openssl", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if openssl is None:
        raise RuntimeError("openssl is needed to make the test certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=base, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7", "-subj", "/CN=mailfiler test CA")
    run("req", "-x509", *ec, "-keyout", "wrong.key", "-out", "wrong-ca.crt", "-days", "7", "-subj", "/CN=other CA")
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (base / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "7", "-extfile", "server.ext",
    )  # fmt: skip
    for name in ("ca.key", "wrong.key", "server.key"):
        os.chmod(base / name, 0o600)
    return Tls(base / "ca.crt", base / "wrong-ca.crt", base / "server.crt", base / "server.key")
