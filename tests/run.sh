#!/bin/sh
# Install everything the test suite needs, then run it (ruff + pytest).
# This is the README's test command; .ci/run calls it too.
set -eu
cd "$(dirname "$0")/.."

# Debian packages used by the tests (real servers and clients on loopback).
APT_PACKAGES="sqlite3 curl chromium docker-registry skopeo podman"
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
"$PYTHON" -m ruff check gateway tests bench addons
"$PYTHON" -m ruff format --check gateway tests bench addons
exec "$PYTHON" -m pytest -q "$@"
