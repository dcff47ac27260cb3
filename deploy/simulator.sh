#!/bin/sh
# docker-compose `simulator` profile: simulated legacy systems and departments sending traffic to
# the real gateway service. It issues its own tokens in the shared PostgreSQL ledger (the gateway
# re-reads the token list when it meets an unknown token), then runs `shenguan demo --target`.
# Each start issues a fresh set; they are demo tokens for the demo departments only.
set -eu
target="${SHENGUAN_DEMO_TARGET:-http://shenguan:8080}"
departments="${SHENGUAN_DEMO_DEPARTMENTS:-szs-scjg szs-wjw szs-zjj}"

# The token goes to stdout; the reminder that it is shown once goes to the log.
issue() { shenguan token issue --role "$1" --subject "$2"; }

SHENGUAN_DEMO_ADAPTER_TOKEN="$(issue adapter nx-zwfw-approval)"
SHENGUAN_DEMO_DEPARTMENT_TOKENS=""
for code in $departments; do
  SHENGUAN_DEMO_DEPARTMENT_TOKENS="${SHENGUAN_DEMO_DEPARTMENT_TOKENS:+$SHENGUAN_DEMO_DEPARTMENT_TOKENS,}${code}=$(issue department "$code")"
done
export SHENGUAN_DEMO_ADAPTER_TOKEN SHENGUAN_DEMO_DEPARTMENT_TOKENS

echo "simulator: sending traffic to ${target} as nx-zwfw-approval and ${departments}" >&2
exec shenguan demo --target "$target"
