"""Names and labels of every object the operator owns.

One place decides them so builders, the pruner and the probes agree.  The CRD
caps mesh names at 24 and region names at 12 characters, so every name here
stays under the 63-character DNS label limit (longest: ``<mesh>-nats-<region>-headless``).
"""

from __future__ import annotations

from .spec import MeshSpec

MANAGED_BY = "xchat-operator"
LABEL_MESH = "xchat.dev/mesh"
LABEL_REGION = "xchat.dev/region"
LABEL_COMPONENT = "app.kubernetes.io/component"

NATS_CLIENT_PORT = 4222
NATS_CLUSTER_PORT = 6222
NATS_MONITOR_PORT = 8222
GRPC_PORT = 50051
# Plaintext grpc.health.v1 only: kubelet's gRPC probes cannot speak TLS.
HEALTH_PORT = 50052
# Prometheus /metrics of every service pod, and of the NATS pods' exporter sidecar.
SERVICE_METRICS_PORT = 9090
NATS_EXPORTER_PORT = 7777
ROUTE_USER = "route"
#: The NATS user of the bootstrap init containers (creates streams and buckets).
BOOTSTRAP_USER = "bootstrap"
#: The operator's own NATS user: moves a draining region's replicas (``replicas``); no pod mounts it.
JSADMIN_USER = "jsadmin"
#: The operator's NATS user in the system account: SERVER.REMOVE of a removed region's servers.
JSMETA_USER = "jsmeta"
#: Labels of the operator's own pods (the chart's selector labels): the only
#: pods the NetworkPolicies let reach the NATS monitoring port.
OPERATOR_POD_LABELS = {"app.kubernetes.io/component": "operator"}


def nats_statefulset(mesh: str, region: str) -> str:
    return f"{mesh}-nats-{region}"


def nats_cluster_pdb(mesh: str) -> str:
    """The one PodDisruptionBudget over the NATS pods of every region."""
    return f"{mesh}-nats"


def nats_client_service(mesh: str, region: str) -> str:
    return f"{mesh}-nats-{region}"


def nats_headless_service(mesh: str, region: str) -> str:
    return f"{mesh}-nats-{region}-headless"


def nats_config_secret(mesh: str, region: str) -> str:
    return f"{mesh}-nats-{region}-config"


def service_workload(mesh: str, service: str, region: str) -> str:
    """Deployment, Service and PDB name of one gRPC service in one region."""
    return f"{mesh}-{service}-{region}"


def credentials_secret(mesh: str) -> str:
    return f"{mesh}-nats-credentials"


def signing_key_secret(mesh: str) -> str:
    return f"{mesh}-token-signing-key"


def public_key_secret(mesh: str) -> str:
    return f"{mesh}-token-public-key"


def generated_tls_secret(mesh: str) -> str:
    return f"{mesh}-tls"


def tls_secret(spec: MeshSpec) -> str:
    return spec.tls.secret_name or generated_tls_secret(spec.name)


def service_tls_secret(mesh: str, service: str, region: str) -> str:
    """The generated certificate of one service in one region (CN = its NATS user), from the mesh CA.

    Per region, like :func:`nats_tls_secret`: adding or removing a region issues
    or deletes its own certificates and leaves every other region's pods as they are.
    """
    return f"{service_workload(mesh, service, region)}-tls"


def legacy_service_tls_secret(mesh: str, service: str) -> str:
    """Before per-region certificates: one per service, naming every region (pruned once no pod mounts it)."""
    return f"{mesh}-tls-{service}"


def nats_tls_secret(mesh: str, region: str) -> str:
    """The generated certificate of one region's NATS servers (its headless Service's pod names)."""
    return f"{mesh}-nats-{region}-tls"


def pod_tls_secret(spec: MeshSpec, service: str | None, region: str) -> str:
    """What a pod of ``region`` mounts: NATS (``None``) its region's server certificate, a
    service its own for that region, unless the CR names one certificate for
    everything (``tls.secretName``)."""
    if spec.tls.secret_name:
        return tls_secret(spec)
    if service is None:
        return nats_tls_secret(spec.name, region)
    return service_tls_secret(spec.name, service, region)


def nats_urls_configmap(mesh: str) -> str:
    """Per region (key), the NATS URLs its services dial, own region first (read at container start)."""
    return f"{mesh}-nats-urls"


def network_policy(mesh: str, component: str) -> str:
    """``<mesh>-nats`` and ``<mesh>-services``: who may reach which port."""
    return f"{mesh}-{component}"


def endpoints_configmap(mesh: str) -> str:
    return f"{mesh}-endpoints"


def fqdn(service: str, namespace: str, cluster_domain: str) -> str:
    return f"{service}.{namespace}.svc.{cluster_domain}"


def nats_pod_fqdn(spec: MeshSpec, region: str, index: int, cluster_domain: str) -> str:
    pod = f"{nats_statefulset(spec.name, region)}-{index}"
    return f"{pod}.{fqdn(nats_headless_service(spec.name, region), spec.namespace, cluster_domain)}"


def labels(mesh: str, component: str, region: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "xchat",
        "app.kubernetes.io/instance": mesh,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_MESH: mesh,
    }
    if region is not None:
        out[LABEL_REGION] = region
    return out


def selector(mesh: str, component: str, region: str | None = None) -> dict[str, str]:
    """The immutable subset of :func:`labels` used in selectors."""
    out = {LABEL_MESH: mesh, LABEL_COMPONENT: component}
    if region is not None:
        out[LABEL_REGION] = region
    return out
