#!/usr/bin/env bash
# Builds grpcurl (docs/troubleshooting.md's examples, run by its test) from the Go module
# proxy into the xchat cache; no-op when cached. About a minute cold on 2 cores.
# Usage: chaos/tools/build-grpcurl.sh   (prints the binary's path)
set -euo pipefail
VERSION="${GRPCURL_VERSION:-v1.9.4}"
CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}"
BIN="$CACHE/bin/grpcurl-$VERSION"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE/bin"
GOBIN_DIR="$(mktemp -d)"
trap 'rm -rf "$GOBIN_DIR"' EXIT
GOBIN="$GOBIN_DIR" GOFLAGS=-mod=mod GOTOOLCHAIN=local \
  go install -ldflags "-X main.version=$VERSION" "github.com/fullstorydev/grpcurl/cmd/grpcurl@$VERSION" >&2
mv "$GOBIN_DIR/grpcurl" "$BIN"
ln -sf "$(basename "$BIN")" "$CACHE/bin/grpcurl"
echo "$BIN"
