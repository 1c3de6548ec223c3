"""Plain reconciliation steps, called by the kopf handlers.

* :func:`ensure_secrets` — generate passwords / token keys / TLS once, keep them
  (token keys rotate on request: ``token_rotation``);
* :func:`apply_mesh` — server-side apply every desired object, prune the
  owned objects no longer desired (a removed region's workloads);
* :func:`repair_child` — re-apply one child after someone edited it;
* :func:`cleanup` — delete everything the mesh owns except PVCs (finalizer).

PersistentVolumeClaims are never deleted or touched: a region's data outlives
its StatefulSet so that draining or removing a region can be undone.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from . import builders, certificates, credentials, drift, exposure, names, rollout, token_rotation
from .errors import DependencyMissing
from .kube import OWNED_KINDS, Kube
from .probes import NOT_PROBED, RegionHealth
from .spec import SERVICE_NAMES, MeshSpec, Region
from .replicas import Handover as HandoverResult


TLS_REGIONS_ANNOTATION = "xchat.dev/tls-regions"  # regions the generated certificate covers
TLS_HOSTS_ANNOTATION = "xchat.dev/tls-hosts"  # external names a generated service certificate covers (exposure)


TLS_SECRET_KEYS = ("tls.crt", "tls.key", "ca.crt")


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    applied: int
    pruned: tuple[str, ...]
    created_secrets: tuple[str, ...]
    rollout: rollout.Plan = rollout.Plan(held={}, rolling=())
    # Objects someone else deleted or edited that this pass put back: (drift.RECREATED/CORRECTED, kind/name).
    drifted: tuple[tuple[str, str], ...] = ()
    # Leadership handovers before this pass's NATS rolls (one per region rolled).
    handovers: tuple[HandoverResult, ...] = ()


def _secret(spec: MeshSpec, name: str, component: str, data: Mapping[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": spec.namespace,
            "labels": names.labels(spec.name, component),
            "ownerReferences": [builders.owner_reference(spec)],
        },
        "stringData": dict(data),
    }


def _decode(secret: Mapping[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def _expiring(data: Mapping[str, str]) -> bool:
    """Due for renewal: the certificate ends within RENEW_BEFORE, and the CA lasts longer (else a
    new certificate would end as soon, and be re-issued on every pass: the CA's end is a deliberate rotation)."""
    return credentials.expires_within(data.get("tls.crt", "")) and not credentials.expires_within(data.get("ca.crt", ""))


def _issue_if_needed(kube: Kube, spec: MeshSpec, mesh: Mapping[str, str], name: str, common_name: str,
                     dns: list[str], annotations: Mapping[str, str]) -> bool:
    """Issues ``name`` from the mesh CA unless it exists with these ``annotations`` (what it names),
    the current CA and time left; True if it did."""
    current = kube.get("Secret", spec.namespace, name)
    have = (current or {}).get("metadata", {}).get("annotations") or {}
    data = _decode(current) if current is not None else {}
    if (current is not None and all(have.get(k, "") == v for k, v in annotations.items())
            and data.get("ca.crt") == mesh["ca.crt"] and not _expiring(data)):
        return False
    crt, key = credentials.issue(mesh["ca.crt"], mesh["ca.key"], common_name, dns, ("127.0.0.1",))
    obj = _secret(spec, name, "tls", {"tls.crt": crt, "tls.key": key, "ca.crt": mesh["ca.crt"]})
    obj["type"] = "kubernetes.io/tls"
    obj["metadata"]["annotations"] = dict(annotations)
    kube.apply(obj)
    return True


def _ensure_region_certificates(kube: Kube, spec: MeshSpec, cluster_domain: str) -> list[str]:
    """Per region, from the mesh CA: its NATS servers' certificate and one per service.

    Each names that region's objects only (NATS: the namespace's Services and
    the region's NATS pods; a service: its Service there and the external names
    exposed there), so a region added or removed never re-issues another
    region's certificate: no other region's pods restart. Re-issued when the
    names or the CA change, or before expiry.
    """
    mesh = _decode(kube.get("Secret", spec.namespace, names.generated_tls_secret(spec.name)) or {})
    created = []
    for region in spec.regions:
        name = names.nats_tls_secret(spec.name, region.name)
        dns = credentials.nats_dns_names(spec.name, spec.namespace, cluster_domain, region.name)
        if _issue_if_needed(kube, spec, mesh, name, spec.name, dns, {TLS_REGIONS_ANNOTATION: region.name}):
            created.append(name)
        for service in SERVICE_NAMES:
            name = names.service_tls_secret(spec.name, service, region.name)
            external = exposure.names_for(spec, service, region.name)
            dns = credentials.service_dns_names(spec.name, spec.namespace, cluster_domain, service, [region.name]) + external
            if _issue_if_needed(kube, spec, mesh, name, service, dns,
                                {TLS_REGIONS_ANNOTATION: region.name, TLS_HOSTS_ANNOTATION: ",".join(external)}):
                created.append(name)
    return created


def generated_secret_names(spec: MeshSpec) -> set[str]:
    out = {names.credentials_secret(spec.name), names.signing_key_secret(spec.name), names.public_key_secret(spec.name)}
    if spec.tls.enabled and not spec.tls.secret_name:
        out.add(names.generated_tls_secret(spec.name))
        for region in spec.regions:
            out.add(names.nats_tls_secret(spec.name, region.name))
            out |= {names.service_tls_secret(spec.name, s, region.name) for s in SERVICE_NAMES}
    return out


def ensure_secrets(kube: Kube, spec: MeshSpec, *, cluster_domain: str) -> tuple[dict[str, str], list[str]]:
    """Create missing generated Secrets; return (NATS passwords, names of Secrets created)."""
    created: list[str] = []
    cred_name = names.credentials_secret(spec.name)
    existing = kube.get("Secret", spec.namespace, cred_name)
    passwords = _decode(existing) if existing else {}
    fresh = credentials.nats_passwords()
    missing = {u: p for u, p in fresh.items() if u not in passwords}
    if missing:
        passwords.update(missing)
        kube.apply(_secret(spec, cred_name, "nats-credentials", passwords))
        created.append(cred_name)

    # The access-token keys, and the next step of a rotation when one is due.
    created += token_rotation.ensure(kube, spec)

    if spec.tls.enabled and not spec.tls.secret_name:
        tls_name = names.generated_tls_secret(spec.name)
        regions = ",".join(sorted(r.name for r in spec.regions))
        current = kube.get("Secret", spec.namespace, tls_name)
        covered = ((current or {}).get("metadata", {}).get("annotations") or {}).get(TLS_REGIONS_ANNOTATION)
        old = _decode(current) if current else {}
        if current is None or covered != regions or _expiring(old):
            # Same CA when re-issuing for a changed region set or renewing: clients keep trusting it.
            ca = (old["ca.crt"], old["ca.key"]) if "ca.crt" in old and "ca.key" in old else None
            bundle = credentials.tls_bundle(
                spec.name,
                credentials.mesh_dns_names(spec.name, spec.namespace, cluster_domain, [r.name for r in spec.regions]),
                ips=("127.0.0.1",),
                ca=ca,
            )
            obj = _secret(spec, tls_name, "tls", bundle)
            obj["type"] = "kubernetes.io/tls"
            obj["metadata"]["annotations"] = {TLS_REGIONS_ANNOTATION: regions}
            kube.apply(obj)
            created.append(tls_name)
        created += _ensure_region_certificates(kube, spec, cluster_domain)
    return {u: passwords[u] for u in (*SERVICE_NAMES, names.BOOTSTRAP_USER, names.JSADMIN_USER, names.JSMETA_USER, names.ROUTE_USER)}, created


def _owned_by(obj: Mapping[str, Any], spec: MeshSpec) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or ()
    return any(r.get("uid") == spec.uid for r in refs)


def owned_objects(kube: Kube, spec: MeshSpec) -> dict[tuple[str, str], Any]:
    """Every object of the owned kinds labelled as this mesh's, by (kind, name)."""
    return {
        (kind, str(obj["metadata"]["name"])): obj
        for kind in OWNED_KINDS
        for obj in kube.list(kind, spec.namespace, labels={names.LABEL_MESH: spec.name})
    }


def prune(kube: Kube, spec: MeshSpec, desired: list[dict[str, Any]],
          existing: Mapping[tuple[str, str], Any] | None = None) -> list[str]:
    """Delete owned objects of this mesh that are no longer desired (``existing``: listed already)."""
    keep = {builders.key(o) for o in desired}
    keep |= {("Secret", n) for n in generated_secret_names(spec)}
    existing = existing if existing is not None else owned_objects(kube, spec)
    # A Secret some workload still mounts stays until that workload stops mounting it (e.g. a
    # service certificate of the old naming, while a held roll still runs pods that mount it).
    keep |= {("Secret", n) for (kind, _), obj in existing.items() if kind in ("Deployment", "StatefulSet")
             for n in _mounted_secrets(obj)}
    pruned: list[str] = []
    for (kind, name), obj in existing.items():
        if (kind, name) not in keep and _owned_by(obj, spec):
            kube.delete(kind, spec.namespace, name)
            pruned.append(f"{kind}/{name}")
    return pruned


def _mounted_secrets(workload: Mapping[str, Any]) -> set[str]:
    volumes = (((workload.get("spec") or {}).get("template") or {}).get("spec") or {}).get("volumes") or ()
    return {str(v["secret"]["secretName"]) for v in volumes if "secret" in v}


def check_tls_secret(kube: Kube, spec: MeshSpec) -> None:
    """A user-provided TLS Secret must exist with its three keys before pods can mount it."""
    if not (spec.tls.enabled and spec.tls.secret_name):
        return
    secret = kube.get("Secret", spec.namespace, spec.tls.secret_name)
    if secret is None:
        raise DependencyMissing(
            f"TLS Secret {spec.namespace}/{spec.tls.secret_name} does not exist: create it with "
            f"{', '.join(TLS_SECRET_KEYS)} (e.g. with cert-manager), or unset tls.secretName to let the operator generate one"
        )
    missing = [k for k in TLS_SECRET_KEYS if k not in (secret.get("data") or {})]
    if missing:
        raise DependencyMissing(f"TLS Secret {spec.namespace}/{spec.tls.secret_name} lacks {', '.join(missing)}")


def listed_regions(kube: Kube, spec: MeshSpec, health: Mapping[str, RegionHealth]) -> list[str]:
    """Serving regions clients may be sent to: once probed ready, they stay listed while serving.

    A region added to a running mesh is published only after its first healthy
    probe, so no client is sent to a region whose pods are still starting. A new
    mesh lists every serving region at once (nothing serves yet; clients wait for
    the Ready condition), and so does an operator whose probes are disabled.
    """
    current = kube.get("ConfigMap", spec.namespace, names.endpoints_configmap(spec.name))
    if current is None:
        return [r.name for r in spec.regions if r.serving]
    before = set(filter(None, (current.get("data") or {}).get("regions", "").split(",")))
    out = []
    for region in spec.regions:
        probed = health.get(region.name)
        known_good = probed is not None and (probed.ready or probed.nats.reason == NOT_PROBED)
        if region.serving and (region.name in before or known_good):
            out.append(region.name)
    return out


def publish_endpoints(kube: Kube, spec: MeshSpec, health: Mapping[str, RegionHealth], *, cluster_domain: str) -> bool:
    """Re-writes the endpoints ConfigMap when the listed regions changed; True if it did."""
    listed = listed_regions(kube, spec, health)
    current = kube.get("ConfigMap", spec.namespace, names.endpoints_configmap(spec.name))
    if current is not None and ((current.get("data") or {}).get("regions", "")) == ",".join(listed):
        return False
    kube.apply(builders.endpoints_configmap(spec, cluster_domain, listed=listed))
    return True


Handover = Callable[[MeshSpec, Region], HandoverResult]


def apply_mesh(
    kube: Kube, spec: MeshSpec, *, cluster_domain: str, health: Mapping[str, RegionHealth] | None = None,
    ledger: drift.Ledger | None = None, handover: Handover | None = None,
) -> ApplyResult:
    """Apply every desired object, except the rolls that ``rollout`` holds back for now.

    ``ledger`` (what this process applied last time) lets the pass tell which
    objects it put back after someone else deleted or edited them.
    ``handover(spec, region)``, when given, is called before a region's NATS
    StatefulSet is rolled (its stream and meta leaders go to other regions
    first, ``replicas.hand_over_region``); a handover that could not finish
    within its bound is reported in ``ApplyResult.handovers`` and the roll goes on.
    """
    health = health or {}
    ledger = ledger if ledger is not None else drift.Ledger()
    check_tls_secret(kube, spec)
    passwords, created = ensure_secrets(kube, spec, cluster_domain=cluster_domain)
    desired = builders.desired_objects(
        spec, passwords, cluster_domain=cluster_domain, listed=listed_regions(kube, spec, health)
    )
    certificates.stamp(desired, lambda name: kube.get("Secret", spec.namespace, name))
    existing = owned_objects(kube, spec)
    current = {  # list items carry no kind: rollout.settled reads it
        str(o["metadata"]["name"]): {**cur, "kind": o["kind"]} if (cur := existing.get(builders.key(o))) else None
        for o in desired
        if o["kind"] in ("StatefulSet", "Deployment")
    }
    plan = rollout.plan(spec, desired, current, health)
    handovers: list[HandoverResult] = []
    if handover is not None:
        for name in plan.rolling:
            region = spec.region(name)
            if region.nats_running and not region.down:
                handovers.append(handover(spec, region))
    applied = 0
    drifted: list[tuple[str, str]] = []
    for obj in desired:
        if obj["kind"] in ("StatefulSet", "Deployment") and obj["metadata"]["name"] in plan.held:
            continue
        after = kube.apply(obj)
        applied += 1
        key = builders.key(obj)
        if key[0] in OWNED_KINDS and (change := ledger.classify(key, obj, existing.get(key), after)):
            drifted.append((change, drift.describe(key)))
    pruned = prune(kube, spec, desired, existing)
    return ApplyResult(applied=applied, pruned=tuple(pruned), created_secrets=tuple(created), rollout=plan,
                       drifted=tuple(drifted), handovers=tuple(handovers))


def repair_child(kube: Kube, spec: MeshSpec, kind: str, name: str, *, cluster_domain: str,
                 ledger: drift.Ledger | None = None) -> str | None:
    """Re-apply the desired version of one child: drift.RECREATED, drift.CORRECTED, or None.

    None when the object is not (or no longer) desired, or was already as
    desired (the timer may have put it back first: it reports that itself).
    """
    if kind == "Secret" and name in generated_secret_names(spec):
        _, created = ensure_secrets(kube, spec, cluster_domain=cluster_domain)
        return drift.RECREATED if name in created else None
    passwords, _ = ensure_secrets(kube, spec, cluster_domain=cluster_domain)
    listed = listed_regions(kube, spec, {})  # no fresh probes here: keep what was published
    desired = builders.find(
        builders.desired_objects(spec, passwords, cluster_domain=cluster_domain, listed=listed), kind, name
    )
    if desired is None:
        return None
    certificates.stamp([desired], lambda secret: kube.get("Secret", spec.namespace, secret))
    before = kube.get(kind, spec.namespace, name)
    after = kube.apply(desired)
    ledger = ledger if ledger is not None else drift.Ledger()
    return ledger.classify((kind, name), desired, before, after)


def cleanup(kube: Kube, spec: MeshSpec) -> list[str]:
    """Delete every object the mesh owns (PVCs excepted: data is never deleted by the operator)."""
    deleted: list[str] = []
    for kind in OWNED_KINDS:
        for obj in kube.list(kind, spec.namespace, labels={names.LABEL_MESH: spec.name}):
            if _owned_by(obj, spec) and kube.delete(kind, spec.namespace, obj["metadata"]["name"]):
                deleted.append(f"{kind}/{obj['metadata']['name']}")
    return deleted
