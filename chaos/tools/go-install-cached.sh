#!/usr/bin/env bash
# Builds one Go command from the Go module proxy into the xchat cache, once: the binary
# NAME-VERSION and a NAME link beside it. Prints the binary's path; a no-op when cached.
# Usage: chaos/tools/go-install-cached.sh NAME PACKAGE VERSION [go install flags ...]
set -euo pipefail
NAME="$1" PACKAGE="$2" VERSION="$3"
shift 3
CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}"
BIN="$CACHE/bin/$NAME-$VERSION"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "$NAME: go is not installed" >&2; exit 1; }
mkdir -p "$CACHE/bin"
GOBIN_DIR="$(mktemp -d)"
trap 'rm -rf "$GOBIN_DIR"' EXIT
GOBIN="$GOBIN_DIR" GOFLAGS=-mod=mod GOTOOLCHAIN=local go install "$@" "$PACKAGE@$VERSION" >&2
mv "$GOBIN_DIR/$(basename "$PACKAGE")" "$BIN"
ln -sf "$(basename "$BIN")" "$CACHE/bin/$NAME"
echo "$BIN"
