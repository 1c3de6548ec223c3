#!/usr/bin/env bash
# Builds grpcurl (docs/troubleshooting.md's examples, run by its test) from the Go module
# proxy into the xchat cache; no-op when cached. About a minute cold on 2 cores.
# Usage: chaos/tools/build-grpcurl.sh   (prints the binary's path)
set -euo pipefail
VERSION="${GRPCURL_VERSION:-v1.9.4}"
exec "$(dirname "$0")/go-install-cached.sh" grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$VERSION" \
  -ldflags "-X main.version=$VERSION"
