# shellcheck shell=bash
# Sourced by the scripts that build real binaries from the Go module proxy into
# the packet-capture cache (control-plane-binaries, node-binaries), so that both
# build Kubernetes the same way and share one cache layout, lock and override
# convention.
#
# The sourcing script sets, before calling anything here:
#   LOG_TAG     word in its progress lines and wrapper module paths
#   CACHE_ROOT  its part of the cache
#   CACHE_DIR   $CACHE_ROOT/<key>: the complete build for its versions
# and, for the k8s_* functions, K8S_VERSION.

# Newest release whose go.mod (go 1.26.0) builds with the local Go 1.26 toolchain.
# One default for every script, so a node's kubelet matches its control plane.
DEFAULT_K8S_VERSION=v1.37.2

# shellcheck disable=SC2034 # the sourcing scripts put their CACHE_ROOT under it
PACKET_CAPTURE_CACHE_ROOT=${PACKET_CAPTURE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/packet-capture}

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$LOG_TAG" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
elapsed() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

abs_path() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }

# Version that a go.mod requires of a module: gomod_field FILE MODULE.
gomod_field() {
  go mod edit -print "$1" |
    awk -v key="$2" '{ sub(/^[ \t]*require[ \t]+/, "") } $1 == key { print $2; exit }'
}

# Runs a command, showing its output only if it fails.
quiet() {
  local out
  out=$("$@" 2>&1) || {
    printf '%s\n' "$out" >&2
    return 1
  }
}

# download_module MODULE@VERSION VAR [FIELD]: downloads it and prints FIELD of
# `go mod download -json` (default GoMod, the path of its go.mod; Dir is its
# source). VAR names the setting that chose VERSION, for the error message.
download_module() {
  local out field=${3:-GoMod}
  if ! out=$(go mod download -json "$1" 2>&1); then
    local reason
    reason=$(sed -n 's/^[[:space:]]*"Error": "\(.*\)",\{0,1\}$/\1/p' <<<"$out" |
      sed 's/\\"/"/g; s/\\u003c/</g; s/\\u003e/>/g; s/\\u0026/\&/g')
    # GOTOOLCHAIN=local makes go refuse modules that need a newer Go.
    [[ $reason == *"requires go >="* ]] && die "$reason: set an older $2"
    die "cannot download $1 from the Go module proxy (GOPROXY=$(go env GOPROXY)): ${reason:-$out}"
  fi
  sed -n 's/^[[:space:]]*"'"$field"'": "\(.*\)",\{0,1\}$/\1/p' <<<"$out"
}

setup_go() {
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    PATH=/usr/local/go/bin:$PATH
  fi
  command -v go >/dev/null || die "Go is not installed (no 'go' on PATH or in /usr/local/go/bin); it is needed to build the binaries"
  # Never let go.mod 'toolchain' lines trigger a toolchain download; a
  # stray go.work above the temp dir must not capture the wrapper modules.
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
}

# go_build LABEL MODULE_DIR OUT PACKAGE [BUILD_FLAG...]
go_build() {
  local label=$1 dir=$2 out=$3 pkg=$4 t=$SECONDS
  shift 4
  log "building $label..."
  go -C "$dir" build -p 2 -trimpath "$@" -o "$out" "$pkg" >&2
  log "built ${out##*/} in $(elapsed $((SECONDS - t)))"
}

# Checks K8S_VERSION and sets K8S_MINOR and STAGING_VERSION from it.
k8s_parse_version() {
  [[ $K8S_VERSION =~ ^v1\.([0-9]+)\.([0-9]+)(-[0-9A-Za-z.-]+)?$ ]] ||
    die "K8S_VERSION=$K8S_VERSION is not a Kubernetes release tag like $DEFAULT_K8S_VERSION"
  K8S_MINOR=${BASH_REMATCH[1]}
  # Staging modules (k8s.io/api, k8s.io/client-go, ...) are tagged v0.<minor>.<patch>.
  STAGING_VERSION=v0.${K8S_MINOR}.${BASH_REMATCH[2]}${BASH_REMATCH[3]}
}

# Downloads k8s.io/kubernetes@K8S_VERSION; sets K8S_GOMOD (its go.mod) and
# K8S_STAGING (the staging modules it replaces with ./staging/src/...).
k8s_resolve() {
  log "resolving k8s.io/kubernetes@$K8S_VERSION"
  K8S_GOMOD=$(download_module "k8s.io/kubernetes@$K8S_VERSION" K8S_VERSION)
  # Those replaces are ignored in a dependency, so k8s_build mirrors them
  # with the published v0.x tags.
  mapfile -t K8S_STAGING < <(go mod edit -print "$K8S_GOMOD" |
    awk 'NF >= 3 && $(NF-1) == "=>" && $NF ~ /^\.\/staging\// { print ($1 == "replace" ? $2 : $1) }')
  ((${#K8S_STAGING[@]})) || die "found no staging replaces in k8s.io/kubernetes@$K8S_VERSION go.mod"
}

# k8s_build WORK OUT NAME...: builds k8s.io/kubernetes/cmd/NAME into OUT/NAME,
# in a wrapper module under WORK. Needs k8s_resolve first.
k8s_build() {
  local mod=$1/kubernetes out=$2 replaces=() m
  shift 2
  mkdir "$mod"
  quiet go -C "$mod" mod init "packet-capture.local/$LOG_TAG/kubernetes"
  for m in "${K8S_STAGING[@]}"; do replaces+=("-replace=$m=$m@$STAGING_VERSION"); done
  go -C "$mod" mod edit "-require=k8s.io/kubernetes@$K8S_VERSION" "${replaces[@]}"

  log "resolving Kubernetes dependencies..."
  local b get_args=()
  for b; do get_args+=("k8s.io/kubernetes/cmd/$b@$K8S_VERSION"); done
  quiet go -C "$mod" get "${get_args[@]}" ||
    die "cannot resolve Kubernetes $K8S_VERSION modules (is the Go module proxy reachable?)"

  # Same version stamping as Kubernetes' hack/lib/version.sh, so /version and
  # --version report the release. The build date is the release tag's date,
  # which keeps rebuilds reproducible.
  local build_date
  build_date=$(sed -n 's/.*"Time":"\([0-9-]*T[0-9:]*\)\(\.[0-9]*\)\{0,1\}Z".*/\1Z/p' \
    "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.info" 2>/dev/null || true)
  [[ -n $build_date ]] || build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local ldflags='-s -w' pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
    ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done

  for b; do
    go_build "$b $K8S_VERSION (takes minutes on first run)" "$mod" "$out/$b" "k8s.io/kubernetes/cmd/$b" -ldflags "$ldflags"
  done
}

# k8s_check_version DIR NAME...: each DIR/NAME --version must report K8S_VERSION.
k8s_check_version() {
  local dir=$1 b
  shift
  for b; do
    [[ $("$dir/$b" --version) == "Kubernetes $K8S_VERSION" ]] || die "$b reports the wrong version"
  done
}

# build_into_cache BUILD_FN: runs BUILD_FN OUT WORK, which fills the empty
# directory OUT (WORK is scratch) and appends key=value lines for the .complete
# marker to CACHE_MANIFEST, then moves OUT to CACHE_DIR. Hold the lock.
build_into_cache() {
  local start=$SECONDS out work key=${CACHE_DIR##*/}
  out=$(mktemp -d "$CACHE_ROOT/.tmp-$key-XXXXXX")
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the paths are local
  trap "rm -rf '$out' '$work'" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  setup_go
  log "using $(go version) (GOPROXY=$(go env GOPROXY))"
  CACHE_MANIFEST=()
  "$1" "$out" "$work"

  printf '%s\n' "${CACHE_MANIFEST[@]}" "go=$(go env GOVERSION)" "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$out/.complete"
  chmod 755 "$out"
  rm -rf "$CACHE_DIR" # only an incomplete leftover can be here: we hold the lock
  mv -T "$out" "$CACHE_DIR"
  log "cached in $CACHE_DIR; total build time $(elapsed $((SECONDS - start)))"
}

# ensure_cache BUILD_FN: makes CACHE_DIR complete, building it with BUILD_FN
# (see build_into_cache) unless it already is.
ensure_cache() {
  [[ -f $CACHE_DIR/.complete ]] && return
  local key=${CACHE_DIR##*/}
  mkdir -p "$CACHE_ROOT"
  # One build per version at a time: parallel test runs wait for the first.
  exec 9>"$CACHE_ROOT/.lock-$key"
  if ! flock -n 9; then
    log "another process is building $key; waiting for it..."
    flock 9
  fi
  if [[ ! -f $CACHE_DIR/.complete ]]; then
    # Holding the lock, any temp dir for this version is from a killed build.
    rm -rf "$CACHE_ROOT/.tmp-$key-"*
    build_into_cache "$1"
  fi
  exec 9>&-
}

# Binaries (or directories) supplied by the environment, by name.
declare -gA given=()

# given_file VAR NAME: NAME is the executable file $VAR, when VAR is set.
given_file() {
  local var=$1
  [[ -n ${!var:-} ]] || return 0
  [[ -f ${!var} && -x ${!var} ]] || die "$var=${!var} is not an executable file"
  given[$2]=$(abs_path "${!var}")
}

# print_binaries_dir BUILD_FN NAME...: prints the directory holding NAME...:
# CACHE_DIR when nothing is given, the one directory everything was given
# from, or else a directory of symlinks to the given ones and the cached rest.
print_binaries_dir() {
  local build=$1 b
  shift
  if ((${#given[@]} == 0)); then
    ensure_cache "$build"
    echo "$CACHE_DIR"
    return
  fi

  # Everything supplied from one directory (e.g. a complete KUBEBUILDER_ASSETS): use it as is.
  local dir
  dir=$(dirname "${given[$1]:-/nonexistent/$1}")
  for b; do
    if [[ ${given[$b]:-} != "$dir/$b" ]]; then dir=; fi
  done
  if [[ -n $dir ]]; then
    log "using binaries from $dir"
    echo "$dir"
    return
  fi

  # Mixed sources: a directory of symlinks, named after its contents so it is reused.
  local links=()
  for b; do
    if [[ -z ${given[$b]:-} ]]; then
      ensure_cache "$build"
      given[$b]=$CACHE_DIR/$b
    fi
    links+=("$b=${given[$b]}")
    log "$b: ${given[$b]}"
  done
  local link_dir tmp
  link_dir=$CACHE_ROOT/links/$(printf '%s\n' "${links[@]}" | sha256sum | cut -c1-16)
  if [[ ! -d $link_dir ]]; then
    mkdir -p "$CACHE_ROOT/links"
    tmp=$(mktemp -d "$CACHE_ROOT/links/.tmp-XXXXXX")
    for b; do ln -s "${given[$b]}" "$tmp/$b"; done
    chmod 755 "$tmp"
    mv -T "$tmp" "$link_dir" 2>/dev/null || rm -rf "$tmp" # lost a race: same contents
  fi
  echo "$link_dir"
}
