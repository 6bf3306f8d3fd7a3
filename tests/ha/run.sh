#!/usr/bin/env bash
# Home Assistant end-to-end test of camqtt.
#
#   tests/ha/run.sh [pytest options]      e.g. -x, -k plate, -v
#
# 1. tests/ha/setup.sh (venv with homeassistant 2025.4.4, mosquitto; cached)
# 2. cargo build, unless CAMQTT_BIN names a bridge binary to use
# 3. pytest: Mosquitto + HA + camqtt on free loopback ports, state in tests/ha/run/
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$DIR/../.." && pwd)"

t0=$SECONDS
"$DIR/setup.sh"
if [ -z "${CAMQTT_BIN:-}" ]; then
    echo "ha-run: cargo build"
    (cd "$REPO" && cargo build --quiet --bin camqtt)
    export CAMQTT_BIN="$REPO/target/debug/camqtt"
fi
echo "ha-run: setup and build took $((SECONDS - t0)) s; bridge: $CAMQTT_BIN"

cd "$DIR"
export PYTHONDONTWRITEBYTECODE=1
exec "$DIR/venv/bin/python" -m pytest "$@" test_harness.py test_e2e.py test_sources.py test_blueprints.py test_detection.py test_instances.py test_fresh_start.py
