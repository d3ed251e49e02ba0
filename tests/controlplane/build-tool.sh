#!/usr/bin/env bash
# Build a Go command-line tool the tests run (helm, actionlint, promtool, grpcurl) from its wrapper module
# tests/controlplane/<tool> (a go.mod of its own, so its dependencies never mix with the
# control plane's) into a per-user cache dir keyed by tool and version.
#
# Usage: tests/controlplane/build-tool.sh helm|actionlint|promtool|grpcurl   # prints the output dir on stdout
# Idempotent: exits at once when the versioned dir is already complete. A cold build
# takes about 4 minutes (helm; promtool 3m40s with its modules cached) or 30 s (actionlint) on 2 cores.
set -euo pipefail
# The braces make bash parse the whole file before running it (see build.sh).
{

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tool="${1:?usage: build-tool.sh helm|actionlint|promtool|grpcurl}"

log() { echo "[controlplane/build-tool $tool] $*" >&2; }

command -v go >/dev/null || { log "go not found on PATH"; exit 127; }
source "$here/cache.sh"

case "$tool" in
  helm) module=helm.sh/helm/v3; pkg=helm.sh/helm/v3/cmd/helm ;;
  actionlint) module=github.com/rhysd/actionlint; pkg=github.com/rhysd/actionlint/cmd/actionlint ;;
  promtool) module=github.com/prometheus/prometheus; pkg=github.com/prometheus/prometheus/cmd/promtool ;;
  grpcurl) module=github.com/fullstorydev/grpcurl; pkg=github.com/fullstorydev/grpcurl/cmd/grpcurl ;;
  *) log "unknown tool"; exit 2 ;;
esac

VERSION="$(mod_version "$module" "$here/$tool/go.mod")"
[[ -n "$VERSION" ]] || { log "cannot read the version of $module from $tool/go.mod"; exit 1; }

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/$tool"
out="$cache_root/$tool-$VERSION"

cache_begin "$out" "$@"

log "building $pkg $VERSION with $(go env GOVERSION)"
(
  cd "$here/$tool"
  # The -X flags are those of the projects' own release builds: the version the tool
  # reports, and for Helm the Kubernetes version `helm template`/`lint` assume
  # (client-go v0.X is Kubernetes 1.X; without it Helm assumes 1.20, below the chart's kubeVersion).
  ldflags="-s -w"
  if [[ "$tool" == helm ]]; then
    minor="$(GOFLAGS=-mod=readonly go list -f '{{.Version}}' -m k8s.io/client-go | cut -d. -f2)"
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=$VERSION"
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
    done
  elif [[ "$tool" == promtool ]]; then
    ldflags+=" -X github.com/prometheus/common/version.Version=$VERSION"
  elif [[ "$tool" == grpcurl ]]; then
    ldflags+=" -X main.version=$VERSION"
  else
    ldflags+=" -X github.com/rhysd/actionlint.version=$VERSION"
  fi
  # -mod=readonly: go.sum is committed; never rewrite it from a build.
  GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$stage/" "$pkg"
)

cache_finish "$out"
}
