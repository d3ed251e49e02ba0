#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver + etcd) from pinned Go
# modules, plus the real KEDA CRDs, into a per-user cache dir keyed by version
# (the way controller-runtime's envtest provides binaries, but from source).
#
# Usage: tests/controlplane/build.sh        # prints the output dir on stdout
# Idempotent: exits at once when the versioned dir is already complete.
# Non-interactive; needs only a Go toolchain and access to the Go module proxy.
set -euo pipefail
# The braces make bash parse the whole file before running it, so editing or
# updating this script while a long build runs cannot derail that build.
{

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

source "$here/cache.sh"
# KEDA is fetched as a module for its CRD files here, not compiled, so it stays out of
# this build graph; its version is the one build-keda.sh compiles (keda/go.mod).
KEDA_VERSION="$(mod_version github.com/kedacore/keda/v2 "$here/keda/go.mod")"

log() { echo "[controlplane/build] $*" >&2; }

command -v go >/dev/null || { log "go not found on PATH"; exit 127; }

# Versions come from go.mod so the cache key cannot drift from what is built.
K8S_VERSION="$(mod_version k8s.io/kubernetes "$here/go.mod")"
ETCD_VERSION="$(mod_version go.etcd.io/etcd/server/v3 "$here/go.mod")"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/controlplane"
out="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-keda-$KEDA_VERSION"

cache_begin "$out" "$@"

log "building kube-apiserver $K8S_VERSION and etcd $ETCD_VERSION with $(go env GOVERSION)"
log "(a first build compiles ~2000 packages: about 6 min on 2 cores, plus module downloads)"
# Stamp the release into /version like upstream's hack/lib/version.sh does
# (etcd does not link this package, so the -X flags are no-ops for it).
ldflags="$(k8s_ldflags "$K8S_VERSION")"
(
  cd "$here"
  # -mod=readonly: go.sum is committed; never rewrite it from a build.
  # CGO_ENABLED=0: static binaries, no C toolchain needed.
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -ldflags "$ldflags" -o "$stage/" ./cmd/kube-apiserver ./cmd/etcd
)
log "compiled in $((SECONDS - start))s"

log "fetching KEDA CRDs from github.com/kedacore/keda/v2@$KEDA_VERSION"
# Run outside any module so go.mod is neither consulted nor modified.
keda_dir="$(cd "$stage" && GOFLAGS=-mod=mod go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION" \
  | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')"
[[ -d "$keda_dir/config/crd/bases" ]] || { log "KEDA module has no config/crd/bases ($keda_dir)"; exit 1; }
mkdir -p "$stage/keda-crds"
cp "$keda_dir"/config/crd/bases/*keda.sh_*.yaml "$stage/keda-crds/"
chmod -R u+w "$stage/keda-crds" # module cache files are read-only

cache_finish "$out"
}
