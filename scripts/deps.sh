#!/usr/bin/env bash
# Installs what shardgate needs on Debian (as root), only if something is missing:
# MariaDB server and client, etcd, protoc (for the etcd client), sysbench, HAProxy,
# promtool, PyMySQL, mysql-connector-python, node with mysql2 (in /opt/shardgate-node), and
# a Rust toolchain (with rustfmt and clippy).
set -euo pipefail

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl)
# promtool lints /metrics in the tests (Debian's prometheus package; its server is not used).
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# node and npm run the mysql2 client in the TLS tests.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y "${need[@]}"; then
    apt-get update
    apt-get install -y "${need[@]}"
  fi
fi

# PyMySQL for the python3 on PATH (pip from PyPI; Debian's package as a fallback).
if ! python3 -c 'import pymysql' >/dev/null 2>&1; then
  python3 -m pip install --quiet pymysql 2>/dev/null || apt-get install -y python3-pymysql || true
fi

# mysql-connector-python (caching_sha2_password tests; pure Python is enough).
if ! python3 -c 'import mysql.connector' >/dev/null 2>&1; then
  python3 -m pip install --quiet mysql-connector-python 2>/dev/null || apt-get install -y python3-mysql.connector || true
fi

# node's mysql2 driver for the TLS tests, in a fixed directory they look in.
if [ ! -f /opt/shardgate-node/node_modules/mysql2/package.json ] && command -v npm >/dev/null 2>&1; then
  mkdir -p /opt/shardgate-node
  (cd /opt/shardgate-node && npm install --no-audit --no-fund --silent mysql2) || true
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing the Rust toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
# The tests check formatting and lints: a toolchain without them (rustup's minimal
# profile, an older install) gets them added.
if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
      rustup component add "$c"
    fi
  done
fi
