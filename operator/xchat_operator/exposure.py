"""External exposure of each region's gRPC services (``spec.exposure``).

Each service of a region runs in its own Deployment behind its own Service
(``builders.service_service``), and a client dials each service by its own
address (the SDK's ``a.auth=host:port,a.keys=...`` endpoints). Exposure follows
that shape with the most widely supported form, a Service of type
``LoadBalancer`` (or ``NodePort`` where no load balancer exists) per service
and exposed region, named ``<mesh>-<service>-<region>-ext``. For every host
``H`` the spec gives a region, the service answers as ``<service>.H`` (for
example ``mailbox.a.chat.example.com``):

* that name is on the Service (``external-dns.alpha.kubernetes.io/hostname``,
  so ExternalDNS, where installed, publishes it);
* that name is in the service's certificate (``names_for``), which the
  operator re-issues when the names change (``reconcile``), so clients verify
  the server by the name they dialled. With ``tls.secretName`` the certificate
  is the user's (cert-manager: docs/operator.md) and must carry these names.

The CRD refuses exposure without TLS (tokens would cross networks in clear),
hosts of regions the mesh does not have, and malformed names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import names
from .spec import SERVICE_NAMES, ExposureType, MeshSpec

EXTERNAL_DNS_ANNOTATION = "external-dns.alpha.kubernetes.io/hostname"
COMPONENT = "exposure"


def external_service_name(mesh: str, service: str, region: str) -> str:
    """At most 24 + 7 + 12 + 6 characters (CRD caps on mesh and region names)."""
    return f"{names.service_workload(mesh, service, region)}-ext"


def names_for(spec: MeshSpec, service: str, region: str | None = None) -> list[str]:
    """The external DNS names of ``service`` in ``region`` (None: every exposed region):
    the extra SANs of its certificate in that region."""
    if spec.exposure is None:
        return []
    regions = {r.name for r in spec.regions} if region is None else {region} & {r.name for r in spec.regions}
    return sorted(f"{service}.{host}" for name, hosts in spec.exposure.hosts.items() if name in regions
                  for host in hosts)


def external_services(spec: MeshSpec, owner: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One Service per service and exposed region (``owner``: the mesh's owner reference).

    None for a region that does not serve (draining, drained, down): clients
    are sent elsewhere, as with the endpoints ConfigMap.
    """
    exposure = spec.exposure
    if exposure is None:
        return []
    out: list[dict[str, Any]] = []
    for region in spec.regions:
        hosts = exposure.hosts.get(region.name)
        if not hosts or not region.serving:
            continue
        for service in SERVICE_NAMES:
            annotations = {**exposure.annotations,
                           EXTERNAL_DNS_ANNOTATION: ",".join(f"{service}.{h}" for h in hosts)}
            out.append({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": external_service_name(spec.name, service, region.name),
                    "namespace": spec.namespace,
                    "labels": {**names.labels(spec.name, COMPONENT, region.name), "xchat.dev/service": service},
                    "annotations": annotations,
                    "ownerReferences": [dict(owner)],
                },
                "spec": {
                    "type": exposure.type.value,
                    "selector": names.selector(spec.name, service, region.name),
                    "ports": [{"name": "grpc", "port": names.GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"}],
                    # Clients' addresses reach the pods (the services rate-limit per client address).
                    **({"externalTrafficPolicy": "Local"} if exposure.type is ExposureType.LOAD_BALANCER else {}),
                },
            })
    return out
