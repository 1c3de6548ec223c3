#!/usr/bin/env bash
# Builds improbable-eng's grpcwebproxy (the gRPC-web test, tests/services/test_mailbox_grpcweb.py)
# from the Go module proxy into the xchat cache; no-op when cached. About 15 s cold on 2 cores
# once its modules are downloaded. Envoy, the production proxy (docs/grpc-web.md), has no Go module.
# Usage: chaos/tools/build-grpcwebproxy.sh   (prints the binary's path)
set -euo pipefail
VERSION="${GRPCWEBPROXY_VERSION:-v0.15.0}"
exec "$(dirname "$0")/go-install-cached.sh" grpcwebproxy github.com/improbable-eng/grpc-web/go/grpcwebproxy "$VERSION"
