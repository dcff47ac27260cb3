#!/usr/bin/env bash
# The test command: installs the real servers the tests talk to, then runs the whole suite.
# Usage: bash scripts/test.sh [cargo test arguments…]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/servers.sh
ensure_durable_tansu
PG_EXTRA="-c fsync=off" start_postgres
export SHENGUAN_TEST_PG_URL="$PG_URL"

cargo test --locked "$@"
