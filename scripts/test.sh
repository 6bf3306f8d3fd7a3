#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need on a fresh Debian/Ubuntu
# machine (Mosquitto, curl, Chromium and chromedriver; redis-server and a clustered broker, Aedes
# from npm, into tests/cluster/node_modules; Home Assistant into tests/ha/venv and the add-on
# checks' tools into tests/addon/venv from PyPI), runs the add-on checks (community linter,
# hadolint), then the Rust tests (unit, fixtures, shared samples, real-Mosquitto integration, a
# two-node broker cluster, the web page in a real browser) and the real-Home-Assistant
# end-to-end test.
#   scripts/test.sh            everything
#   SKIP_HA=1 scripts/test.sh  without the Home Assistant end-to-end test
#   SKIP_RELEASE=1 / SKIP_FUZZ=1 skip the release build / the bounded fuzz run
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test] %s\n' "$*"; }

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
# A real TLS client for the HTTPS receiver test (tests/receiver_tls.rs).
command -v curl >/dev/null 2>&1 || need+=(curl)
# A real browser for the web page test (tests/web_page.rs): Debian's Chromium and its WebDriver.
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    log "installing ${need[*]}"
    $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
fi
# Installed or found: the browser test must run, not skip (tests/common/browser.rs).
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    export CAMQTT_REQUIRE_BROWSER=1
else
    log "WARNING: no /usr/bin/chromium and /usr/bin/chromedriver after installing: the web page test skips"
fi
# Mosquitto must not be running as a system service on 1883 for the tests' sake; the tests
# start their own brokers on free ports, so a running service is harmless.

# The add-on under the tools its users and reviewers run: the community add-on linter's schemas
# and rules (tests/addon/lint.py, from ../shared) and hadolint, in tests/addon/venv from PyPI.
log "add-on checks: community linter and hadolint (tests/addon/run.sh)"
tests/addon/run.sh
[ -f ../shared/homeassistant/addon-linter/config.schema.json ] ||
    log "WARNING: no ../shared/homeassistant/addon-linter: the add-on linter checks skipped"
# tests/addon.rs runs the Supervisor's `match(...)` patterns through Python's re: it must not skip.
export CAMQTT_REQUIRE_PYTHON=1

# A real clustered broker for tests/cluster.rs and tests/scale_out.rs: two Aedes nodes (Node.js) sharing a redis-server
# (tests/common/cluster.rs). Installed or found, the cluster tests must run, not skip.
log "clustered broker: redis-server and Aedes (tests/cluster/install.sh)"
tests/cluster/install.sh
export CAMQTT_REQUIRE_CLUSTER=1

if command -v cargo-nextest >/dev/null 2>&1; then
    log "cargo nextest run"
    cargo nextest run --no-fail-fast
else
    log "cargo test"
    cargo test --no-fail-fast
fi

if [ "${SKIP_RELEASE:-0}" != 1 ]; then
    # The same release build the add-on's Dockerfile runs.
    log "release build"
    cargo build --release --locked
fi

if [ "${SKIP_FUZZ:-0}" != 1 ] && [ -x scripts/fuzz.sh ]; then
    log "bounded fuzz run (FUZZ_SECONDS=${FUZZ_SECONDS:=20} per target)"
    FUZZ_SECONDS="$FUZZ_SECONDS" scripts/fuzz.sh
fi

if [ "${SKIP_HA:-0}" != 1 ]; then
    log "Home Assistant end-to-end test"
    cargo build --bin camqtt
    CAMQTT_BIN="$PWD/target/debug/camqtt" tests/ha/run.sh
fi
