#!/usr/bin/env bash
# Fetch the real Prometheus Operator CRDs (PodMonitor, ServiceMonitor, PrometheusRule) from
# its Go module into a per-user cache dir keyed by version, so the test API server can
# validate manifests/monitoring/ and the chart's monitoring objects against their schemas.
# The module is downloaded for its files (example/prometheus-operator-crd/), not compiled.
#
# Usage: tests/controlplane/fetch-monitoring-crds.sh   # prints the output dir on stdout
# Idempotent: exits at once when the versioned dir is already complete (a 4 MB download).
set -euo pipefail
{

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "[controlplane/fetch-monitoring-crds] $*" >&2; }
command -v go >/dev/null || { log "go not found on PATH"; exit 127; }
source "$here/cache.sh"

module=github.com/prometheus-operator/prometheus-operator
VERSION="$(tr -d '[:space:]' < "$here/prometheus-operator/VERSION")"
out="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/prometheus-operator/crds-$VERSION"

cache_begin "$out" "$@"

log "fetching $module@$VERSION"
# Run outside any module so no go.mod is consulted or modified.
dir="$(cd "$stage" && GOFLAGS=-mod=mod go mod download -json "$module@$VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
src="$dir/example/prometheus-operator-crd"
[[ -d "$src" ]] || { log "the module has no example/prometheus-operator-crd ($dir)"; exit 1; }
for kind in podmonitors servicemonitors prometheusrules; do
  cp "$src/monitoring.coreos.com_$kind.yaml" "$stage/"
done
chmod -R u+w "$stage" # module cache files are read-only

cache_finish "$out"
}
