#!/bin/sh
# Install everything the test suite needs, then run it (ruff + pytest).
# This is the README's test command; .ci/run calls it too.
set -eu
cd "$(dirname "$0")/.."

# Debian packages used by the tests (real servers and clients on loopback).
APT_PACKAGES="sqlite3 curl chromium docker-registry skopeo podman docker.io containerd wrk nginx-light"
missing=""
for pkg in $APT_PACKAGES; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pip install -q -e '.[test]'

# mitmproxy gets its own virtualenv: current releases need Python >= 3.12, and its
# pinned dependencies must not change the versions the gateway is tested with.
find_mitm_python() {
    for cand in python3.13 python3.12; do
        if "$cand" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; then
            echo "$cand"; return
        fi
    done
    if command -v pyenv >/dev/null 2>&1; then
        for dir in "$(pyenv root)"/versions/3.13* "$(pyenv root)"/versions/3.12*; do
            if [ -x "$dir/bin/python3" ]; then echo "$dir/bin/python3"; return; fi
        done
    fi
    echo "$PYTHON"
}
if ! .venv-mitm/bin/python -c 'import mitmproxy, gateway' >/dev/null 2>&1; then
    rm -rf .venv-mitm
    "$(find_mitm_python)" -m venv .venv-mitm
    .venv-mitm/bin/python -m pip install -q -e '.[mitmproxy]'
fi
# Dependency audit (pip-audit in its own virtualenv): fails on a known vulnerability.
if ! .venv-audit/bin/pip-audit --version >/dev/null 2>&1; then
    rm -rf .venv-audit
    "$PYTHON" -m venv .venv-audit
    .venv-audit/bin/python -m pip install -q pip-audit
fi
"$PYTHON" tests/audit_dependencies.py .venv-audit/bin/pip-audit "$PYTHON" .venv-mitm/bin/python

"$PYTHON" -m ruff check gateway scorer tests bench addons
"$PYTHON" -m ruff format --check gateway scorer tests bench addons
exec "$PYTHON" -m pytest -q "$@"
