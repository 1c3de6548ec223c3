"""Plain reconciliation steps, called by the kopf handlers.

* :func:`ensure_secrets` — generate passwords / token keys / TLS once, keep them;
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
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from . import builders, credentials, names
from .kube import OWNED_KINDS, Kube
from .spec import SERVICE_NAMES, MeshSpec


TLS_REGIONS_ANNOTATION = "xchat.dev/tls-regions"  # regions the generated certificate covers


@dataclasses.dataclass(frozen=True)
class ApplyResult:
    applied: int
    pruned: tuple[str, ...]
    created_secrets: tuple[str, ...]


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


def generated_secret_names(spec: MeshSpec) -> set[str]:
    out = {names.credentials_secret(spec.name), names.signing_key_secret(spec.name), names.public_key_secret(spec.name)}
    if spec.tls.enabled and not spec.tls.secret_name:
        out.add(names.generated_tls_secret(spec.name))
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

    signing = kube.get("Secret", spec.namespace, names.signing_key_secret(spec.name))
    seed_b64 = _decode(signing).get("signing.key") if signing else None
    if not seed_b64:
        seed_b64, _ = credentials.token_key_pair()
        kube.apply(_secret(spec, names.signing_key_secret(spec.name), "token-signing-key", {"signing.key": seed_b64}))
        created.append(names.signing_key_secret(spec.name))
    # The public half is always derived from the private one, so the two never disagree.
    key = ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed_b64))
    pub = base64.b64encode(key.public_key().public_bytes(serialization.Encoding.Raw,
                                                         serialization.PublicFormat.Raw)).decode()
    public = kube.get("Secret", spec.namespace, names.public_key_secret(spec.name))
    if not public or _decode(public).get("public.key") != pub:
        kube.apply(_secret(spec, names.public_key_secret(spec.name), "token-public-key", {"public.key": pub}))
        created.append(names.public_key_secret(spec.name))

    if spec.tls.enabled and not spec.tls.secret_name:
        tls_name = names.generated_tls_secret(spec.name)
        regions = ",".join(sorted(r.name for r in spec.regions))
        current = kube.get("Secret", spec.namespace, tls_name)
        covered = ((current or {}).get("metadata", {}).get("annotations") or {}).get(TLS_REGIONS_ANNOTATION)
        if current is None or covered != regions:
            # Same CA when re-issuing for a changed region set: clients keep trusting it.
            old = _decode(current) if current else {}
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
    return {u: passwords[u] for u in (*SERVICE_NAMES, names.ROUTE_USER)}, created


def _owned_by(obj: Mapping[str, Any], spec: MeshSpec) -> bool:
    refs = obj.get("metadata", {}).get("ownerReferences") or ()
    return any(r.get("uid") == spec.uid for r in refs)


def prune(kube: Kube, spec: MeshSpec, desired: list[dict[str, Any]]) -> list[str]:
    """Delete owned objects of this mesh that are no longer desired."""
    keep = {builders.key(o) for o in desired}
    keep |= {("Secret", n) for n in generated_secret_names(spec)}
    pruned: list[str] = []
    for kind in OWNED_KINDS:
        for obj in kube.list(kind, spec.namespace, labels={names.LABEL_MESH: spec.name}):
            k = (kind, obj["metadata"]["name"])
            if k not in keep and _owned_by(obj, spec):
                kube.delete(kind, spec.namespace, k[1])
                pruned.append(f"{kind}/{k[1]}")
    return pruned


def apply_mesh(kube: Kube, spec: MeshSpec, *, cluster_domain: str) -> ApplyResult:
    passwords, created = ensure_secrets(kube, spec, cluster_domain=cluster_domain)
    desired = builders.desired_objects(spec, passwords, cluster_domain=cluster_domain)
    for obj in desired:
        kube.apply(obj)
    pruned = prune(kube, spec, desired)
    return ApplyResult(applied=len(desired), pruned=tuple(pruned), created_secrets=tuple(created))


def repair_child(kube: Kube, spec: MeshSpec, kind: str, name: str, *, cluster_domain: str) -> bool:
    """Re-apply the desired version of one child; ``False`` if it is not (or no longer) desired."""
    if kind == "Secret" and name in generated_secret_names(spec):
        ensure_secrets(kube, spec, cluster_domain=cluster_domain)
        return True
    passwords, _ = ensure_secrets(kube, spec, cluster_domain=cluster_domain)
    desired = builders.find(builders.desired_objects(spec, passwords, cluster_domain=cluster_domain), kind, name)
    if desired is None:
        return False
    kube.apply(desired)
    return True


def cleanup(kube: Kube, spec: MeshSpec) -> list[str]:
    """Delete every object the mesh owns (PVCs excepted: data is never deleted by the operator)."""
    deleted: list[str] = []
    for kind in OWNED_KINDS:
        for obj in kube.list(kind, spec.namespace, labels={names.LABEL_MESH: spec.name}):
            if _owned_by(obj, spec) and kube.delete(kind, spec.namespace, obj["metadata"]["name"]):
                deleted.append(f"{kind}/{obj['metadata']['name']}")
    return deleted
