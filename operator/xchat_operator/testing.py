"""Helpers for tests that drive the operator against an API server (operator and chart tests).

Plain functions, no pytest: ``eventually`` polls, the rest read objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from .kube import Kube

NS = "xchat"
T = TypeVar("T")


def eventually(fn: Callable[[], T], timeout: float = 30.0, interval: float = 0.25, what: str = "") -> T:
    """Call ``fn`` until it returns a truthy value without raising AssertionError."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            out = fn()
            if out:
                return out
        except (AssertionError, KeyError, TypeError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: {last!r}")


def mesh_manifest(name: str, regions: list[dict[str, Any]] | None = None, namespace: str = NS,
                  **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "xchat.dev/v1alpha1",
        "kind": "XChatMesh",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"regions": regions or [{"name": "a"}, {"name": "b"}, {"name": "c"}], **spec},
    }


def events_for(kube: Kube, namespace: str, name: str, reason: str | None = None) -> list[dict[str, Any]]:
    evs = [e for e in kube.list("Event", namespace)
           if e.get("involvedObject", {}).get("name") == name and e.get("involvedObject", {}).get("kind") == "XChatMesh"]
    return [e for e in evs if reason is None or e.get("reason") == reason]


def region_conditions(mesh: dict[str, Any], region: str) -> dict[str, tuple[str, str]]:
    for r in (mesh.get("status") or {}).get("regions") or ():
        if r["name"] == region:
            return {c["type"]: (c["status"], c["reason"]) for c in r["conditions"]}
    raise KeyError(region)


def settle_workloads(kube: Kube, namespace: str, mesh: str) -> int:
    """Plays the StatefulSet and Deployment controllers (envtest runs none): every workload of
    ``mesh`` reports its latest generation rolled out with all pods ready. Returns how many it wrote."""
    written = 0
    for kind in ("StatefulSet", "Deployment"):
        for obj in kube.list(kind, namespace, labels={"xchat.dev/mesh": mesh}):
            generation, n = obj["metadata"]["generation"], obj["spec"].get("replicas", 1)
            status = {"observedGeneration": generation, "replicas": n, "readyReplicas": n, "updatedReplicas": n}
            if kind == "StatefulSet":
                status |= {"currentRevision": "r", "updateRevision": "r"}
            else:
                status["availableReplicas"] = n
            if all((obj.get("status") or {}).get(k) == v for k, v in status.items()):
                continue
            kube.merge_patch(kind, namespace, obj["metadata"]["name"], {"status": status}, subresource="status")
            written += 1
    return written
