#!/usr/bin/env bash
# The one test command: system packages -> .venv -> ruff -> pytest.
#
#   scripts/test.sh                 # whole suite
#   scripts/test.sh -x tests/test_mailgen.py -k drop   # arguments go to pytest
#
# Works from any directory and on a fresh Debian 12 machine. As root it installs the
# Debian packages the tests need (only when one is missing, so a warm machine never
# touches apt). As a normal user it says which tests will be skipped instead.
# The exit code is pytest's; "no tests collected" (5) is turned into a failure,
# and a ruff failure makes an otherwise green run fail.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
REPO=$(pwd)
VENV="$REPO/.venv"
STAMP="$VENV/.setup-cfg.sha256"
export PIP_DISABLE_PIP_VERSION_CHECK=1

T0=$(date +%s.%N)
say() { printf '[test.sh %5.1fs] %s\n' "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{print a-b}')" "$*" >&2; }

# ---------------------------------------------------------------- system packages
# package -> what is lost without it
declare -A NEEDS=(
    [postgresql]="PostgreSQL-store tests (postgres marker) will be skipped (with CI=true they fail)"
    [python3-venv]="the test venv cannot be created with the system python3"
    [systemd]="systemd-analyze checks of the unit file will be skipped"
    [python3-seccomp]="tests that run mailfiler under the unit's system call filter will be skipped (with CI=true they fail)"
    [git]="tests that need git will be skipped"
    [dovecot-imapd]="IMAP tests (dovecot marker) will be skipped (with CI=true they fail)"
    [dovecot-lmtpd]="IMAP delivery tests (dovecot marker) will be skipped (with CI=true they fail)"
    [dovecot-sieve]="server-rules tests (Sieve filing over LMTP) will be skipped (with CI=true they fail)"
    [dovecot-managesieved]="server-rules tests (ManageSieve) will be skipped (with CI=true they fail)"
)
installed() { [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]; }

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in postgresql python3-venv systemd python3-seccomp git dovecot-imapd dovecot-lmtpd dovecot-sieve dovecot-managesieved; do
        installed "$pkg" || missing+=("$pkg")
    done
    if ! command -v python3.11 >/dev/null 2>&1 && ! command -v python3 >/dev/null 2>&1; then
        missing+=(python3)
    fi
else
    say "not a dpkg system: skipping the system-package check"
fi

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        say "installing missing packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
        say "packages installed"
    else
        echo "test.sh: not root, so these Debian packages cannot be installed: ${missing[*]}" >&2
        for pkg in "${missing[@]}"; do
            echo "  - $pkg: ${NEEDS[$pkg]:-needed to run the tests}" >&2
        done
        echo "  Install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    fi
fi

# ---------------------------------------------------------------- venv
PY=""
for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY=$(command -v "$cand"); break; fi
done
if [ -z "$PY" ]; then
    echo "test.sh: no python3.11 or python3 on PATH" >&2
    exit 1
fi

venv_ok() {
    [ -x "$VENV/bin/python" ] &&
        "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}
if ! venv_ok; then
    say "creating $VENV with $PY"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi

want=$(cat setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" != "$have" ] || [ ! -x "$VENV/bin/pytest" ] || [ ! -x "$VENV/bin/ruff" ]; then
    say "installing the package and its test extra into .venv"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install -q -e '.[test]' </dev/null
    echo "$want" >"$STAMP"
fi
say "venv ready ($("$VENV/bin/python" -V 2>&1))"

# ---------------------------------------------------------------- lint
lint_dirs=()
for d in daemon tests bench; do [ -d "$d" ] && lint_dirs+=("$d"); done
ruff_rc=0
"$VENV/bin/ruff" check "${lint_dirs[@]}" || ruff_rc=$?
# the layout too: a reformat never mixes into a change's diff ('ruff format' fixes it)
"$VENV/bin/ruff" format --check "${lint_dirs[@]}" || ruff_rc=$?
if [ "$ruff_rc" -ne 0 ]; then
    say "ruff check or ruff format --check failed (exit $ruff_rc); running the tests anyway"
else
    say "ruff check and ruff format --check passed"
fi

# ---------------------------------------------------------------- import contract and types
# The layer contract (.importlinter) and mypy (mypy.ini) on the package, from the
# repository root where their configs are: like ruff, a failure fails an otherwise
# green run, but the tests still run.  Both cache (a warm run takes about a second).
contract_rc=0
contract_out=$("$VENV/bin/lint-imports" --no-logo .importlinter </dev/null 2>&1) || contract_rc=$?
if [ "$contract_rc" -ne 0 ]; then
    echo "$contract_out" >&2
    say "import contract broken (exit $contract_rc); running the tests anyway"
else
    say "import contract kept"
fi
mypy_rc=0
"$VENV/bin/mypy" </dev/null || mypy_rc=$?
if [ "$mypy_rc" -ne 0 ]; then
    say "mypy failed (exit $mypy_rc); running the tests anyway"
else
    say "mypy passed"
fi

# ---------------------------------------------------------------- tests
pytest_rc=0
"$VENV/bin/python" -m pytest "$@" </dev/null || pytest_rc=$?
say "pytest exited with $pytest_rc"

if [ "$pytest_rc" -eq 5 ]; then
    echo "test.sh: FAILED: pytest collected no tests (exit 5). Check the arguments and testpaths in pytest.ini." >&2
    exit 1
fi
if [ "$pytest_rc" -eq 0 ] && [ "$ruff_rc" -ne 0 ]; then
    echo "test.sh: FAILED: the tests passed but ruff did not (see above; 'ruff check --fix' and 'ruff format daemon tests bench' fix most)." >&2
    exit 1
fi
if [ "$pytest_rc" -eq 0 ] && [ "$contract_rc" -ne 0 ]; then
    echo "test.sh: FAILED: the tests passed but the import contract is broken (see above; .importlinter says the layers)." >&2
    exit 1
fi
if [ "$pytest_rc" -eq 0 ] && [ "$mypy_rc" -ne 0 ]; then
    echo "test.sh: FAILED: the tests passed but mypy did not (see above; mypy.ini says what is checked)." >&2
    exit 1
fi
exit "$pytest_rc"
