#!/usr/bin/env bash
# Copies the files the Helm chart ships from their one source in the repository into
# charts/shenguan/files/ (Helm cannot read files outside the chart). tests/deploy.rs fails while
# a copy differs from its source, so run this after changing any of:
#   monitoring/prometheus/rules.yml              -> charts/shenguan/files/prometheus/rules.yml
#   monitoring/grafana/dashboards/shenguan.json  -> charts/shenguan/files/grafana/shenguan.json
#   catalog/routing.yaml                         -> charts/shenguan/files/catalog/routing.yaml
#   adapters/**/*.yaml (without fixtures/)       -> charts/shenguan/files/adapters/
set -euo pipefail
cd "$(dirname "$0")/.."
files=charts/shenguan/files

copy() {
  if [ -f "$1" ]; then
    install -D -m 0644 "$1" "$2"
    echo "copied $1 -> $2"
  else
    echo "missing $1 (not copied)" >&2
    missing=1
  fi
}
missing=0
copy monitoring/prometheus/rules.yml "$files/prometheus/rules.yml"
copy monitoring/grafana/dashboards/shenguan.json "$files/grafana/shenguan.json"
copy catalog/routing.yaml "$files/catalog/routing.yaml"

# Adapters and their code tables; the golden fixtures stay out of the chart (some are not UTF-8).
rm -rf "$files/adapters"
(cd adapters && find . -path '*/fixtures' -prune -o -type f \( -name '*.yaml' -o -name '*.yml' \) -print) |
  sort | while read -r f; do
    install -D -m 0644 "adapters/${f#./}" "$files/adapters/${f#./}"
  done
echo "copied adapters/ (YAML files, no fixtures) -> $files/adapters/"
exit "$missing"
