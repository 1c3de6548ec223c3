"""Region lifecycle against a real API server: add, drain (two steps), remove, mark down."""

from __future__ import annotations

import base64

import pytest

from xchat_operator.errors import KubeError
from xchat_operator.testing import NS, eventually, region_conditions

pytestmark = pytest.mark.envtest


def regions_patch(kube, mesh: str, regions: list[dict]) -> None:
    kube.merge_patch("XChatMesh", NS, mesh, {"spec": {"regions": regions}})


def endpoints(kube, mesh: str) -> str:
    return kube.get("ConfigMap", NS, f"{mesh}-endpoints")["data"]["regions"]


def replicas(kube, kind: str, name: str) -> int:
    return int(kube.get(kind, NS, name)["spec"]["replicas"])


def nats_conf(kube, mesh: str, region: str) -> str:
    return base64.b64decode(kube.get("Secret", NS, f"{mesh}-nats-{region}-config")["data"]["nats.conf"]).decode()


def nats_urls(kube, mesh: str, region: str) -> str:
    """What a service of ``region`` dials when it (re)starts (configMapKeyRef: not in its template)."""
    return kube.get("ConfigMap", NS, f"{mesh}-nats-urls")["data"][region]


def test_add_drain_remove_region(kube, make_mesh, prober) -> None:
    for r in "abcd":
        prober.set_healthy("life", r)
    make_mesh("life")
    eventually(lambda: kube.get("Deployment", NS, "life-mailbox-c"), 60, what="initial children")

    # Add a fourth region: its workloads appear, every region's routes include it.
    regions = [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]
    regions_patch(kube, "life", regions)
    eventually(lambda: kube.get("Deployment", NS, "life-mailbox-d"), 60, what="region d")
    # One reconcile pass writes these objects one after another: wait for each, never read once.
    eventually(lambda: "life-nats-d-0.life-nats-d-headless" in nats_conf(kube, "life", "a"), 60, what="routes to d")
    eventually(lambda: endpoints(kube, "life") == "a,b,c,d", 60, what="endpoints with d")
    eventually(lambda: kube.get("XChatMesh", NS, "life")["status"]["readyRegions"] == "4/4", 60, what="4/4")

    # Removing an active region is refused by the API server.
    with pytest.raises(KubeError) as err:
        regions_patch(kube, "life", regions[:3])
    assert err.value.status == 422
    assert "can only be removed once it is Drained" in str(err.value)
    # So is skipping the Draining step.
    with pytest.raises(KubeError) as err:
        regions_patch(kube, "life", regions[:3] + [{"name": "d", "mode": "Drained"}])
    assert "Active -> Draining -> Drained" in str(err.value)

    # Step 1, Draining: clients pointed away, NATS keeps running.
    regions_patch(kube, "life", regions[:3] + [{"name": "d", "mode": "Draining"}])
    eventually(lambda: replicas(kube, "Deployment", "life-relay-d") == 0, 60, what="services scaled to 0")
    eventually(lambda: endpoints(kube, "life") == "a,b,c", 60, what="endpoints without d")
    assert replicas(kube, "StatefulSet", "life-nats-d") == 1

    def draining():
        m = kube.get("XChatMesh", NS, "life")
        assert region_conditions(m, "d")["Draining"] == ("True", "ClientsDrained")
        assert region_conditions(m, "d")["Ready"] == ("False", "Draining")
        return m["status"]["readyRegions"] == "3/3"
    eventually(draining, 60, what="Draining status")

    # Step 2, Drained: NATS scaled to 0, PVCs retained by policy.
    regions_patch(kube, "life", regions[:3] + [{"name": "d", "mode": "Drained"}])
    eventually(lambda: replicas(kube, "StatefulSet", "life-nats-d") == 0, 60, what="NATS scaled to 0")
    sts = kube.get("StatefulSet", NS, "life-nats-d")
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    eventually(lambda: region_conditions(kube.get("XChatMesh", NS, "life"), "d")["Draining"]
               == ("True", "NatsScaledDown"), 60, what="Drained status")
    eventually(lambda: "life-nats-d" not in nats_urls(kube, "life", "a"), 60, what="services stop dialling d")

    # Step 3, remove: the region's objects are pruned (PVCs are never touched).
    regions_patch(kube, "life", regions[:3])
    eventually(lambda: kube.get("StatefulSet", NS, "life-nats-d") is None, 60, what="pruned")
    eventually(lambda: kube.get("Deployment", NS, "life-mailbox-d") is None, 60, what="services pruned")
    eventually(lambda: kube.get("Secret", NS, "life-nats-d-config") is None, 60, what="config pruned")
    eventually(lambda: [r["name"] for r in kube.get("XChatMesh", NS, "life")["status"]["regions"]] == ["a", "b", "c"],
               30, what="status without d")


def test_mark_region_down(kube, make_mesh, prober) -> None:
    prober.set_healthy("down", "a")
    prober.set_healthy("down", "b")
    prober.set_healthy("down", "c", ok=False)  # region c is unreachable
    make_mesh("down")
    eventually(lambda: kube.get("XChatMesh", NS, "down")["status"]["phase"] == "Degraded", 60, what="Degraded")
    assert kube.get("XChatMesh", NS, "down")["status"]["readyRegions"] == "2/3"
    nats_before = kube.get("StatefulSet", NS, "down-nats-c")["spec"]

    regions_patch(kube, "down", [{"name": "a"}, {"name": "b"}, {"name": "c", "down": True}])

    def stopped_waiting():
        m = kube.get("XChatMesh", NS, "down")
        assert region_conditions(m, "c")["Ready"] == ("False", "MarkedDown")
        assert region_conditions(m, "c")["Degraded"] == ("True", "MarkedDown")
        assert m["status"]["observedGeneration"] == m["metadata"]["generation"]
        return m["status"]["phase"] == "Running" and m["status"]["readyRegions"] == "2/2"
    eventually(stopped_waiting, 60, what="rest stops waiting")
    eventually(lambda: endpoints(kube, "down") == "a,b", 60, what="endpoints without c")
    eventually(lambda: replicas(kube, "Deployment", "down-relay-c") == 0, 60, what="region c services scaled to 0")
    # The unreachable region's NATS is left alone: no scale-down, routes unchanged.
    assert kube.get("StatefulSet", NS, "down-nats-c")["spec"]["replicas"] == nats_before["replicas"]
    assert "down-nats-c-0.down-nats-c-headless" in nats_conf(kube, "down", "a")
