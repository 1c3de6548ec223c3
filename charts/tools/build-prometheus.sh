#!/usr/bin/env bash
# Builds prometheus from the Go module proxy into the xchat cache; no-op when cached.
# Used by tests/chart/test_chart_alerts_live.py (the chart's alerts over a live mesh).
# Built with `remove_all_sd`: only the file and HTTP service discovery the static test
# config needs, none of the cloud SD plugins (see the module's plugins/ package).
# Usage: charts/tools/build-prometheus.sh   (prints the binary's path)
set -euo pipefail
VERSION="${PROMETHEUS_VERSION:-v0.316.0}"  # the module's tag of Prometheus 3.16.0
CACHE="${XCHAT_CACHE:-$HOME/.cache/xchat}"
BIN="$CACHE/bin/prometheus-$VERSION"
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "build-prometheus: go is not installed" >&2; exit 1; }
mkdir -p "$CACHE/bin"
GOBIN_DIR="$(mktemp -d)"
trap 'rm -rf "$GOBIN_DIR"' EXIT
GOBIN="$GOBIN_DIR" GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 \
  nice -n 10 go install -p "${XCHAT_GO_PARALLEL:-2}" -trimpath -ldflags "-s -w" -tags remove_all_sd \
  "github.com/prometheus/prometheus/cmd/prometheus@$VERSION" >&2
mv "$GOBIN_DIR/prometheus" "$BIN"
ln -sf "$(basename "$BIN")" "$CACHE/bin/prometheus"
echo "$BIN"
