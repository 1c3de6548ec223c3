#!/usr/bin/env bash
# Builds buf (the proto lint and breaking-change checks, tests/packaging/test_proto_buf.py) from the
# Go module proxy into the xchat cache; no-op when cached. About 2 minutes cold on 2 cores
# (1 min 48 s user CPU measured).
# Usage: chaos/tools/build-buf.sh   (prints the binary's path)
set -euo pipefail
VERSION="${BUF_VERSION:-v1.75.0}"
exec "$(dirname "$0")/go-install-cached.sh" buf github.com/bufbuild/buf/cmd/buf "$VERSION"
