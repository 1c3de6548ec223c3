"""What the mesh's pods expose to operators: the services' /metrics port and log format, the NATS exporter sidecar.

``builders`` asks here for the pieces and puts them in its Deployments and
StatefulSets; ``policies`` admits the ports. Both ports are named ``metrics``,
which is what the chart's PodMonitors select.

* Service pods always serve ``xchat.core.metrics`` on :data:`names.SERVICE_METRICS_PORT`
  (``XCHAT_METRICS_LISTEN``). They get no ``XCHAT_NATS_MONITOR_URL``: the NATS
  monitoring port admits only the operator, so the mailbox backlog comes from
  the exporter below, not from the services.
* NATS pods serve only JSON on their monitoring port. With
  ``spec.monitoring.natsExporter.enabled`` each gets a prometheus-nats-exporter
  sidecar reading ``localhost:8222``: server variables, routes and per-stream
  JetStream state. Never ``-connz``: connections name the devices online.
"""

from __future__ import annotations

from typing import Any

from . import names
from .spec import MeshSpec

Obj = dict[str, Any]
EXPORTER_ARGS = ("-varz", "-routez", "-jsz=streams")


def service_env(spec: MeshSpec) -> list[Obj]:
    """Metrics port and log settings of a service container."""
    return [
        {"name": "XCHAT_METRICS_LISTEN", "value": f"0.0.0.0:{names.SERVICE_METRICS_PORT}"},
        {"name": "XCHAT_LOG_FORMAT", "value": spec.log_format},
        {"name": "XCHAT_LOG_LEVEL", "value": spec.log_level},
    ]


def service_port() -> Obj:
    return {"name": "metrics", "containerPort": names.SERVICE_METRICS_PORT}


def nats_exporter(spec: MeshSpec, security: Obj) -> Obj | None:
    """The sidecar container, or None when the mesh does not ask for it."""
    if not spec.nats_exporter.enabled:
        return None
    return {
        "name": "exporter",
        "image": spec.nats_exporter.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": [*EXPORTER_ARGS, "-port", str(names.NATS_EXPORTER_PORT), f"http://localhost:{names.NATS_MONITOR_PORT}"],
        "ports": [{"name": "metrics", "containerPort": names.NATS_EXPORTER_PORT}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": dict(security),
    }


def ingress_rule(port: int) -> Obj:
    """Scrapes come from Prometheus, wherever it runs: the port carries counts, never per-user data."""
    return {"ports": [{"protocol": "TCP", "port": port}]}
