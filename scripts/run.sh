#!/usr/bin/env bash
# Builds shardgate and runs a local cluster in the foreground: etcd, one MariaDB for the
# unsharded keyspace `commerce`, one per shard of the sharded keyspace `customer` (2 by
# default), and the proxy on 127.0.0.1:15306, with sample data. Ctrl-C stops everything.
#
#   scripts/run.sh [--shards N] [--port 15306] [--dir .cluster] [--detach]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

dir=.cluster
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

cargo build --release --bins
if [ -f "$dir/cluster.json" ]; then
  ./target/release/shardctl --dir "$dir" down >/dev/null 2>&1 || true
fi
exec ./target/release/shardctl --dir "$dir" up "${args[@]}"
