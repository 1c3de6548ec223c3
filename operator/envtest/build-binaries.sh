#!/usr/bin/env bash
# Build the envtest binaries (kube-apiserver, etcd, kubectl, helm) from the Go
# module proxy into ${XCHAT_CACHE:-$HOME/.cache/xchat}/bin.
#
# - Idempotent: a binary already in the cache at the pinned version is skipped
#   (a stamp file records the version it was built from).
# - Each tool is built from a throw-away wrapper module under
#   $CACHE/build/<tool>: `go get` the pinned main package, and for modules whose
#   go.mod points at in-repo paths (k8s.io/kubernetes -> ./staging/src/k8s.io/*,
#   etcd server -> ../api ...) add replace directives to the same-release
#   published modules, since replace directives of a dependency are ignored.
# - Kind to a shared 2-core machine: `nice`, `go build -p ${XCHAT_GO_PARALLEL:-2}`; two build
#   lanes in parallel (k8s tools | etcd, helm), XCHAT_BUILD_LANES=1 to build one at a time.
# - Fails loudly: `set -euo pipefail`, and a missing Go toolchain is an error.
#
# Usage: operator/envtest/build-binaries.sh [kube-apiserver|etcd|kubectl|helm ...]
set -euo pipefail

KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
GO_PARALLEL="${XCHAT_GO_PARALLEL:-2}"

CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}"
BIN="$CACHE/bin"
BUILD="$CACHE/build"

log() { printf '[build-binaries] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not installed (need Go >= 1.26 and access to the Go module proxy)"
mkdir -p "$BIN" "$BUILD"

# k8s.io/kubernetes vX.Y.Z publishes its staging modules as v0.Y.Z.
staging_version() { echo "v0.${1#v1.}"; }

# wrapper_module DIR MODULE VERSION: fresh go.mod in DIR that requires MODULE@VERSION,
# with every local-path replace of MODULE's go.mod redirected to a published version.
wrapper_module() {
  local dir="$1" module="$2" version="$3" staging_ver="${4:-}"
  rm -rf "$dir"; mkdir -p "$dir"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  [[ -f "$gomod" ]] || die "could not download go.mod of $module@$version"
  local gover
  gover="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  (cd "$dir" && go mod init "xchat.dev/envtest/$(basename "$dir")" >/dev/null 2>&1 && go mod edit -go="$gover")
  # Local-path replaces look like `name => ./x` or `name => ../x`, in or out of a block.
  local rep
  while read -r rep; do
    [[ -n "$rep" ]] || continue
    local target_ver="$staging_ver"
    if [[ -z "$target_ver" ]]; then
      # Use the version the module itself requires (etcd pins its siblings).
      target_ver="$(awk -v m="$rep" '$1==m && $2 ~ /^v/ {print $2; exit}' "$gomod")"
    fi
    [[ -n "$target_ver" ]] || die "no version for replaced module $rep"
    (cd "$dir" && go mod edit -replace "$rep=$rep@$target_ver")
  done < <(sed -nE 's/^(replace)?[[:space:]]*([^[:space:]]+)[[:space:]]+=>[[:space:]]+\.\.?\/.*/\2/p' "$gomod")
}

# build TOOL MODULE VERSION PACKAGE [STAGING_VERSION] [LDFLAGS]
build() {
  local tool="$1" module="$2" version="$3" pkg="$4" staging="${5:-}" ldflags="${6:-}"
  local stamp="$BIN/.$tool.version" want="$module@$version"
  if [[ -x "$BIN/$tool" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "skip $tool: cached $BIN/$tool ($want)"
    return 0
  fi
  local dir="$BUILD/$tool" t0=$SECONDS
  log "build $tool from $pkg ($want) in $dir"
  wrapper_module "$dir" "$module" "$version" "$staging"
  (cd "$dir" && go get "$pkg@$version" >"$dir/go-get.log" 2>&1) || { cat "$dir/go-get.log" >&2; die "go get $pkg@$version failed"; }
  (cd "$dir" && CGO_ENABLED=0 nice -n 10 go build -p "$GO_PARALLEL" -trimpath \
      -ldflags "-s -w $ldflags" -o "$BIN/$tool.tmp" "$pkg") || die "go build $pkg failed"
  mv -f "$BIN/$tool.tmp" "$BIN/$tool"
  echo "$want" >"$stamp"
  log "built $tool in $((SECONDS - t0))s -> $BIN/$tool"
}

K8S_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
-X k8s.io/component-base/version.gitMajor=1 \
-X k8s.io/component-base/version.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2) \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"
K8S_STAGING="$(staging_version "$KUBERNETES_VERSION")"

build_one() {
  case "$1" in
    etcd) build etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 ;;
    kube-apiserver) build kube-apiserver k8s.io/kubernetes "$KUBERNETES_VERSION" \
        k8s.io/kubernetes/cmd/kube-apiserver "$K8S_STAGING" "$K8S_LDFLAGS" ;;
    kubectl) build kubectl k8s.io/kubernetes "$KUBERNETES_VERSION" \
        k8s.io/kubernetes/cmd/kubectl "$K8S_STAGING" "$K8S_LDFLAGS" ;;
    helm) build helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "" \
        "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    *) die "unknown tool '$1' (known: kube-apiserver etcd kubectl helm)" ;;
  esac
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(kube-apiserver etcd kubectl helm)
# Builds run as parallel lanes (XCHAT_BUILD_LANES, default 2): module downloads,
# `go get` resolution and linking are mostly single-threaded, so a second lane
# keeps both cores busy while the other waits on them. The k8s tools share one
# lane so kubectl reuses kube-apiserver's compiled packages from the build cache
# instead of compiling them a second time in parallel. Memory: a kube-apiserver
# link peaks at ~3 GiB.
LANES="${XCHAT_BUILD_LANES:-2}"
k8s=() other=()
for t in "${tools[@]}"; do
  case "$t" in kube-apiserver|kubectl) k8s+=("$t") ;; etcd|helm) other+=("$t") ;; *) build_one "$t" ;; esac
done
if [[ "$LANES" -le 1 ]]; then
  for t in "${k8s[@]}" "${other[@]}"; do build_one "$t"; done
else
  lane() { local t; for t in "$@"; do build_one "$t" || return 1; done; }
  pids=()
  [[ ${#k8s[@]} -gt 0 ]] && { lane "${k8s[@]}" & pids+=($!); }
  [[ ${#other[@]} -gt 0 ]] && { lane "${other[@]}" & pids+=($!); }
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed -eq 0 ]] || die "a build lane failed (see the messages above)"
fi
log "done: $(ls "$BIN" | tr '\n' ' ')"
