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

# KEDA is fetched as a module for its CRD files here, not compiled, so it stays out of
# this build graph; its version is the one build-keda.sh compiles (keda/go.mod).
KEDA_VERSION="$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "github.com/kedacore/keda/v2" { print $2; exit }' \
  "$here/keda/go.mod")"

log() { echo "[controlplane/build] $*" >&2; }

command -v go >/dev/null || { log "go not found on PATH"; exit 127; }

# Versions come from go.mod so the cache key cannot drift from what is built.
mod_version() { awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"; }
K8S_VERSION="$(mod_version k8s.io/kubernetes)"
ETCD_VERSION="$(mod_version go.etcd.io/etcd/server/v3)"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/controlplane"
out="$cache_root/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-keda-$KEDA_VERSION"

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
# Serialise concurrent callers (e.g. parallel test workers); the loser re-checks.
if command -v flock >/dev/null && [[ -z "${SWITCHYARD_CP_LOCKED:-}" ]]; then
  exec env SWITCHYARD_CP_LOCKED=1 flock "$cache_root/.build.lock" bash "$0" "$@"
fi
if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

stage="$(mktemp -d "$cache_root/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

start=$SECONDS
log "building kube-apiserver $K8S_VERSION and etcd $ETCD_VERSION with $(go env GOVERSION)"
log "(a first build compiles ~2000 packages: about 6 min on 2 cores, plus module downloads)"
# Stamp the release into /version like upstream's hack/lib/version.sh does
# (etcd does not link this package, so the -X flags are no-ops for it).
vpkg=k8s.io/component-base/version
minor="${K8S_VERSION#v1.}"
ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=${minor%%.*}"
ldflags+=" -X $vpkg.gitTreeState=clean"
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

chmod 755 "$stage" # mktemp -d made it 0700
touch "$stage/.complete"
rm -rf "$out"
mv "$stage" "$out"
trap - EXIT
log "done in $((SECONDS - start))s: $(du -sh "$out" | cut -f1) in $out"
echo "$out"
exit 0
}
