#!/usr/bin/env bash
# Build the fuzz targets on stable Rust and run each for a bounded time.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 30 s, every target)
#
# cargo-fuzz passes nightly-only flags; the coverage instrumentation it
# relies on (-Cpasses=sancov-module and the sanitizer-coverage LLVM options)
# is stable, so we pass it ourselves, without a sanitizer (like `cargo fuzz
# run -s none`). Rust's own checks (bounds, overflow, debug assertions) catch
# the bugs an address sanitizer would in this all-safe crate. Each run
# starts from fuzz/corpus/TARGET (new finds go to a scratch copy, not the
# repo) and prints libFuzzer's execution count; a crash or a timeout fails
# the script and leaves the input under fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
SECS=${1:-30}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(command data reply header session config https token)

export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
# An explicit --target keeps RUSTFLAGS off build scripts (they would need
# libFuzzer's symbols), as cargo-fuzz does.
HOST=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins --target "$HOST"
BIN=$CARGO_TARGET_DIR/$HOST/release

mkdir -p artifacts
total=0
for t in "${TARGETS[@]}"; do
  scratch=$(mktemp -d)
  cp -r "corpus/$t/." "$scratch/"
  log=$(mktemp)
  # -rss_limit_mb: a target that allocates without bound fails the run.
  if ! "$BIN/$t" "$scratch" -max_total_time="$SECS" -timeout=10 \
      -rss_limit_mb=512 -max_len=8192 -artifact_prefix="artifacts/$t-" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz/$t: FAILED (input saved under fuzz/artifacts/)"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "fuzz/$t: ${runs:-?} executions in ${SECS}s, no crash, corpus $(ls "$scratch" | wc -l) inputs"
  total=$((total + ${runs:-0}))
  rm -rf "$scratch" "$log"
done
echo "fuzz: $total executions in total"
