#!/usr/bin/env bash
# Builds toxiproxy-server from the Go module proxy into the xchat cache; no-op when cached.
# Usage: chaos/tools/build-toxiproxy.sh   (prints the binary's path)
set -euo pipefail
exec "$(dirname "$0")/go-install-cached.sh" toxiproxy-server \
  github.com/Shopify/toxiproxy/v2/cmd/server "${TOXIPROXY_VERSION:-v2.12.0}"
