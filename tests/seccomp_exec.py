"""Run a command under a seccomp allow-list, the way systemd applies ``SystemCallFilter=``.

Usage: ``/usr/bin/python3 tests/seccomp_exec.py ALLOWED_FILE -- COMMAND [ARG...]``

ALLOWED_FILE holds one system call name per line (``tests/test_sandbox.py`` builds it from
the unit's ``SystemCallFilter=`` lines with ``systemd-analyze syscall-filter``). Every other
system call fails with EPERM (the unit's ``SystemCallErrorNumber=EPERM``); the filter is
inherited by the command and everything it starts (the parse helpers), as under systemd.

It runs with Debian's python3 and its ``python3-seccomp`` (libseccomp's binding), not in the
test venv, and replaces itself with the command (execve keeps the filter).
"""

from __future__ import annotations

import errno
import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    import seccomp  # Debian package python3-seccomp

    with open(argv[1], encoding="utf-8") as fh:
        names = sorted({line.strip() for line in fh if line.strip()})
    filt = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))
    for name in names:
        try:
            filt.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # not a system call on this architecture (systemd skips those too)
    filt.load()  # libseccomp sets no_new_privs first, as NoNewPrivileges=yes does
    os.execvp(argv[3], argv[3:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
