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

# A require line of go.mod, inside a block (`mod v1.2.3`) or alone (`require mod v1.2.3`).
mod_version() {
  awk -v m="$1" '$1 == "require" { $1 = "" ; $0 = $0 } $1 == m && $2 ~ /^v/ { print $2; exit }' "$2"
}
KEDA_VERSION="$(mod_version github.com/kedacore/keda/v2 "$here/keda/go.mod")"
K8S_VERSION="$(mod_version k8s.io/kubernetes "$here/go.mod")"
[[ -n "$KEDA_VERSION" && -n "$K8S_VERSION" ]] || { log "cannot read the versions from the go.mod files"; exit 1; }

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/keda"
out="$cache_root/keda-$KEDA_VERSION-k8s-$K8S_VERSION"

if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
# Serialise concurrent callers (parallel test sessions); the loser re-checks.
if command -v flock >/dev/null && [[ -z "${SWITCHYARD_KEDA_LOCKED:-}" ]]; then
  exec env SWITCHYARD_KEDA_LOCKED=1 flock "$cache_root/.build.lock" bash "$0" "$@"
fi
if [[ -f "$out/.complete" ]]; then
  echo "$out"
  exit 0
fi

stage="$(mktemp -d "$cache_root/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

start=$SECONDS
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
vpkg=k8s.io/component-base/version
minor="${K8S_VERSION#v1.}"
ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=${minor%%.*}"
ldflags+=" -X $vpkg.gitTreeState=clean"
(
  cd "$here"
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -ldflags "$ldflags" -o "$stage/" ./cmd/kube-controller-manager
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
