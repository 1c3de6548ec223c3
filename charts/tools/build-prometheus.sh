#!/usr/bin/env bash
# Builds prometheus from the Go module proxy into the xchat cache; no-op when cached.
# Used by tests/chart/test_chart_alerts_live.py (the chart's alerts over a live mesh).
# Built with `remove_all_sd`: only the file and HTTP service discovery the static test
# config needs, none of the cloud SD plugins (see the module's plugins/ package).
# Usage: charts/tools/build-prometheus.sh   (prints the binary's path)
set -euo pipefail
VERSION="${PROMETHEUS_VERSION:-v0.316.0}"  # the module's tag of Prometheus 3.16.0
CGO_ENABLED=0 exec nice -n 10 "$(dirname "$0")/../../chaos/tools/go-install-cached.sh" prometheus \
  github.com/prometheus/prometheus/cmd/prometheus "$VERSION" \
  -p "${XCHAT_GO_PARALLEL:-2}" -trimpath -ldflags "-s -w" -tags remove_all_sd
