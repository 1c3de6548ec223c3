"""Desired Kubernetes objects of one mesh, as plain dicts.

Pure functions of a :class:`~.spec.MeshSpec` (plus the NATS passwords, which the
generated NATS config embeds): no API calls, no kopf, so they are unit-tested
directly.  ``reconcile`` server-side-applies what :func:`desired_objects`
returns and prunes the owned objects it no longer returns.

Generated Secrets (passwords, token keys, TLS) are not built here: their data
is made once and kept, see ``credentials`` and ``reconcile.ensure_secrets``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from xchat.core.permissions import MAILBOX_OWNER, OWNED_BUCKETS

from . import exposure, monitoring, names, natsconfig, policies, reloader, rollout, token_rotation, transparency
from .podspec import CONTAINER_SECURITY, NATS_UID, SERVICE_UID, anti_affinity, pod_scheduling, pod_security
from .spec import GROUP, KIND, SERVICE_NAMES, VERSION, MeshSpec, Region

Obj = dict[str, Any]

NATS_CONFIG_DIR = "/etc/nats-config"
NATS_PID_DIR = "/var/run/nats"
SERVICE_SECRET_DIR = "/etc/xchat"
SERVICE_TLS_DIR = "/etc/xchat/tls"
BOOTSTRAP_SECRET_DIR = "/etc/xchat-bootstrap/nats"
NATS_TERMINATION_GRACE_SECONDS = 60  # > lame_duck_duration, so clients move before SIGKILL
CONFIG_HASH_ANNOTATION = "xchat.dev/config-hash"


def owner_reference(spec: MeshSpec) -> Obj:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": spec.name,
        "uid": spec.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _meta(spec: MeshSpec, name: str, component: str, region: str | None = None) -> Obj:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": names.labels(spec.name, component, region),
        "ownerReferences": [owner_reference(spec)],
    }


def _tls_volume(spec: MeshSpec, region: Region, service: str | None = None) -> Obj:
    # Only these three keys: a generated Secret also holds ca.key, which no pod may see.
    # Each service mounts its own certificate (it presents it to NATS, which verifies
    # clients): no service pod holds the NATS servers' key or another service's.
    # Per region: a region added or removed issues or deletes its own certificates only,
    # so no other region's pod template (certificate digest) changes.
    items = [{"key": k, "path": k} for k in ("tls.crt", "tls.key", "ca.crt")]
    return {"name": "tls", "secret": {"secretName": names.pod_tls_secret(spec, service, region.name), "items": items}}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def nats_urls(spec: MeshSpec, home: Region, cluster_domain: str) -> list[str]:
    """Client URLs for a service in ``home``: its own region first, then the others.

    Regions whose NATS is scaled to zero (Drained) are left out; regions marked
    down stay in (the client skips an unreachable server, while editing the list
    would restart every pod in the surviving regions mid-incident).
    """
    scheme = "tls" if spec.tls.enabled else "nats"
    ordered = [home] + [r for r in spec.regions if r.name != home.name]
    return [
        f"{scheme}://{names.fqdn(names.nats_client_service(spec.name, r.name), spec.namespace, cluster_domain)}"
        f":{names.NATS_CLIENT_PORT}"
        for r in ordered
        if r.nats_running
    ]


def nats_urls_configmap(spec: MeshSpec, cluster_domain: str) -> Obj:
    """Per region (the key), the NATS URLs its services dial: :func:`nats_urls`.

    The services read it as ``XCHAT_NATS_URLS`` through ``configMapKeyRef``, so the
    list is resolved when a container starts and is no part of the pod template:
    a region added, drained or removed changes this ConfigMap, not every other
    region's Deployments (which would restart every service pod of the mesh).
    Running processes learn a new region's servers from the cluster itself (NATS
    INFO gossip); restarted ones get the new list.
    """
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, names.nats_urls_configmap(spec.name), "nats-urls"),
        "data": {r.name: ",".join(nats_urls(spec, r, cluster_domain)) for r in spec.regions},
    }


def client_endpoints(spec: MeshSpec, cluster_domain: str) -> list[str]:
    """``region=host:port`` of every region clients may use (serving regions only)."""
    return [
        f"{r.name}={names.fqdn(names.service_workload(spec.name, 'relay', r.name), spec.namespace, cluster_domain)}"
        f":{names.GRPC_PORT}"
        for r in spec.regions
        if r.serving
    ]


def endpoints_configmap(spec: MeshSpec, cluster_domain: str, listed: Sequence[str] | None = None) -> Obj:
    """``listed``: the regions to publish (default: every serving region); see ``reconcile.listed_regions``."""
    endpoints = [e for e in client_endpoints(spec, cluster_domain) if listed is None or e.split("=", 1)[0] in listed]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, names.endpoints_configmap(spec.name), "endpoints"),
        "data": {
            "endpoints": ",".join(endpoints),
            "regions": ",".join(e.split("=", 1)[0] for e in endpoints),
            "endpoints.json": json.dumps(
                [{"region": e.split("=", 1)[0], "address": e.split("=", 1)[1]} for e in endpoints]
            ),
        },
    }


def nats_config_secret(spec: MeshSpec, region: Region, passwords: Mapping[str, str], cluster_domain: str) -> Obj:
    conf = natsconfig.nats_config(spec, region, passwords, cluster_domain=cluster_domain)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(spec, names.nats_config_secret(spec.name, region.name), "nats-config", region.name),
        "stringData": {"nats.conf": conf},
    }


def nats_services(spec: MeshSpec, region: Region) -> list[Obj]:
    sel = names.selector(spec.name, "nats", region.name)
    ports = [
        {"name": "client", "port": names.NATS_CLIENT_PORT, "targetPort": "client"},
        {"name": "cluster", "port": names.NATS_CLUSTER_PORT, "targetPort": "cluster"},
        {"name": "monitor", "port": names.NATS_MONITOR_PORT, "targetPort": "monitor"},
    ]
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, names.nats_headless_service(spec.name, region.name), "nats", region.name),
        "spec": {
            "clusterIP": "None",
            # Routes must resolve peers before they are ready, or a cold cluster never forms.
            "publishNotReadyAddresses": True,
            "selector": sel,
            "ports": ports,
        },
    }
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, names.nats_client_service(spec.name, region.name), "nats", region.name),
        # Clients only: /connz on the monitoring port shows which devices are online.
        # The operator probes each pod's monitoring port directly (its IP from
        # this Service's EndpointSlices), so nothing needs it here.
        "spec": {"type": "ClusterIP", "selector": sel, "ports": [p for p in ports if p["name"] == "client"]},
    }
    return [headless, client]


def nats_statefulset(spec: MeshSpec, region: Region, config_text: str) -> Obj:
    sel = names.selector(spec.name, "nats", region.name)
    mounts = [
        {"name": "config", "mountPath": NATS_CONFIG_DIR, "readOnly": True},
        {"name": "data", "mountPath": "/data"},
        {"name": "pid", "mountPath": NATS_PID_DIR},
    ]
    volumes: list[Obj] = [
        {"name": "config", "secret": {"secretName": names.nats_config_secret(spec.name, region.name)}},
        {"name": "pid", "emptyDir": {}},
    ]
    if spec.tls.enabled:
        mounts.append({"name": "tls", "mountPath": natsconfig.TLS_DIR, "readOnly": True})
        volumes.append(_tls_volume(spec, region))
    health = {"path": "/healthz?js-enabled-only=true", "port": "monitor"}
    pvc_spec: Obj = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": region.storage.size}},
    }
    if region.storage.storage_class:
        pvc_spec["storageClassName"] = region.storage.storage_class
    container: Obj = {
        "name": "nats",
        "image": spec.nats_image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["--config", f"{NATS_CONFIG_DIR}/nats.conf", "--pid", f"{NATS_PID_DIR}/nats.pid"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [
            {"name": "client", "containerPort": names.NATS_CLIENT_PORT},
            {"name": "cluster", "containerPort": names.NATS_CLUSTER_PORT},
            {"name": "monitor", "containerPort": names.NATS_MONITOR_PORT},
        ],
        "volumeMounts": mounts,
        # Full /healthz: a (re)started server counts as started only once its streams
        # and the meta group are current again, so a roll waits for catch-up before
        # the next region restarts (rollout.settled reads readyReplicas).
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "monitor"},
                         "periodSeconds": 5, "failureThreshold": 120},
        "readinessProbe": {"httpGet": health, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/healthz?js-server-only=true", "port": "monitor"},
                          "periodSeconds": 30, "failureThreshold": 3},
        # Lame duck mode: clients move to other servers before this one stops.
        "lifecycle": {"preStop": {"exec": {"command": ["nats-server", "--signal", f"ldm={NATS_PID_DIR}/nats.pid"]}}},
        "securityContext": dict(CONTAINER_SECURITY),
    }
    resources = spec.nats_resources.to_k8s()
    if resources:
        container["resources"] = resources
    return rollout.stamped({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(spec, names.nats_statefulset(spec.name, region.name), "nats", region.name),
        "spec": {
            "serviceName": names.nats_headless_service(spec.name, region.name),
            # Drained: zero pods, the PVCs (and the data) stay.
            "replicas": region.nats_nodes if region.nats_running else 0,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": sel},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {
                    "labels": names.labels(spec.name, "nats", region.name),
                    # The restart-relevant config only: reloadable changes (users, passwords,
                    # routes) reach the running server through the config reloader, no roll.
                    "annotations": {CONFIG_HASH_ANNOTATION: _hash(natsconfig.restart_fingerprint(spec, region))},
                },
                "spec": {
                    **pod_scheduling(spec),
                    "securityContext": pod_security(NATS_UID),
                    "terminationGracePeriodSeconds": NATS_TERMINATION_GRACE_SECONDS,
                    "nodeSelector": dict(region.node_selector),
                    "affinity": anti_affinity(sel, region.topology_key),
                    # The config reloader signals nats-server (SIGHUP) in the shared PID namespace.
                    "shareProcessNamespace": True,
                    "containers": [c for c in (container, _config_reloader(spec, mounts),
                                               monitoring.nats_exporter(spec, CONTAINER_SECURITY)) if c],
                    "volumes": volumes,
                },
            },
            "volumeClaimTemplates": [
                {"metadata": {"name": "data", "labels": names.selector(spec.name, "nats", region.name)}, "spec": pvc_spec}
            ],
        },
    })


def _config_reloader(spec: MeshSpec, mounts: list[Any]) -> Obj:
    return reloader.container(
        image=spec.nats_image, pull_policy=spec.image_pull_policy, mounts=mounts, config_dir=NATS_CONFIG_DIR,
        tls_dir=natsconfig.TLS_DIR, pid_file=f"{NATS_PID_DIR}/nats.pid", security=CONTAINER_SECURITY,
    )


def pdb(spec: MeshSpec, name: str, component: str, region: str | None) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec, name, component, region),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": names.selector(spec.name, component, region)}},
    }


def nats_pdb(spec: MeshSpec) -> Obj:
    """One budget over every NATS pod of the mesh, in all regions: at most one evicted at a time.

    Per-region budgets let ``kubectl drain`` take one NATS pod in *each* region at
    once — two replicas of every R3 stream. (One budget, not one per region plus
    this: the eviction API refuses pods matched by more than one budget.)
    """
    return pdb(spec, names.nats_cluster_pdb(spec.name), "nats", None)


def service_env(spec: MeshSpec, service: str, region: Region, cluster_domain: str) -> list[Obj]:
    env: list[Obj] = [
        {"name": "XCHAT_REGION", "value": region.name},
        {"name": "XCHAT_LISTEN", "value": f"0.0.0.0:{names.GRPC_PORT}"},
        {"name": "XCHAT_HEALTH_LISTEN", "value": f"0.0.0.0:{names.HEALTH_PORT}"},
        {"name": "XCHAT_NATS_URLS", "valueFrom": {"configMapKeyRef": {
            "name": names.nats_urls_configmap(spec.name), "key": region.name}}},
        {"name": "XCHAT_NATS_USER", "value": service},
        {"name": "XCHAT_NATS_PASSWORD_FILE", "value": f"{SERVICE_SECRET_DIR}/nats/password"},
        {"name": "XCHAT_REPLICAS", "value": str(spec.jetstream_replicas)},
        *monitoring.service_env(spec),
    ]
    env += token_rotation.service_env(spec, service, f"{SERVICE_SECRET_DIR}/token")
    env += transparency.service_env(spec, service)
    if spec.tls.enabled:
        env += [
            {"name": "XCHAT_TLS_CERT_FILE", "value": f"{SERVICE_TLS_DIR}/tls.crt"},
            {"name": "XCHAT_TLS_KEY_FILE", "value": f"{SERVICE_TLS_DIR}/tls.key"},
            {"name": "XCHAT_TLS_CA_FILE", "value": f"{SERVICE_TLS_DIR}/ca.crt"},
        ]
    return env


def service_deployment(spec: MeshSpec, service: str, region: Region, cluster_domain: str) -> Obj:
    sel = names.selector(spec.name, service, region.name)
    # Least privilege inside the mesh too: each pod mounts only its own NATS
    # password, and only auth sees the token signing key.
    token_volume = token_rotation.service_volume(spec, service)
    volumes: list[Obj] = [
        {"name": "nats", "secret": {"secretName": names.credentials_secret(spec.name),
                                    "items": [{"key": service, "path": "password"}]}},
        token_volume,
    ]
    mounts: list[Obj] = [
        {"name": "nats", "mountPath": f"{SERVICE_SECRET_DIR}/nats", "readOnly": True},
        {"name": "token", "mountPath": f"{SERVICE_SECRET_DIR}/token", "readOnly": True},
    ]
    if spec.tls.enabled:
        volumes.append(_tls_volume(spec, region, service))
        mounts.append({"name": "tls", "mountPath": SERVICE_TLS_DIR, "readOnly": True})
    init = bootstrap_container(spec, service, region, cluster_domain, mounts)
    if init is not None:
        # Only the init container mounts the bootstrap password.
        volumes.append({"name": "bootstrap", "secret": {"secretName": names.credentials_secret(spec.name),
                                                        "items": [{"key": names.BOOTSTRAP_USER, "path": "password"}]}})
    container: Obj = {
        "name": service,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["xchat", "serve", service],
        "env": service_env(spec, service, region, cluster_domain),
        "ports": [
            {"name": "grpc", "containerPort": names.GRPC_PORT},
            {"name": "health", "containerPort": names.HEALTH_PORT},
            monitoring.service_port(),
        ],
        # The probes use the plaintext health-only port, so they work with TLS on.
        "readinessProbe": {"grpc": {"port": names.HEALTH_PORT}, "periodSeconds": 5},
        "livenessProbe": {"grpc": {"port": names.HEALTH_PORT}, "periodSeconds": 20, "failureThreshold": 3},
        "volumeMounts": mounts,
        "securityContext": dict(CONTAINER_SECURITY),
    }
    resources = spec.services[service].resources.to_k8s()
    if resources:
        container["resources"] = resources
    return rollout.stamped({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, names.service_workload(spec.name, service, region.name), service, region.name),
        "spec": {
            # Draining/Drained or down: no clients are sent here, so no pods either.
            "replicas": spec.services[service].replicas if region.serving else 0,
            "selector": {"matchLabels": sel},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": names.labels(spec.name, service, region.name)},
                "spec": {
                    **pod_scheduling(spec),
                    "securityContext": pod_security(SERVICE_UID),
                    "nodeSelector": dict(region.node_selector),
                    "affinity": anti_affinity(sel, region.topology_key),
                    **({"initContainers": [init]} if init is not None else {}),
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    })


def bootstrap_container(
    spec: MeshSpec, service: str, region: Region, cluster_domain: str, mounts: Sequence[Obj]
) -> Obj | None:
    """Creates (or updates to the spec) the stream and buckets ``service`` owns, as the
    ``bootstrap`` NATS user, before the service starts: running services hold no
    STREAM.CREATE/UPDATE. None for a service that owns none (mailbox)."""
    if not (OWNED_BUCKETS[service] or service == MAILBOX_OWNER):
        return None
    env = [e for e in service_env(spec, service, region, cluster_domain)
           if e["name"] not in ("XCHAT_NATS_USER", "XCHAT_NATS_PASSWORD_FILE")]
    env += [{"name": "XCHAT_NATS_USER", "value": names.BOOTSTRAP_USER},
            {"name": "XCHAT_NATS_PASSWORD_FILE", "value": f"{BOOTSTRAP_SECRET_DIR}/password"}]
    return {
        "name": "bootstrap",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["python", "-m", "xchat.mesh.bootstrap", service],
        "env": env,
        "volumeMounts": [*(m for m in mounts if m["name"] != "nats"),
                         {"name": "bootstrap", "mountPath": BOOTSTRAP_SECRET_DIR, "readOnly": True}],
        "securityContext": dict(CONTAINER_SECURITY),
    }


def service_service(spec: MeshSpec, service: str, region: Region) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, names.service_workload(spec.name, service, region.name), service, region.name),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector(spec.name, service, region.name),
            "ports": [{"name": "grpc", "port": names.GRPC_PORT, "targetPort": "grpc", "appProtocol": "grpc"}],
        },
    }


def region_objects(spec: MeshSpec, region: Region, passwords: Mapping[str, str], cluster_domain: str) -> list[Obj]:
    config = nats_config_secret(spec, region, passwords, cluster_domain)
    out = [config, *nats_services(spec, region),
           nats_statefulset(spec, region, config["stringData"]["nats.conf"])]
    for service in SERVICE_NAMES:
        out += [
            service_deployment(spec, service, region, cluster_domain),
            service_service(spec, service, region),
            pdb(spec, names.service_workload(spec.name, service, region.name), service, region.name),
        ]
    return out


def desired_objects(
    spec: MeshSpec, passwords: Mapping[str, str], *, cluster_domain: str = "cluster.local",
    listed: Sequence[str] | None = None,
) -> list[Obj]:
    """Every object the mesh should own, except the generated Secrets."""
    out = [endpoints_configmap(spec, cluster_domain, listed), nats_urls_configmap(spec, cluster_domain),
           nats_pdb(spec), *policies.network_policies(spec, lambda name, component: _meta(spec, name, component))]
    for region in spec.regions:
        out += region_objects(spec, region, passwords, cluster_domain)
    return out + exposure.external_services(spec, owner_reference(spec))


def key(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Identity of an object within one namespace: (kind, name)."""
    return str(obj["kind"]), str(obj["metadata"]["name"])


def find(objs: Sequence[Obj], kind: str, name: str) -> Obj | None:
    for o in objs:
        if key(o) == (kind, name):
            return o
    return None
