#!/usr/bin/env bash
# Prepare everything the Home Assistant end-to-end test needs; safe to run again.
#
#   * mosquitto + mosquitto_pub/mosquitto_sub (apt, when missing and we are root)
#   * tests/ha/venv: CPython 3.13 with homeassistant 2025.4.4 and the pins of
#     requirements.lock, installed under HA's own package_constraints.txt
#
# Interpreter: $HA_PYTHON, else pyenv's 3.13.0. HA 2025.4.4 needs Python >= 3.13.0
# and 2025.5+ needs >= 3.13.2, so 3.13.0 pins us to 2025.4.x. Older HA (3.11/3.12)
# lacks device-based MQTT discovery, which the bridge uses, so there is no fallback.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$DIR/venv"
LOCK="$DIR/requirements.lock"
HA_VERSION=2025.4.4

say() { printf 'ha-setup: %s\n' "$*"; }
fail() { printf 'ha-setup: ERROR: %s\n' "$*" >&2; exit 1; }

# --- broker and its command-line clients -------------------------------------
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "missing ${missing[*]}; install them (apt-get install ${missing[*]})"
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; } ||
        fail "apt-get install ${missing[*]} failed"
fi

# --- interpreter ----------------------------------------------------------------
PY="${HA_PYTHON:-}"
if [ -z "$PY" ]; then
    root="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"
    PY="$root/versions/3.13.0/bin/python3.13"
fi
[ -x "$PY" ] || fail "Python 3.13 not found at $PY.
  Home Assistant $HA_VERSION needs CPython >= 3.13.0 (e.g. 'pyenv install 3.13.0'),
  or point HA_PYTHON at a python3.13 binary."
pyver() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
want="$(pyver "$PY")"
case "$want" in 3.13.*) ;; *) fail "$PY is Python $want; Home Assistant $HA_VERSION needs 3.13.x" ;; esac

# --- venv -------------------------------------------------------------------------
if [ -x "$VENV/bin/python" ] && [ "$(pyver "$VENV/bin/python" 2>/dev/null || true)" != "$want" ]; then
    say "venv was made with another Python, recreating it"
    rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || { say "creating $VENV (Python $want)"; "$PY" -m venv "$VENV"; }
VPY="$VENV/bin/python"

# Every pin of the lock file installed at exactly that version?
lock_satisfied() {
    "$VPY" - "$LOCK" <<'PYEOF'
import sys
from importlib import metadata

for raw in open(sys.argv[1], encoding="utf-8"):
    line = raw.split("#", 1)[0].strip()
    if not line:
        continue
    name, _, version = line.partition("==")
    try:
        if metadata.version(name) != version:
            sys.exit(1)
    except metadata.PackageNotFoundError:
        sys.exit(1)
PYEOF
}

if lock_satisfied; then
    say "venv matches requirements.lock"
else
    say "installing homeassistant $HA_VERSION and pins into $VENV (takes 1-3 minutes)"
    # HA keeps its real dependency pins in package_constraints.txt inside the wheel;
    # plain `pip install homeassistant` ignores them and picks incompatible versions.
    wheels="$VENV/ha-wheel"
    mkdir -p "$wheels"
    "$VPY" -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" "homeassistant==$HA_VERSION"
    "$VPY" - "$wheels" "$VENV/ha-package-constraints.txt" "$HA_VERSION" <<'PYEOF'
import glob
import sys
import zipfile

wheels, out, version = sys.argv[1:4]
(wheel,) = glob.glob(f"{wheels}/homeassistant-{version}-*.whl")
with zipfile.ZipFile(wheel) as zf:
    data = zf.read("homeassistant/package_constraints.txt")
with open(out, "wb") as fh:
    fh.write(data)
PYEOF
    "$VPY" -m pip install -q --disable-pip-version-check -c "$VENV/ha-package-constraints.txt" -r "$LOCK"
    lock_satisfied || fail "venv still differs from requirements.lock after install"
fi

"$VPY" -m pip check --disable-pip-version-check >/dev/null ||
    { "$VPY" -m pip check --disable-pip-version-check; fail "pip check found broken requirements"; }
got="$("$VPY" -c 'from homeassistant.const import __version__ as v; print(v)')"
[ "$got" = "$HA_VERSION" ] || fail "venv has homeassistant $got, expected $HA_VERSION"
say "ready: Python $want, homeassistant $got"
