# shellcheck shell=bash
# Sourced by scripts/image and scripts/node-images: container images built without a
# registry or a daemon. Each layer is a tarball from GNU tar (or mmdebstrap), umoci stacks
# the layers and writes the config, and skopeo writes the image out as an OCI archive,
# named by its org.opencontainers.image.ref.name annotation, which
# `ctr -n k8s.io images import` takes as the image's name.
#
# Not `umoci insert`: Debian's umoci 0.4.7 writes those layers without the tar
# end-of-archive blocks (umoci issue #436, fixed upstream after 0.4.7); GNU tar's are whole.
#
# The sourcing script sets LOG_TAG before calling anything here.

IMAGES_CACHE=${PACKET_CAPTURE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/packet-capture}/images

# The time stamp of every file in the layers made here, so equal inputs give equal layer digests.
LAYER_MTIME=${SOURCE_DATE_EPOCH:-0}

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$LOG_TAG" "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# Runs a command, showing its output only if it fails.
quiet() {
  local out
  out=$("$@" 2>&1) || {
    printf '%s\n' "$out" >&2
    return 1
  }
}

abs_path() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }

# Installs the Debian packages of this list that are not installed: need_packages PKG...
need_packages() {
  local missing=() pkg
  for pkg; do
    [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == 'install ok installed' ]] || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return
  [[ $EUID -eq 0 ]] || die "needs ${missing[*]}: apt-get install -y ${missing[*]}"
  log "installing ${missing[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# A short key of standard input: a description of everything a cached result is made of.
content_key() { sha256sum | cut -c1-16; }

# Holds the image cache's lock until the script exits: one image build at a time per machine.
lock_image_cache() {
  mkdir -p "$IMAGES_CACHE"
  exec 9>"$IMAGES_CACHE/.lock"
  if ! flock -n 9; then
    log "another image build holds $IMAGES_CACHE/.lock; waiting for it..."
    flock 9
  fi
}

# The layouts made here hold one image, under this tag.
LAYOUT_TAG=image

# An empty image (no layers, no config): new_layout DIR
new_layout() {
  umoci init --layout "$1"
  umoci new --image "$1:$LAYOUT_TAG"
}

# Appends an uncompressed tarball as the image's next layer: add_tar_layer LAYOUT TAR COMMENT
add_tar_layer() {
  umoci raw add-layer --image "$1:$LAYOUT_TAG" --history.created_by "$LOG_TAG" --history.comment "$3" "$2"
}

# Appends the tree under DIR as the next layer, DIR being the image's /, every file owned
# by root: add_dir_layer LAYOUT DIR COMMENT
add_dir_layer() {
  local tar
  tar=$(mktemp --tmpdir="$(dirname "$1")" layer.XXXXXX.tar)
  tar --create --file="$tar" --directory="$2" --sort=name --numeric-owner --owner=0 --group=0 \
    --mtime="@$LAYER_MTIME" --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
  add_tar_layer "$1" "$tar" "$3"
  rm -f "$tar"
}

# The image's config; arguments are umoci config's (--config.entrypoint X, ...): configure LAYOUT ARG...
configure() {
  local layout=$1
  shift
  umoci config --image "$layout:$LAYOUT_TAG" --history.created_by "$LOG_TAG" "$@"
}

# A layout kept in the cache under NAME-KEY, made when missing by `MAKE... DIR` into a fresh
# DIR; prints the layout's directory. Older layouts of NAME beyond the newest three go.
# Hold the cache lock. cached_layout NAME KEY MAKE...
cached_layout() {
  local name=$1 key=$2
  shift 2
  local dir=$IMAGES_CACHE/layouts/$name-$key
  if [[ -f $dir/index.json ]]; then
    log "$name: cached ($key)"
  else
    mkdir -p "$IMAGES_CACHE/layouts"
    rm -rf "$dir.tmp"
    "$@" "$dir.tmp" >&2
    mv "$dir.tmp" "$dir"
  fi
  touch "$dir"
  # shellcheck disable=SC2010,SC2012 # the names are ours: NAME-<hex key>[.tmp]
  ls -dt "$IMAGES_CACHE/layouts/$name"-* | grep -v '\.tmp$' | tail -n +4 | xargs -r rm -rf
  echo "$dir"
}

# A writable copy of a cached layout, to add layers to: copy_layout FROM TO
copy_layout() {
  rm -rf "$2"
  cp -a "$1" "$2"
}

# Writes the layout's image as an OCI archive named REF: write_archive LAYOUT REF FILE
write_archive() {
  umoci gc --layout "$1"
  rm -f "$3.tmp"
  skopeo copy --quiet "oci:$1:$LAYOUT_TAG" "oci-archive:$3.tmp:$2"
  mv "$3.tmp" "$3"
}

# "12.3 MB": the size of a file in megabytes.
size_mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
