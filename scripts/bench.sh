#!/usr/bin/env bash
# camqtt side by side with the Python reference peer: the table of README "Performance".
#
# Builds the release binary, then runs ../shared/bench/compare.sh (the shared benchmark:
# real HTTP load, a real Mosquitto and a loss-counting subscriber; see its README.md) with
# camqtt as side B, in an empty working directory per cell (so its default disk spool starts
# empty). Everything it writes goes under target/bench/.
#
#   scripts/bench.sh                      the four posts at 16 connections, 2 rounds (~8 min)
#   PAYLOADS=ipc_lpr_large.xml ROUNDS=1 scripts/bench.sh
#   CONCS=1,4,16 scripts/bench.sh         the full matrix (~20 min)
#
# Environment: as compare.sh (PAYLOADS, CONCS, DURATION, WARMUP, ROUNDS, PIN, OUT, BENCH_DIR
# for a bench folder elsewhere). Run nothing else heavy meanwhile: the numbers are CPU time.
set -euo pipefail
cd "$(dirname "$0")/.."
bench_dir=${BENCH_DIR:-../shared/bench}
if [ ! -x "$bench_dir/compare.sh" ]; then
    echo "bench: $bench_dir/compare.sh not found (the shared benchmark folder; set BENCH_DIR)" >&2
    exit 2
fi
export PAYLOADS=${PAYLOADS:-ipc_lpr_large.xml,nvr_lpr_large.xml,ipc_lpr_small.xml,ipc_intrusion_noimg.xml}
export CONCS=${CONCS:-16}
export DURATION=${DURATION:-8}
export ROUNDS=${ROUNDS:-2}
cargo build --release --locked --bin camqtt
bin="$PWD/target/release/camqtt"
exec "$bench_dir/compare.sh" \
    "d=\$(mktemp -d) && cd \$d && exec $bin run --listen 127.0.0.1:{port} --mqtt-url mqtt://127.0.0.1:{mqtt_port}" \
    camqtt --b-count-suffix /event "$@"
