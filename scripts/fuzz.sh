#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets/*.rs) with libFuzzer, each for SECONDS
# (default 60), on the committed corpora (fuzz/corpus/<target>/), which grow with what the
# fuzzer finds. Needs cargo-fuzz (installed if missing); the stable toolchain is enough
# with RUSTC_BOOTSTRAP=1.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(client packets execute sql relay)
export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build
mkdir -p ../target/fuzz-logs
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${secs}s"
  mkdir -p "corpus/$t"
  log="../target/fuzz-logs/$t.log"
  if ! cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -max_len=4096 \
      -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/"
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^Done" "$log" || true
done
