#!/usr/bin/env bash
# What the clustered-broker tests (tests/cluster.rs, tests/common/cluster.rs) need, installed
# when missing (scripts/test.sh runs this; so can you; running it again does nothing):
#   - redis-server, from Debian's packages: the state the broker nodes share;
#   - Aedes and its Redis emitter and persistence, from the npm registry at the exact versions
#     of package-lock.json, into tests/cluster/node_modules (`npm ci`, again whenever the lock
#     file is newer than the installed tree).
# Node.js (>= 20, Aedes's minimum) and npm come with the machine; without them this says so and
# fails.
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

say() { printf 'cluster: %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    say "installing redis-server"
    $SUDO apt-get install -y --no-install-recommends redis-server >/dev/null 2>&1 ||
        { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends redis-server >/dev/null; }
else
    say "redis-server present: $(command -v redis-server)"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "ERROR: node and npm are needed (Node.js >= 20)"
    exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
    say "ERROR: Node.js $(node --version) is too old: Aedes needs >= 20"
    exit 1
fi

# npm ci writes node_modules/.package-lock.json last: its age is the installed tree's.
marker="$DIR/node_modules/.package-lock.json"
if [ ! -f "$marker" ] || [ "$DIR/package-lock.json" -nt "$marker" ]; then
    say "npm ci in $DIR (node $(node --version), npm $(npm --version))"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
else
    say "node_modules up to date with package-lock.json"
fi
