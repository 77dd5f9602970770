#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, planner golden tests, and the
# end-to-end tests against real etcd, MariaDB, sysbench and client libraries (the test
# harness starts and stops its own processes on free loopback ports).
#
#   scripts/test.sh [extra cargo test args, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

start=$(date +%s)
echo "== format"
cargo fmt --all -- --check
echo "== build"
cargo build --workspace --bins --tests
echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
cargo test --workspace -- "$@"
echo "== all tests passed in $(( $(date +%s) - start ))s"
