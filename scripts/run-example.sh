#!/usr/bin/env bash
# Set up mailfiler in .venv and run the daemon on the embedded default:
# a local Maildir and a SQLite store under ./state (config/mailfiler.example.yaml).
#
#   scripts/run-example.sh            # run the daemon in the foreground (Ctrl-C stops it)
#   scripts/run-example.sh status     # any other mailfiler command, with the example config
#
# Works on a fresh Debian 12 machine: as root it installs python3-venv if missing.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
REPO=$(pwd)
VENV="$REPO/.venv"
STAMP="$VENV/.run-setup-cfg.sha256"
export PIP_DISABLE_PIP_VERSION_CHECK=1

PY=$(command -v python3.11 || command -v python3 || true)
if [ -z "$PY" ] || ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "run-example.sh: installing python3 and python3-venv" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv </dev/null >/dev/null
        PY=$(command -v python3.11 || command -v python3)
    else
        echo "run-example.sh: needs Python 3.11 with venv (sudo apt-get install python3-venv)" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
want=$(sha256sum setup.cfg | cut -d' ' -f1)
if [ ! -x "$VENV/bin/mailfiler" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "run-example.sh: installing mailfiler into $VENV" >&2
    "$VENV/bin/pip" install -q -e .
    echo "$want" >"$STAMP"
fi

export MAILFILER_CONFIG="$REPO/config/mailfiler.example.yaml"
# The example's mailbox. mailfiler creates missing tracked folders inside a Maildir but
# never a missing Maildir root (a mistyped path would become an empty, watched mailbox),
# so the example makes its own, as a mail server makes a new user's Maildir.
mkdir -p "$REPO/state/Maildir"
if [ $# -eq 0 ]; then
    cat >&2 <<'TXT'
mailfiler is starting on the example config (Maildir: state/Maildir, store: state/mailfiler.db).
Drop a message into a tracked folder from another terminal: write it to tmp/, then
rename it into new/, as a mail server delivers (a plain cp into new/ can be read half-written):
    cp config/example-mail/contoso-invoice.eml state/Maildir/.Tracked.Contoso/tmp/m1
    mv state/Maildir/.Tracked.Contoso/tmp/m1 state/Maildir/.Tracked.Contoso/new/m1
then list what was tracked:
    scripts/run-example.sh activities
A reply to tracked mail that lands in the Inbox (state/Maildir/new/) is tracked
too; other Inbox mail is not (see `scripts/run-example.sh status`).
TXT
    exec "$VENV/bin/mailfiler" run
fi
exec "$VENV/bin/mailfiler" "$@"
