"""Pods follow their certificate: a renewed TLS Secret rolls the pods that mount it.

Neither nats-server (without a reload signal) nor the services' gRPC server
re-read a certificate file once started, so a Secret renewed in place (by the
operator before expiry, ``reconcile.ensure_secrets``, or by cert-manager for
``tls.secretName``) would go unused until the pods restart for another reason,
possibly after the old certificate expired. Each Deployment's and
StatefulSet's pod template carries a digest of the certificate it mounts
(``TLS_HASH_ANNOTATION``): a new certificate changes the template, and the
region's NATS StatefulSet, then its Deployments, roll one region at a time
under ``rollout``'s gate.

Generated certificates are per region (``names.nats_tls_secret``,
``names.service_tls_secret``): adding or removing a region issues or deletes
that region's certificates only, so no other region's digest (and pod) changes.

The digest covers ``tls.crt`` and ``ca.crt`` only, never the key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

TLS_HASH_ANNOTATION = "xchat.dev/tls-hash"
TLS_VOLUME = "tls"
ROLLED_KINDS = ("Deployment", "StatefulSet")


def mounted_secret(workload: Mapping[str, Any]) -> str | None:
    """The TLS Secret a workload's pods mount (None without TLS)."""
    for volume in workload["spec"]["template"]["spec"].get("volumes") or ():
        if volume.get("name") == TLS_VOLUME and "secret" in volume:
            return str(volume["secret"]["secretName"])
    return None


def digest(secret: Mapping[str, Any] | None) -> str:
    """A short digest of a Secret's certificate and CA (base64 ``data`` as the API returns it)."""
    data = (secret or {}).get("data") or {}
    text = f"{data.get('tls.crt', '')}|{data.get('ca.crt', '')}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(desired: Sequence[dict[str, Any]], read_secret: Callable[[str], Mapping[str, Any] | None]) -> None:
    """Records in each workload's pod template the digest of the certificate it mounts (in place)."""
    seen: dict[str, str] = {}
    for obj in desired:
        if obj["kind"] not in ROLLED_KINDS:
            continue
        name = mounted_secret(obj)
        if name is None:
            continue
        if name not in seen:
            seen[name] = digest(read_secret(name))
        metadata = obj["spec"]["template"].setdefault("metadata", {})
        metadata.setdefault("annotations", {})[TLS_HASH_ANNOTATION] = seen[name]
        # The template changed: its recorded hash must follow, or the rollout plan sees
        # a region that never finishes restarting and holds every other region for ever.
        from . import rollout

        rollout.stamped(obj)
