#!/usr/bin/env bash
# The benchmarks: starts a Kafka-protocol broker and a PostgreSQL server, builds the release
# binary and prints the table of `shenguan bench`.
# Usage: bash scripts/bench.sh [shenguan bench options, e.g. --ledger-items 1000000,10000000]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers.sh
start_postgres
BROKER_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$SHENGUAN_TANSU" broker --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" >/dev/null 2>&1 &
BROKER_PID=$!
trap 'kill $BROKER_PID 2>/dev/null; as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate stop >/dev/null 2>&1; rm -rf "$PG_TMP"' EXIT
sleep 1
:
"$BIN" bench --kafka "127.0.0.1:$BROKER_PORT" --postgres "$PG_URL" "$@"
