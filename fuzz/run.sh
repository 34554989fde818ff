#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each with cargo-fuzz and
# libFuzzer on STABLE Rust, then prints a table: target, seconds, executions, corpus
# size, crashes. Exits non-zero when any target crashed (or failed to run).
#
#   fuzz/run.sh [SECONDS] [TARGET...]        # default: 60 seconds, every target
#
# - Installs cargo-fuzz into the cargo bin dir when it is missing.
# - Builds with RUSTC_BOOTSTRAP=1 and `--sanitizer none`: libFuzzer's coverage
#   instrumentation (`-Cpasses=sancov-module`, stable flags) without the nightly-only
#   AddressSanitizer. Rust code is memory safe; the fuzzers look for panics, broken
#   invariants, hangs (-timeout) and memory blow-ups (-rss_limit_mb, -malloc_limit_mb).
# - New corpus entries go to fuzz/corpus-new/<target>/ (not committed; the committed
#   seeds of fuzz/corpus/<target>/ are read only), crashes to
#   fuzz/artifacts/<target>/, logs to fuzz/logs/<target>.log (all git-ignored).
#   Copy a crash worth keeping to fuzz/regressions/<target>/ so `cargo test` replays it.
set -euo pipefail

secs="${1:-60}"
if [[ $# -gt 0 ]]; then shift; fi
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [[ "$secs" -lt 1 ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    targets=()
    for f in fuzz_targets/*.rs; do
        t="$(basename "$f" .rs)"
        targets+=("$t")
    done
fi

cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz into $cargo_bin" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
fuzz_flags=(--sanitizer none --features libfuzzer)

echo "building ${#targets[@]} targets (cargo fuzz build ${fuzz_flags[*]})" >&2
for t in "${targets[@]}"; do
    cargo fuzz build "${fuzz_flags[@]}" "$t" >&2
done

mkdir -p logs
status=0
rows=()
for t in "${targets[@]}"; do
    mkdir -p "corpus-new/$t" "artifacts/$t" "corpus/$t"
    before="$(find "artifacts/$t" -type f | wc -l)"
    log="logs/$t.log"
    echo "fuzzing $t for ${secs}s (log: fuzz/$log)" >&2
    start="$(date +%s)"
    rc=0
    cargo fuzz run "${fuzz_flags[@]}" "$t" "corpus-new/$t" "corpus/$t" -- \
        -max_total_time="$secs" \
        -timeout=20 \
        -rss_limit_mb=2048 \
        -malloc_limit_mb=1024 \
        -max_len=131072 \
        -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1 || rc=$?
    elapsed=$(($(date +%s) - start))
    execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
    corpus="$(find "corpus-new/$t" -type f | wc -l)"
    seeds="$(find "corpus/$t" -type f | wc -l)"
    crashes=$(($(find "artifacts/$t" -type f | wc -l) - before))
    if [[ $rc -ne 0 ]]; then
        status=1
        if [[ $crashes -eq 0 ]]; then
            echo "$t: cargo fuzz exited $rc without an artifact; see fuzz/$log" >&2
            crashes="failed($rc)"
        else
            echo "$t: CRASH, see fuzz/artifacts/$t/ and fuzz/$log" >&2
            grep -m1 -A3 "panicked at" "$log" >&2 || true
        fi
    fi
    rows+=("$t|$elapsed|${execs:-?}|$corpus (+$seeds seeds)|$crashes")
done

printf '\n| %-15s | %7s | %11s | %-22s | %-9s |\n' target seconds executions "corpus (new)" crashes
printf '|%s|%s|%s|%s|%s|\n' "-----------------" "---------" "-------------" "------------------------" "-----------"
for row in "${rows[@]}"; do
    IFS='|' read -r t e x c k <<<"$row"
    printf '| %-15s | %7s | %11s | %-22s | %-9s |\n' "$t" "$e" "$x" "$c" "$k"
done
exit "$status"
