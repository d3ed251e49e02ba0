# Sourced by the build scripts here: one versioned cache dir per build, made once and
# atomically (built in a stage dir, then renamed), with concurrent callers serialised.
#
#   mod_version MODULE GOMOD     the version a go.mod requires (in a block or alone)
#   cache_begin OUT "$@"         prints OUT and exits when it is complete; else takes the
#                                lock (re-running the script under flock), sets $stage
#   cache_finish OUT             moves $stage to OUT, prints OUT and exits
#   k8s_ldflags VERSION          the -X flags upstream's hack/lib/version.sh stamps

mod_version() {
  awk -v m="$1" '$1 == "require" { $1 = ""; $0 = $0 } $1 == m && $2 ~ /^v/ { print $2; exit }' "$2"
}

cache_begin() {
  local out="$1"; shift
  if [[ -f "$out/.complete" ]]; then
    echo "$out"
    exit 0
  fi
  local root; root="$(dirname "$out")"
  mkdir -p "$root"
  # Serialise concurrent callers (parallel test sessions); the loser re-checks.
  if command -v flock >/dev/null && [[ "${SWITCHYARD_BUILD_LOCK:-}" != "$root" ]]; then
    exec env SWITCHYARD_BUILD_LOCK="$root" flock "$root/.build.lock" bash "$0" "$@"
  fi
  if [[ -f "$out/.complete" ]]; then
    echo "$out"
    exit 0
  fi
  stage="$(mktemp -d "$root/.stage.XXXXXX")"
  trap 'rm -rf "$stage"' EXIT
  start=$SECONDS
}

cache_finish() {
  local out="$1"
  chmod 755 "$stage" # mktemp -d made it 0700
  touch "$stage/.complete"
  rm -rf "$out"
  mv "$stage" "$out"
  trap - EXIT
  log "done in $((SECONDS - start))s: $(du -sh "$out" | cut -f1) in $out"
  echo "$out"
  exit 0
}

k8s_ldflags() {
  local vpkg=k8s.io/component-base/version minor="${1#v1.}"
  echo "-s -w -X $vpkg.gitVersion=$1 -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=${minor%%.*} -X $vpkg.gitTreeState=clean"
}
