"""NetworkPolicies of one mesh: who may reach which port.

* NATS pods: the client port only from this mesh's service pods, the route
  port only from this mesh's NATS pods, the monitoring port only from the
  operator's pods (its health probe; ``/connz`` shows which devices are online)
  and the client port from them too (its ``jsadmin`` user, ``replicas``);
* service pods: gRPC, the plaintext health port and /metrics from anywhere
  (clients, kubelet, the operator's probes, Prometheus);
* the NATS exporter sidecar's /metrics (when enabled) from anywhere.

Kubelet's own probes come from the node, which most CNIs (Calico, Cilium)
always admit; the policies only narrow pod-to-pod traffic. They take effect
only where the cluster's network plugin enforces NetworkPolicy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import monitoring, names
from .spec import SERVICE_NAMES, MeshSpec

Obj = dict[str, Any]
#: ``meta(name, component)``: the owned object's metadata (builders' ``_meta``).
Meta = Callable[[str, str], Obj]
COMPONENT = "network-policy"


def _mesh_pods(spec: MeshSpec, components: list[str]) -> Obj:
    return {"matchLabels": {names.LABEL_MESH: spec.name},
            "matchExpressions": [{"key": names.LABEL_COMPONENT, "operator": "In", "values": components}]}


def nats_policy(spec: MeshSpec, meta: Meta) -> Obj:
    services = {"podSelector": _mesh_pods(spec, list(SERVICE_NAMES))}
    nats = {"podSelector": _mesh_pods(spec, ["nats"])}
    # The operator runs in its own namespace: any namespace, but only its pods.
    operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": dict(names.OPERATOR_POD_LABELS)}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(names.network_policy(spec.name, "nats"), COMPONENT),
        "spec": {
            "podSelector": _mesh_pods(spec, ["nats"]),
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [services], "ports": [{"protocol": "TCP", "port": names.NATS_CLIENT_PORT}]},
                {"from": [nats], "ports": [{"protocol": "TCP", "port": names.NATS_CLUSTER_PORT}]},
                # Monitoring for the health probe; the client port for the jsadmin user
                # that moves a draining region's replicas (``replicas``).
                {"from": [operator], "ports": [{"protocol": "TCP", "port": names.NATS_MONITOR_PORT},
                                               {"protocol": "TCP", "port": names.NATS_CLIENT_PORT}]},
                *([monitoring.ingress_rule(names.NATS_EXPORTER_PORT)] if spec.nats_exporter.enabled else []),
            ],
        },
    }


def services_policy(spec: MeshSpec, meta: Meta) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(names.network_policy(spec.name, "services"), COMPONENT),
        "spec": {
            "podSelector": _mesh_pods(spec, list(SERVICE_NAMES)),
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": names.GRPC_PORT},
                                   {"protocol": "TCP", "port": names.HEALTH_PORT},
                                   {"protocol": "TCP", "port": names.SERVICE_METRICS_PORT}]}],
        },
    }


def network_policies(spec: MeshSpec, meta: Meta) -> list[Obj]:
    return [nats_policy(spec, meta), services_policy(spec, meta)]
