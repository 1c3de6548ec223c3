#!/usr/bin/env bash
# Keep the chart's copies of the operator's CRDs and RBAC identical to the
# operator's own files (operator/ is the source of truth; never edit the copies):
#
#   operator/crd/xchatmesh.yaml, kopf-peering.yaml  -> charts/xchat/crds/
#   operator/rbac/clusterrole.yaml, mesh-role.yaml  -> charts/xchat/files/rbac/
#
# The RBAC templates read their `rules:` from files/rbac/ (.Files.Get), so the
# rendered rules are the operator's rules byte for byte; names, namespaces and
# subjects come from values. tests/chart/test_chart_sync.py fails when a copy drifts.
#
# Usage: charts/xchat/sync-from-operator.sh [--check]   (--check: report drift, exit 1, copy nothing)
set -euo pipefail
CHART="$(cd "$(dirname "$0")" && pwd)"
OP="$(cd "$CHART/../../operator" && pwd)"
PAIRS=(
  "$OP/crd/xchatmesh.yaml:$CHART/crds/xchatmesh.yaml"
  "$OP/crd/kopf-peering.yaml:$CHART/crds/kopf-peering.yaml"
  "$OP/rbac/clusterrole.yaml:$CHART/files/rbac/clusterrole.yaml"
  "$OP/rbac/mesh-role.yaml:$CHART/files/rbac/mesh-role.yaml"
)
drift=0
for pair in "${PAIRS[@]}"; do
  src="${pair%%:*}" dst="${pair#*:}"
  if cmp -s "$src" "$dst"; then continue; fi
  if [[ "${1:-}" == "--check" ]]; then
    echo "drift: ${dst#"$CHART/"} differs from ${src#"$OP/../"}" >&2; drift=1
  else
    mkdir -p "$(dirname "$dst")"; cp "$src" "$dst"; echo "synced ${dst#"$CHART/"}"
  fi
done
exit "$drift"
