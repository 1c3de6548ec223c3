"""What every pod of a mesh shares, whatever it runs: security context and scheduling.

Pure functions of a :class:`~.spec.MeshSpec`, used by ``builders`` for the NATS
StatefulSets and the service Deployments. Every pod meets the ``restricted``
Pod Security Standard (tests/operator/test_operator_envtest_podsecurity.py
admits them into a namespace enforcing it on a real API server).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import MeshSpec

Obj = dict[str, Any]

# The users the images run as (charts/images/Dockerfile.*); pods pin them so the
# restricted Pod Security profile admits them whatever the image declares.
NATS_UID = 1000
SERVICE_UID = 10001


def pod_security(uid: int) -> Obj:
    """Pod-level securityContext meeting the ``restricted`` Pod Security Standard.

    ``fsGroup``: the NATS volume is writable by the server without world-writable
    directories; ``OnRootMismatch`` skips the recursive chown on every restart.
    """
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": {"type": "RuntimeDefault"}}


CONTAINER_SECURITY: Obj = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
}


def pod_scheduling(spec: MeshSpec) -> Obj:
    """The pod settings an operator may set from ``spec.pods`` (pull secrets, tolerations, priority)."""
    out: Obj = {"automountServiceAccountToken": False}  # no pod talks to the Kubernetes API
    if spec.pods.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in spec.pods.image_pull_secrets]
    if spec.pods.tolerations:
        out["tolerations"] = [dict(t) for t in spec.pods.tolerations]
    if spec.pods.priority_class_name:
        out["priorityClassName"] = spec.pods.priority_class_name
    return out


def anti_affinity(sel: Mapping[str, str], topology_key: str) -> Obj:
    """Pods of one component prefer different nodes (``topology_key``) within their region."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": dict(sel)}, "topologyKey": topology_key}}
            ]
        }
    }
