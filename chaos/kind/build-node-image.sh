#!/usr/bin/env bash
# Build everything a registry-free kind cluster needs, from local parts only:
#
#   binaries  kind (sigs.k8s.io/kind), kubelet, kubeadm, kube-controller-manager,
#             kube-scheduler, kube-proxy (k8s.io/kubernetes), coredns and
#             containerd 2 (+ shim, ctr) from the Go module proxy; kube-apiserver,
#             etcd, kubectl and helm come from operator/envtest/build-binaries.sh
#             (reused, not duplicated: the Kubernetes commands are built from a copy
#             of its wrapper module, which already carries the staging replaces).
#   rootfs    a Debian bookworm root filesystem made by debootstrap (systemd,
#             runc, CNI plugins, iptables, conntrack ...), imported as a docker image.
#   images    control-plane images made from those binaries (kube-apiserver,
#             kube-controller-manager, kube-scheduler, kube-proxy, etcd, coredns,
#             pause), tagged as kubeadm expects and saved as tarballs.
#   node      the kind node image: rootfs + containerd + kubelet/kubeadm/kubectl +
#             kind's entrypoint + a static CNI set up per node + the image tarballs.
#
# Everything is cached under ${XCHAT_CACHE:-$HOME/.cache/xchat}; a stage whose
# output is present (stamp file) is skipped. `nice` and `go build -p 1`: the
# machine is shared.
#
# Usage: chaos/kind/build-node-image.sh [binaries|rootfs|images|node ...]   (default: all)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.7}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
GO_PARALLEL="${XCHAT_GO_PARALLEL:-1}"
CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}"
BIN="$CACHE/bin"
KBIN="$CACHE/kind/bin"
BUILD="$CACHE/kind/build"
NODE_IMAGE="${XCHAT_KIND_NODE_IMAGE:-xchat.local/kind-node:$KUBERNETES_VERSION}"
BASE_IMAGE="xchat.local/debian-node-base:bookworm"

log() { printf '[build-node-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
mkdir -p "$BIN" "$KBIN" "$BUILD"

K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2) \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"

stamped() { [[ -x "$KBIN/$1" && -f "$KBIN/.$1.version" && "$(cat "$KBIN/.$1.version")" == "$2" ]]; }

gobuild() { # DIR OUT PKG LDFLAGS [TAGS]
  (cd "$1" && CGO_ENABLED=0 nice -n 10 go build -p "$GO_PARALLEL" -trimpath -tags "${5:-}" \
      -ldflags "$4" -o "$KBIN/$2.tmp" "$3") || die "go build $3 failed"
  mv -f "$KBIN/$2.tmp" "$KBIN/$2"
}

build_kind() {
  stamped kind "$KIND_VERSION" && { log "skip kind (cached)"; return; }
  local dir="$BUILD/kind" t0=$SECONDS; rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init xchat.dev/kind/kind >/dev/null 2>&1 && go get "sigs.k8s.io/kind@$KIND_VERSION" >go-get.log 2>&1) || die "go get kind failed"
  gobuild "$dir" kind sigs.k8s.io/kind "-s -w"
  echo "$KIND_VERSION" >"$KBIN/.kind.version"; log "built kind in $((SECONDS - t0))s"
}

# The Kubernetes commands: one wrapper module copied from the envtest build (same
# replaces of k8s.io/* staging modules), with the extra main packages added.
build_k8s() {
  local cmds=(kubelet kubeadm kube-controller-manager kube-scheduler kube-proxy) todo=()
  for c in "${cmds[@]}"; do stamped "$c" "$KUBERNETES_VERSION" || todo+=("$c"); done
  [[ ${#todo[@]} -gt 0 ]] || { log "skip kubernetes commands (cached)"; return; }
  "$REPO/operator/envtest/build-binaries.sh" kube-apiserver kubectl etcd helm
  local src="$CACHE/build/kube-apiserver" dir="$BUILD/kubernetes"
  [[ -f "$src/go.mod" ]] || die "$src/go.mod missing: operator/envtest/build-binaries.sh did not leave its wrapper module"
  mkdir -p "$dir"; cp "$src/go.mod" "$src/go.sum" "$dir/"
  for c in "${todo[@]}"; do
    local t0=$SECONDS
    (cd "$dir" && go get "k8s.io/kubernetes/cmd/$c@$KUBERNETES_VERSION" >>go-get.log 2>&1) || { tail -20 "$dir/go-get.log" >&2; die "go get $c failed"; }
    gobuild "$dir" "$c" "k8s.io/kubernetes/cmd/$c" "$K8S_LDFLAGS"
    echo "$KUBERNETES_VERSION" >"$KBIN/.$c.version"; log "built $c in $((SECONDS - t0))s"
  done
}

build_coredns() {
  stamped coredns "$COREDNS_VERSION" && { log "skip coredns (cached)"; return; }
  local dir="$BUILD/coredns" t0=$SECONDS; rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init xchat.dev/kind/coredns >/dev/null 2>&1 && go get "github.com/coredns/coredns@$COREDNS_VERSION" >go-get.log 2>&1) || { tail "$dir/go-get.log"; die "go get coredns failed"; }
  gobuild "$dir" coredns github.com/coredns/coredns "-s -w"
  echo "$COREDNS_VERSION" >"$KBIN/.coredns.version"; log "built coredns in $((SECONDS - t0))s"
}

# Debian bookworm ships containerd 1.6; Kubernetes >= 1.36 needs containerd 2.
build_containerd() {
  stamped containerd "$CONTAINERD_VERSION" && { log "skip containerd (cached)"; return; }
  local dir="$BUILD/containerd" t0=$SECONDS m=github.com/containerd/containerd/v2; rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init xchat.dev/kind/containerd >/dev/null 2>&1 && go get "$m/cmd/containerd@$CONTAINERD_VERSION" \
      "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" "$m/cmd/ctr@$CONTAINERD_VERSION" >go-get.log 2>&1) || { tail "$dir/go-get.log"; die "go get containerd failed"; }
  local tags="no_btrfs no_devmapper no_zfs no_aufs"
  local ld="-s -w -X $m/version.Version=$CONTAINERD_VERSION"
  gobuild "$dir" containerd-shim-runc-v2 "$m/cmd/containerd-shim-runc-v2" "$ld" "$tags"
  gobuild "$dir" ctr "$m/cmd/ctr" "$ld" "$tags"
  gobuild "$dir" containerd "$m/cmd/containerd" "$ld" "$tags"
  echo "$CONTAINERD_VERSION" >"$KBIN/.containerd.version"; log "built containerd in $((SECONDS - t0))s"
}

stage_binaries() { build_kind; build_k8s; build_coredns; build_containerd; }

KIND_SRC="$(go env GOMODCACHE)/sigs.k8s.io/kind@$KIND_VERSION/images/base/files"
ROOTFS_PACKAGES="systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,runc,containernetworking-plugins,socat,ebtables"


# Debian bookworm root filesystem of the node (what kind's base image installs).
stage_rootfs() {
  docker info >/dev/null 2>&1 || die "docker is not running (charts/images/build.sh starts it)"
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then log "skip rootfs ($BASE_IMAGE exists)"; return; fi
  local rootfs="$CACHE/kind/rootfs" t0=$SECONDS
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  nice -n 10 debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" bookworm "$rootfs" \
    "${XCHAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
  tar --numeric-owner -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
  log "rootfs -> $BASE_IMAGE in $((SECONDS - t0))s"
}

# image_from_binary IMAGE BINARY [BASE]: a one-binary image (FROM scratch unless BASE).
image_from_binary() {
  local image="$1" bin="$2" base="${3:-scratch}" ctx; ctx="$(mktemp -d)"
  cp "$bin" "$ctx/"; printf 'FROM %s\nCOPY %s /usr/local/bin/%s\nENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nENTRYPOINT ["/usr/local/bin/%s"]\n' \
    "$base" "$(basename "$bin")" "$(basename "$bin")" "$(basename "$bin")" >"$ctx/Dockerfile"
  docker build -q -t "$image" "$ctx" >/dev/null 2>&1; rm -rf "$ctx"
}

# Control-plane images, named as kubeadm expects (`kubeadm config images list`).
stage_images() {
  local out="$CACHE/kind/images" k8s="$KUBERNETES_VERSION"
  mkdir -p "$out"
  local list; list="$("$KBIN/kubeadm" config images list --kubernetes-version "$k8s" 2>/dev/null)" || die "kubeadm config images list failed"
  log "kubeadm wants: $(echo $list)"
  local img
  for img in $list; do
    local name="${img##*/}"; name="${name%%:*}"
    local tar="$out/$name.tar"
    [[ -f "$tar" ]] && { log "skip image $img (cached)"; continue; }
    case "$name" in
      kube-apiserver) image_from_binary "$img" "$BIN/kube-apiserver" ;;
      kube-controller-manager|kube-scheduler) image_from_binary "$img" "$KBIN/$name" ;;
      # kube-proxy execs iptables/conntrack: on the node's Debian userland.
      kube-proxy) image_from_binary "$img" "$KBIN/kube-proxy" "$BASE_IMAGE" ;;
      etcd) local ctx; ctx="$(mktemp -d)"; cp "$BIN/etcd" "$ctx/"
            printf 'FROM scratch\nCOPY etcd /usr/local/bin/etcd\nENV PATH=/usr/local/bin\n' >"$ctx/Dockerfile"
            docker build -q -t "$img" "$ctx" >/dev/null 2>&1; rm -rf "$ctx" ;;
      coredns) image_from_binary "$img" "$KBIN/coredns" ;;
      pause) local ctx; ctx="$(mktemp -d)"
             cat >"$ctx/pause.c" <<'C'
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void die(int s) { (void)s; exit(0); }
static void reap(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, die); signal(SIGTERM, die); signal(SIGCHLD, reap);
  for (;;) pause();
}
C
             gcc -O2 -static -o "$ctx/pause" "$ctx/pause.c" || die "gcc -static pause.c failed (apt-get install gcc libc6-dev)"
             printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
             docker build -q -t "$img" "$ctx" >/dev/null 2>&1; rm -rf "$ctx" ;;
      *) die "no recipe for image $img" ;;
    esac
    docker save -o "$tar" "$img"; log "image $img -> $tar"
  done
  echo "$list" >"$out/list"
}

# The node image: rootfs + kind's base files + our binaries + image tarballs.
# Skipped when the image exists with the same inputs (label xchat.dev/inputs: a hash
# of the scripts, the kind files and the binaries'/tarballs' names, sizes and mtimes).
node_inputs() {
  { cat "$HERE/node/"* "$HERE/runc-dropcaps" "$0" "$CACHE/kind/images/list"
    find "$KIND_SRC" -type f -exec sha256sum {} + | sort
    stat -c '%n %s %Y' "$KBIN"/{kubelet,kubeadm,containerd,containerd-shim-runc-v2,ctr} "$BIN/kubectl" "$CACHE/kind/images"/*.tar
    docker image inspect -f '{{.Id}}' "$BASE_IMAGE"; } 2>/dev/null | sha256sum | cut -c1-16
}

stage_node() {
  [[ -d "$KIND_SRC" ]] || die "kind sources missing at $KIND_SRC (stage binaries first)"
  local inputs; inputs="$(node_inputs)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "xchat.dev/inputs"}}' "$NODE_IMAGE" 2>/dev/null)" == "$inputs" ]]; then
    log "skip node image ($NODE_IMAGE is up to date)"; return
  fi
  local ctx="$CACHE/kind/node-ctx"; rm -rf "$ctx"; mkdir -p "$ctx/bin" "$ctx/images"
  cp -r "$KIND_SRC" "$ctx/kindfiles"
  cp "$KBIN"/{kubelet,kubeadm,containerd,containerd-shim-runc-v2,ctr} "$BIN/kubectl" "$ctx/bin/"
  cp "$CACHE/kind/images"/*.tar "$ctx/images/"
  cp "$HERE/node/xchat-cni" "$HERE/node/xchat-cni.service" "$HERE/node/xchat-import-images.service" \
     "$HERE/node/default-storage.yaml" "$HERE/runc-dropcaps" "$ctx/"
  local pause; pause="$(grep /pause: "$CACHE/kind/images/list")"
  # containerd runs runc through chaos/kind/runc-dropcaps (privileged pods ask for
  # capabilities the node's bounding set lacks), and clamps oom_score_adj to its own.
  sed -e "s#sandbox_image = .*#sandbox_image = \"$pause\"#" \
      -e "s#restrict_oom_score_adj = false#restrict_oom_score_adj = true#" \
      -e "s#^\( *\)SystemdCgroup = true#&\n\1BinaryName = \"/usr/local/bin/runc-dropcaps\"#" \
      "$KIND_SRC/etc/containerd/config.toml" >"$ctx/containerd-config.toml"
  grep -q 'BinaryName = "/usr/local/bin/runc-dropcaps"' "$ctx/containerd-config.toml" || die "could not set containerd's runc BinaryName"
  sed -e "s#@BASE@#$BASE_IMAGE#" -e "s#@K8S@#$KUBERNETES_VERSION#" "$HERE/node/Dockerfile" >"$ctx/Dockerfile"
  nice -n 10 docker build --label "xchat.dev/inputs=$inputs" -t "$NODE_IMAGE" "$ctx" >"$CACHE/kind/node-build.log" 2>&1 || { tail -30 "$CACHE/kind/node-build.log"; die "node image build failed"; }
  log "built $NODE_IMAGE"
}

stages=("$@"); [[ ${#stages[@]} -gt 0 ]] || stages=(binaries rootfs images node)
for s in "${stages[@]}"; do
  declare -F "stage_$s" >/dev/null || die "unknown stage '$s' (binaries rootfs images node)"
  log "== stage $s"; "stage_$s"
done
log "done"
