#!/usr/bin/env bash
# Build the real KEDA operator and metrics adapter (from tests/controlplane/keda, a
# wrapper module of its own: KEDA pins older k8s.io/* libraries than the control plane,
# so it must never share tests/controlplane/go.mod) and kube-controller-manager (from
# tests/controlplane, the same module as kube-apiserver) into a per-user cache dir keyed
# by version.
#
# Usage: tests/controlplane/build-keda.sh   # prints the output dir on stdout
# Idempotent: exits at once when the versioned dir is already complete. A cold build
# takes about 10 minutes on 2 cores (operator 7.5, adapter 1, controller-manager 2).
set -euo pipefail
# The braces make bash parse the whole file before running it (see build.sh).
{

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { echo "[controlplane/build-keda] $*" >&2; }

command -v go >/dev/null || { log "go not found on PATH"; exit 127; }

source "$here/cache.sh"
KEDA_VERSION="$(mod_version github.com/kedacore/keda/v2 "$here/keda/go.mod")"
K8S_VERSION="$(mod_version k8s.io/kubernetes "$here/go.mod")"
[[ -n "$KEDA_VERSION" && -n "$K8S_VERSION" ]] || { log "cannot read the versions from the go.mod files"; exit 1; }

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/keda"
out="$cache_root/keda-$KEDA_VERSION-k8s-$K8S_VERSION"

cache_begin "$out" "$@"

log "building KEDA $KEDA_VERSION (operator, metrics adapter) with $(go env GOVERSION)"
log "(a first build compiles ~3400 packages: about 8 min on 2 cores, plus ~300 MB of module downloads)"
(
  cd "$here/keda"
  # -mod=readonly: go.sum is committed; never rewrite it from a build.
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -ldflags "-s -w -X=github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v}" \
      -o "$stage/" github.com/kedacore/keda/v2/cmd/operator github.com/kedacore/keda/v2/cmd/adapter
)
mv "$stage/operator" "$stage/keda"
mv "$stage/adapter" "$stage/keda-adapter"
log "KEDA compiled in $((SECONDS - start))s"

log "building kube-controller-manager $K8S_VERSION (shares the compile cache with kube-apiserver)"
ldflags="$(k8s_ldflags "$K8S_VERSION")"
(
  cd "$here"
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -ldflags "$ldflags" -o "$stage/" ./cmd/kube-controller-manager
)

cache_finish "$out"
}
