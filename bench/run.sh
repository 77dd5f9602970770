#!/usr/bin/env bash
# Benchmarks shardgate against direct MariaDB and HAProxy (TCP mode) in one run.
#
#   bench/run.sh [--time 20] [--rounds 3] [--threads 16] [--suites foundation,sharded,memory]
#
# Builds release binaries, starts a private cluster under bench/.cluster, runs sysbench
# alternating the targets, and prints QPS, p95 and ratios (see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
# The reshard suite compares its copy with mydumper/myloader.
command -v mydumper >/dev/null 2>&1 || apt-get install -y mydumper || true
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --bins
exec python3 bench/bench.py "$@"
