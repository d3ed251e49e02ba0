#!/usr/bin/env bash
# Build the real Helm CLI (from tests/controlplane/helm, a wrapper module of its own: Helm
# pins its own k8s.io/* libraries, so it never shares tests/controlplane/go.mod) into a
# per-user cache dir keyed by version.
#
# Usage: tests/controlplane/build-helm.sh   # prints the output dir on stdout
# Idempotent: exits at once when the versioned dir is already complete. A cold build
# takes about 4 minutes on 2 cores.
set -euo pipefail
# The braces make bash parse the whole file before running it (see build.sh).
{

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "[controlplane/build-helm] $*" >&2; }

command -v go >/dev/null || { log "go not found on PATH"; exit 127; }

HELM_VERSION="$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "helm.sh/helm/v3" && $2 ~ /^v/ { print $2; exit }' \
  "$here/helm/go.mod")"
[[ -n "$HELM_VERSION" ]] || { log "cannot read the Helm version from helm/go.mod"; exit 1; }

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/helm"
out="$cache_root/helm-$HELM_VERSION"

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
# Serialise concurrent callers (parallel test sessions); the loser re-checks.
if command -v flock >/dev/null && [[ -z "${SWITCHYARD_HELM_LOCKED:-}" ]]; then
  exec env SWITCHYARD_HELM_LOCKED=1 flock "$cache_root/.build.lock" bash "$0" "$@"
fi
if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

stage="$(mktemp -d "$cache_root/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

start=$SECONDS
log "building Helm $HELM_VERSION with $(go env GOVERSION)"
(
  cd "$here/helm"
  # The -X flags are those of Helm's Makefile: the version `helm version` reports, and the
  # Kubernetes version `helm template`/`lint` assume (client-go v0.X is Kubernetes 1.X;
  # without it Helm assumes 1.20, below the chart's kubeVersion).
  client_go="$(GOFLAGS=-mod=readonly go list -f '{{.Version}}' -m k8s.io/client-go)"
  minor="$(echo "$client_go" | cut -d. -f2)"
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  # -mod=readonly: go.sum is committed; never rewrite it from a build.
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -ldflags "$ldflags" -o "$stage/" helm.sh/helm/v3/cmd/helm
)

chmod 755 "$stage" # mktemp -d made it 0700
touch "$stage/.complete"
rm -rf "$out"
mv "$stage" "$out"
trap - EXIT
log "done in $((SECONDS - start))s: $(du -sh "$out" | cut -f1) in $out"
echo "$out"
exit 0
}
