#!/usr/bin/env bash
# Copy the observability engineer's files into the ca4-platform chart, which helm can only read
# from inside the chart directory. observability/ is the source of truth; the copies under
# infra/helm/ca4-platform/files/observability/ are generated, committed (so the chart renders from a
# plain checkout), and checked by tests/infra/test_helm_sync.py, which fails when they are stale.
#
# Usage: helm-sync.sh [--check]    --check: change nothing, exit 1 if the copies are stale.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
src="${repo_root}/observability"
dest="${repo_root}/infra/helm/ca4-platform/files/observability"

# The subset the chart uses. Paths are relative to observability/.
patterns=(
  "prometheus/prometheus-k8s.yml"
  "alertmanager/alertmanager.yml"
  "prometheus/rules/*.yml"
  "grafana/dashboards/*.json"
  "loki/loki-k8s.yml"
  "alloy/alloy-k8s.alloy"
  "kafka/jmx-exporter.yml"
)

check=0
if [[ "${1:-}" == --help || "${1:-}" == -h ]]; then
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
  exit 0
elif [[ "${1:-}" == "--check" ]]; then
  check=1
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi

staging="$(mktemp -d)"
trap 'rm -rf "${staging}"' EXIT

shopt -s nullglob
for pattern in "${patterns[@]}"; do
  for file in "${src}"/${pattern}; do
    [[ -f "${file}" ]] || continue # a literal name that does not exist (yet)
    rel="${file#"${src}/"}"
    mkdir -p "${staging}/$(dirname "${rel}")"
    cp "${file}" "${staging}/${rel}"
  done
done
shopt -u nullglob

if ((check)); then
  if [[ ! -d "${dest}" ]] || ! diff -r -q "${staging}" "${dest}" >/dev/null; then
    echo "helm-sync: ${dest#"${repo_root}/"} is stale; run 'make helm-sync' and commit the result" >&2
    diff -r -q "${staging}" "${dest}" >&2 || true
    exit 1
  fi
  echo "helm-sync: chart copies match observability/"
  exit 0
fi

rm -rf "${dest}"
mkdir -p "${dest}"
cp -R "${staging}/." "${dest}/"
echo "helm-sync: copied $(find "${dest}" -type f | wc -l | tr -d ' ') file(s) into ${dest#"${repo_root}/"}"
