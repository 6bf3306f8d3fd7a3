#!/usr/bin/env bash
# Run every cargo-fuzz target for a bounded time on the stable toolchain.
#
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS (default 30) each
#   FUZZ_SECONDS=300 scripts/fuzz.sh http_frame
#
# Installs cargo-fuzz when missing. Exits non-zero on the first crash (the reproducer is in
# fuzz/artifacts/<target>/). Corpora live in fuzz/corpus/<target> (gitignored) and are seeded
# from the repository's own fixtures (tests/fixtures, fuzz/seeds) only.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-30}
rss_mb=${FUZZ_RSS_MB:-2048}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

all_targets=$(cd fuzz && cargo fuzz list)
targets=${*:-$all_targets}

# seeds <target>: the directories whose files seed its corpus.
seeds() {
    case "$1" in
        viewtron_parse) echo "tests/fixtures/viewtron" ;;
        config_parse) echo "tests/fixtures/config/valid tests/fixtures/config/invalid config" ;;
        *) [ -d "fuzz/seeds/$1" ] && echo "fuzz/seeds/$1" ;;
    esac
}

# Build all first so that the time budget is spent fuzzing.
for t in $targets; do
    cargo fuzz build --sanitizer none --release "$t"
done

summary=()
for t in $targets; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus"
    for d in $(seeds "$t"); do
        [ -d "$d" ] || continue
        find "$d" -maxdepth 1 -type f \( -name '*.xml' -o -name '*.toml' -o ! -name '*.*' \) \
            -exec cp -n {} "$corpus/" \;
    done
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=("-dict=fuzz/$t.dict")
    [ "$t" = viewtron_parse ] && [ -f fuzz/viewtron.dict ] && dict=("-dict=fuzz/viewtron.dict")
    log=$(mktemp)
    echo "fuzz: $t for ${seconds}s"
    set +e
    cargo fuzz run --sanitizer none --release "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 -print_final_stats=1 \
        "${dict[@]}" 2>&1 | tee "$log" | grep -E '^(#[0-9]+ *(DONE|INITED)|==|SUMMARY|stat::|.*(panicked|ERROR|crash-|timeout-|oom-))' 
    rc=${PIPESTATUS[0]}
    set -e
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rm -f "$log"
    summary+=("$t: ${runs:-?} runs, ${speed:-?} exec/s, exit $rc")
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: $t FAILED (exit $rc); reproducer in fuzz/artifacts/$t/" >&2
        printf '%s\n' "${summary[@]}"
        exit 1
    fi
done
printf 'fuzz summary (%ss per target):\n' "$seconds"
printf '  %s\n' "${summary[@]}"
