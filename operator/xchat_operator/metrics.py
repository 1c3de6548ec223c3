"""The operator's own Prometheus metrics and the port that serves them.

``handlers`` records here; nothing else does. Labels are the mesh's namespace
and name, its regions and a small fixed set of triggers, results, reasons and
phases: bounded by what the cluster's operators create, never by traffic.
A deleted mesh's series are removed (:func:`forget`), so they do not linger
as a mesh stuck in its last phase.

The port (``XCHAT_OPERATOR_METRICS_PORT``, 0 = off) is separate from kopf's
liveness port: a scrape never competes with the kubelet's probe.
"""

from __future__ import annotations

from collections.abc import Mapping
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

PHASES = ("Pending", "Running", "Degraded", "Paused")

RECONCILES = Counter(
    "xchat_operator_reconciles", "Reconciliations by trigger (change, timer, child) and result", ["trigger", "result"]
)
RECONCILE_SECONDS = Histogram(
    "xchat_operator_reconcile_duration_seconds", "Time to apply a mesh's children", ["trigger"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
ERRORS = Counter("xchat_operator_errors", "Failed reconciliations and probes, by reason", ["reason"])
PHASE = Gauge("xchat_operator_mesh_phase", "1 for the mesh's current phase, 0 for the others", ["namespace", "mesh", "phase"])
READY_REGIONS = Gauge("xchat_operator_ready_regions", "Regions of the mesh whose NATS and services are healthy", ["namespace", "mesh"])
REGION_HEALTHY = Gauge(
    "xchat_operator_region_healthy", "1 when the region's last probe found NATS and every service healthy",
    ["namespace", "mesh", "region"],
)

METRIC_NAMES: frozenset[str] = frozenset(
    {
        "xchat_operator_reconciles_total",
        "xchat_operator_reconcile_duration_seconds_bucket",
        "xchat_operator_reconcile_duration_seconds_sum",
        "xchat_operator_reconcile_duration_seconds_count",
        "xchat_operator_errors_total",
        "xchat_operator_mesh_phase",
        "xchat_operator_ready_regions",
        "xchat_operator_region_healthy",
    }
)

_server: tuple[WSGIServer, Thread] | None = None


def serve(port: int, addr: str = "0.0.0.0") -> int:
    """Starts /metrics (once per process); returns the bound port."""
    global _server
    if _server is None:
        _server = start_http_server(port, addr=addr)
    return int(_server[0].server_address[1])


def stop() -> None:
    global _server
    if _server is not None:
        server, thread = _server
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        _server = None


def mesh_status(namespace: str, mesh: str, status: Mapping[str, object], regions: Mapping[str, bool]) -> None:
    """Phase, ready regions and per-region health from a status just computed."""
    phase = status.get("phase")
    for p in PHASES:
        PHASE.labels(namespace, mesh, p).set(1 if p == phase else 0)
    ready = str(status.get("readyRegions") or "")  # "ready/expected"
    if ready.partition("/")[0].isdigit():
        READY_REGIONS.labels(namespace, mesh).set(int(ready.partition("/")[0]))
    for region, ok in regions.items():
        REGION_HEALTHY.labels(namespace, mesh, region).set(1 if ok else 0)


def forget(namespace: str, mesh: str) -> None:
    """Removes a deleted mesh's series."""
    for gauge in (PHASE, READY_REGIONS, REGION_HEALTHY):
        for labels in list(gauge._metrics):  # prometheus-client keeps children by label tuple
            if labels[:2] == (namespace, mesh):
                gauge.remove(*labels)
