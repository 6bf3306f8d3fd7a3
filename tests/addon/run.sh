#!/usr/bin/env bash
# The add-on checks that need Python tools (scripts/test.sh runs this; so can you):
#   1. tests/addon/lint.py --self-test   every linter rule reports the case it is for
#   2. tests/addon/lint.py               addon/ against the community add-on linter's schemas
#                                        and rules (skips when ../shared is absent), and the
#                                        local-build folder scripts/addon-local.sh makes
#   3. hadolint addon/Dockerfile         clean (its inline ignores carry their reason)
# Tools come from PyPI at the pins of tests/addon/requirements.txt, into tests/addon/venv
# (made once, remade when the requirements change).
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$DIR/../.." && pwd)"
VENV="$DIR/venv"
REQ="$DIR/requirements.txt"

say() { printf 'addon-checks: %s\n' "$*"; }

PY="${ADDON_CHECKS_PYTHON:-python3}"
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    # Debian's python3 without its venv module.
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    say "installing python3-venv"
    $SUDO apt-get install -y --no-install-recommends python3-venv >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends python3-venv >/dev/null; }
fi
if [ -x "$VENV/bin/python" ] && cmp -s "$REQ" "$VENV/requirements.txt"; then
    : # up to date
else
    say "creating $VENV from $(basename "$REQ")"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    "$VENV/bin/python" -m pip check >/dev/null
    cp "$REQ" "$VENV/requirements.txt"
fi

cd "$ROOT"
say "add-on linter self-test"
"$VENV/bin/python" tests/addon/lint.py --self-test
say "add-on linter on addon/"
"$VENV/bin/python" tests/addon/lint.py
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
scripts/addon-local.sh "$tmp/camqtt" >/dev/null
say "add-on linter on the local-build folder of scripts/addon-local.sh"
"$VENV/bin/python" tests/addon/lint.py "$tmp/camqtt"
say "hadolint $("$VENV/bin/hadolint" --version) on addon/Dockerfile"
"$VENV/bin/hadolint" --no-color addon/Dockerfile
say "hadolint: addon/Dockerfile clean"
