#!/usr/bin/env bash
# Builds toxiproxy-server from the Go module proxy into the xchat cache; no-op when cached.
# Usage: chaos/tools/build-toxiproxy.sh   (prints the binary's path)
set -euo pipefail
VERSION="${TOXIPROXY_VERSION:-v2.12.0}"
CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}"
BIN="$CACHE/bin/toxiproxy-server-$VERSION"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
mkdir -p "$CACHE/bin"
GOBIN_DIR="$(mktemp -d)"
trap 'rm -rf "$GOBIN_DIR"' EXIT
GOBIN="$GOBIN_DIR" GOFLAGS=-mod=mod GOTOOLCHAIN=local \
  go install "github.com/Shopify/toxiproxy/v2/cmd/server@$VERSION" >&2
mv "$GOBIN_DIR/server" "$BIN"
ln -sf "$(basename "$BIN")" "$CACHE/bin/toxiproxy-server"
echo "$BIN"
