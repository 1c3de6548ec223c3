#!/usr/bin/env bash
# Versioned release artifacts into OUT (default dist/release/<version>), installable with no
# build step and no registry (docs/chart.md, "Installing from release artifacts"):
#
#   xchat_backbone-<v>.tar.gz, xchat_backbone-<v>-py3-none-any.whl   server, operator, drills (sdist, wheel)
#   xchat_sdk-<v>-py3-none-any.whl                                   the client SDK alone
#   xchat-<v>.tgz                                                    the Helm chart (helm package)
#   xchat-proto-<v>.tar.gz                                           the buf module (docs/proto.md)
#   xchat-backbone-<v>.cdx.json                                      CycloneDX SBOM of the server wheel
#                                                                    as installed (every Python dependency)
#   xchat-image-<v>.tar, xchat-nats-image-<nats v>.tar               `docker save` archives (OCI layout
#                                                                    inside), only with --images
#   SHA256SUMS                                                       of every file above
#
# --images archives images already built by charts/images/build.sh (root, debootstrap, ~15 min
# cold): this script never builds them, and fails if they are missing.
# Needs: the venv with the release extra (make release installs it), helm (make tools), pip reaching
# the package index (the SBOM resolves the wheel's dependencies in a fresh venv).
# Usage: charts/tools/release.sh [--images] [OUT]
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${XCHAT_PYTHON:-$REPO/.venv/bin/python}"
CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}"
HELM="${HELM:-$CACHE/bin/helm}"
VERSION="$(sed -nE 's/^version = "(.*)"/\1/p' "$REPO/pyproject.toml" | head -1)"
NATS_TAG="$(sed -nE 's/^  tag: "([0-9.]+)".*/\1/p' "$REPO/charts/xchat/values.yaml" | head -1)"

images=0
if [[ "${1:-}" == "--images" ]]; then images=1; shift; fi
OUT="${1:-$REPO/dist/release/$VERSION}"

log() { printf '[release] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -x "$HELM" ]] || HELM="$(command -v helm || true)"
[[ -n "$HELM" ]] || die "helm not found: operator/envtest/build-binaries.sh helm (make tools builds it)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
[[ -z "$(ls -A "$OUT")" ]] || die "$OUT is not empty (a release folder holds one release)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

log "xchat-backbone $VERSION: sdist and wheel"
# -P: the repository's build/ folder must not shadow the `build` package.
(cd "$WORK" && "$PY" -P -m build --sdist --wheel --outdir "$OUT" "$REPO" >"$WORK/build.log" 2>&1) \
  || { tail -20 "$WORK/build.log" >&2; die "python -m build failed"; }

log "xchat-sdk $VERSION: wheel"
(cd "$WORK" && "$PY" -P -m xchat.client.sdk_wheel "$OUT" >"$WORK/sdk.log" 2>&1) \
  || { tail -20 "$WORK/sdk.log" >&2; die "sdk wheel failed"; }

log "chart xchat-$VERSION.tgz"
"$HELM" package "$REPO/charts/xchat" --version "$VERSION" --app-version "$VERSION" --destination "$OUT" >/dev/null

log "proto module xchat-proto-$VERSION.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@0" -C "$REPO/proto" \
  --exclude=released -czf "$OUT/xchat-proto-$VERSION.tar.gz" --transform "s,^\.,xchat-proto-$VERSION," .

log "SBOM: the server wheel installed in a fresh venv, read by cyclonedx-py"
# Without pip in it (installed from outside with --python): the SBOM lists what the wheel brings, not pip.
"$PY" -m venv --without-pip "$WORK/sbom-venv"
"$PY" -m pip --python "$WORK/sbom-venv/bin/python" install --quiet --disable-pip-version-check \
  "$OUT"/xchat_backbone-"$VERSION"-*.whl \
  || die "pip could not install the wheel's dependencies (the SBOM lists what an install resolves)"
"$PY" -m cyclonedx_py environment --output-reproducible --of JSON --pyproject "$REPO/pyproject.toml" \
  -o "$OUT/xchat-backbone-$VERSION.cdx.json" "$WORK/sbom-venv/bin/python" 2>"$WORK/sbom.log" \
  || { tail -20 "$WORK/sbom.log" >&2; die "cyclonedx-py failed"; }

if [[ $images == 1 ]]; then
  command -v docker >/dev/null && docker info >/dev/null 2>&1 || die "--images needs a running Docker engine"
  for pair in "xchat:$VERSION xchat-image-$VERSION.tar" "xchat-nats:$NATS_TAG xchat-nats-image-$NATS_TAG.tar"; do
    set -- $pair
    docker image inspect "$1" >/dev/null 2>&1 || die "image $1 missing: charts/images/build.sh builds it (as root)"
    log "image archive $2 ($1)"
    docker save -o "$OUT/$2" "$1"
  done
fi

(cd "$OUT" && sha256sum -- * > SHA256SUMS)
log "wrote $OUT:"
(cd "$OUT" && ls -l) >&2
