"""Checks of systemd/mailfiler.service with systemd-analyze (verify and security)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "mailfiler.service"
MAX_EXPOSURE = 2.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None,
    reason="systemd-analyze is not on PATH (Debian package `systemd`)",
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    # No colours, pager or hyperlinks, so the output can be parsed.
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_URLIFY": "0"}
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--no-pager", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order (keys may repeat)."""
    section = ""
    out: list[tuple[str, str, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {raw!r}"
        out.append((section, key.strip(), value.strip()))
    return out


def _verifiable_copy(directory: Path) -> Path:
    """The unit, with binaries that exist on the target but maybe not here swapped.

    ExecStart= names /usr/local/bin/mailfiler, which exists only once the package
    is installed as systemd/README.md describes, and verify fails on a missing
    executable. The copy runs the venv's `mailfiler` script instead (or /bin/true),
    with the same arguments. /bin/kill (ExecReload=, from procps) is swapped only
    if this machine lacks it. User=mailfiler needs nothing: systemd 252's verify
    does not resolve users, so a missing `mailfiler` user is not reported (and
    no user is created by the tests).
    """
    text = UNIT.read_text()
    assert "\nExecStart=/usr/local/bin/mailfiler " in text

    venv_script = Path(sys.executable).parent / "mailfiler"
    start = venv_script if os.access(venv_script, os.X_OK) else Path("/bin/true")
    text = text.replace("\nExecStart=/usr/local/bin/mailfiler ", f"\nExecStart={start} ")
    if not os.access("/bin/kill", os.X_OK):
        text = text.replace("\nExecReload=/bin/kill ", "\nExecReload=/bin/true ")

    # Same file name: the unit name comes from it.
    copy = directory / UNIT.name
    copy.write_text(text)
    return copy


def test_unit_keeps_production_settings() -> None:
    directives = _directives(UNIT.read_text())
    service = {key: value for section, key, value in directives if section == "Service"}
    assert service["ExecStart"] == (
        "/usr/local/bin/mailfiler --config /etc/mailfiler/mailfiler.yaml --log-format json run"
    )
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "2min",
        "Restart": "on-failure",
        "RestartSec": "5s",
        "TimeoutStopSec": "30s",
        "KillSignal": "SIGTERM",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "mailfiler",
        "Group": "mailfiler",
        "StateDirectory": "mailfiler",
        "ConfigurationDirectory": "mailfiler",
        "RuntimeDirectory": "mailfiler",
        "UMask": "0077",
        "ProtectHome": "read-only",
        "ProtectSystem": "strict",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "IPAddressDeny": "any",
        "IPAddressAllow": "localhost",
    }
    assert {key: service.get(key) for key in expected} == expected
    filters = [value for section, key, value in directives if key == "SystemCallFilter"]
    assert filters == ["@system-service", "~@privileged @resources"]
    # Not verified safe for every code path of the daemon; see the comment in the unit.
    assert "MemoryDenyWriteExecute" not in service


def test_memory_limit_fits_the_default_budget() -> None:
    """MemoryMax= leaves room for what the config's default limits let the daemon
    hold (the unit's comment: ~100 MiB + backfill_memory + 2 x max_message_bytes +
    ~50 MiB per parse helper), and MemoryHigh= throttles before it."""
    from mailfiler.config.schema import Limits

    service = {key: value for section, key, value in _directives(UNIT.read_text()) if section == "Service"}
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

    def size(value: str) -> int:
        return int(value[:-1]) * units[value[-1]] if value[-1] in units else int(value)

    limits = Limits()
    mib = 1 << 20
    needed = 100 * mib + limits.backfill_memory + 2 * limits.max_message_bytes + 3 * 50 * mib
    assert needed < size(service["MemoryHigh"]) < size(service["MemoryMax"])


def test_exec_start_arguments_parse() -> None:
    # verify only checks that the binary exists; this checks that the installed CLI
    # accepts the arguments (an option in the wrong place is a usage error, exit 2,
    # and Restart= would just retry it forever).
    service = {key: value for section, key, value in _directives(UNIT.read_text()) if section == "Service"}
    args = service["ExecStart"].split()[1:]
    result = subprocess.run(
        [sys.executable, "-m", "mailfiler", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Run the daemon" in result.stdout


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    copy = _verifiable_copy(tmp_path)
    result = _run("verify", str(copy))
    output = result.stdout + result.stderr
    about_us = [line for line in output.splitlines() if "mailfiler" in line]
    assert about_us == [], output
    assert result.returncode == 0, output


@needs_analyze
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    # Guards the test above against passing vacuously.
    copy = _verifiable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("Type=notify", "Type=notifyy"))
    result = _run("verify", str(copy))
    assert "notifyy" in result.stdout + result.stderr


@needs_analyze
def test_security_exposure_is_low() -> None:
    result = _run("security", "--offline=true", str(UNIT))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(r"Overall exposure level for mailfiler\.service: (\d+(?:\.\d+)?)", output)
    assert match, output
    score = float(match.group(1))
    assert score <= MAX_EXPOSURE, output


# -- drop-ins: one for each kind of server the daemon talks to (systemd/README.md) --------

DROP_INS = sorted((UNIT.parent / "drop-ins").glob("*.conf"))
#: what `systemd-analyze security` says once the drop-in is read: proof that it was applied
SECURITY_SAYS = {
    "cloud-services.conf": "does not define an IP address allow list",
    "dav-server.conf": "allow list with non-localhost entries",
    "exchange-server.conf": "allow list with non-localhost entries",
    "imap-server.conf": "allow list with non-localhost entries",
    "postgresql-remote.conf": "allow list with non-localhost entries",
    "maildirs-only.conf": "fake empty home directories",
    "postgresql-local.conf": "allow list with only localhost entries",
    "vdir-home.conf": "read-only access to home directories",
}


def test_every_drop_in_is_documented_and_leaves_the_system_call_filter_alone() -> None:
    assert {p.name for p in DROP_INS} == set(SECURITY_SAYS)
    readme = (UNIT.parent / "README.md").read_text()
    for path in DROP_INS:
        assert f"drop-ins/{path.name}" in readme, f"systemd/README.md does not mention {path.name}"
        keys = {key for _, key, _ in _directives(path.read_text())}
        # tests/test_sandbox.py runs mailfiler under the unit's filter: a drop-in must not change it
        assert not keys & {"SystemCallFilter", "SystemCallErrorNumber", "RestrictAddressFamilies"}, path.name


def _with_drop_in(directory: Path, drop_in: Path) -> Path:
    copy = _verifiable_copy(directory)
    d = directory / f"{UNIT.name}.d"
    d.mkdir()
    shutil.copy(drop_in, d / drop_in.name)
    return copy


@needs_analyze
@pytest.mark.parametrize("drop_in", DROP_INS, ids=lambda p: p.name)
def test_unit_with_drop_in_verifies_and_stays_hardened(tmp_path: Path, drop_in: Path) -> None:
    copy = _with_drop_in(tmp_path, drop_in)
    result = _run("verify", str(copy))
    output = result.stdout + result.stderr
    assert [line for line in output.splitlines() if "mailfiler" in line] == [], output
    assert result.returncode == 0, output
    security = _run("security", "--offline=true", str(copy))
    text = security.stdout + security.stderr
    assert SECURITY_SAYS[drop_in.name] in text, text
    match = re.search(r"Overall exposure level for mailfiler\.service: (\d+(?:\.\d+)?)", text)
    assert match and float(match.group(1)) <= MAX_EXPOSURE, text


@needs_analyze
def test_verify_reads_the_drop_in_directory(tmp_path: Path) -> None:
    # Guards the test above: a mistake in a drop-in is reported
    broken = tmp_path / "broken.conf"
    broken.write_text("[Service]\nIPAddressAllowz=192.0.2.1\n")
    copy = _with_drop_in(tmp_path, broken)
    result = _run("verify", str(copy))
    assert "IPAddressAllowz" in result.stdout + result.stderr
