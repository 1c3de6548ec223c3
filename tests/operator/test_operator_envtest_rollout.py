"""Rolls, publishing and failures against a real API server (no controllers: the test plays the StatefulSet controller)."""

from __future__ import annotations

import time

import pytest

from xchat_operator.testing import NS, eventually, events_for, settle_workloads

pytestmark = pytest.mark.envtest

REGIONS = ("a", "b", "c")


def nats_image(kube, mesh: str, region: str) -> str:
    sts = kube.get("StatefulSet", NS, f"{mesh}-nats-{region}")
    return str(sts["spec"]["template"]["spec"]["containers"][0]["image"])


SERVICES = ("auth", "keys", "relay", "mailbox")


def settle(kube, mesh: str, region: str) -> None:
    """What the StatefulSet controller writes once every pod of the latest revision is ready."""
    sts = kube.get("StatefulSet", NS, f"{mesh}-nats-{region}")
    n = sts["spec"]["replicas"]
    kube.merge_patch("StatefulSet", NS, f"{mesh}-nats-{region}", {"status": {
        "observedGeneration": sts["metadata"]["generation"], "replicas": n, "readyReplicas": n,
        "updatedReplicas": n, "currentRevision": "r", "updateRevision": "r"}}, subresource="status")


def settle_services(kube, mesh: str, region: str) -> None:
    """What the Deployment controller writes once every replica of the latest template is ready."""
    for service in SERVICES:
        dep = kube.get("Deployment", NS, f"{mesh}-{service}-{region}")
        n = dep["spec"]["replicas"]
        kube.merge_patch("Deployment", NS, f"{mesh}-{service}-{region}", {"status": {
            "observedGeneration": dep["metadata"]["generation"], "replicas": n, "readyReplicas": n,
            "availableReplicas": n, "updatedReplicas": n}}, subresource="status")


def image_of(kube, kind: str, name: str) -> str:
    return str(kube.get(kind, NS, name)["spec"]["template"]["spec"]["containers"][0]["image"])


def mesh_condition(kube, mesh: str, type_: str) -> dict:
    conds = {c["type"]: c for c in kube.get("XChatMesh", NS, mesh)["status"]["conditions"]}
    return conds[type_]


def test_nats_image_change_restarts_one_region_at_a_time(kube, make_mesh, prober) -> None:
    for r in REGIONS:
        prober.set_healthy("roll", r)
    make_mesh("roll", natsImage="nats:2.12.3")
    for r in REGIONS:
        eventually(lambda r=r: kube.get("StatefulSet", NS, f"roll-nats-{r}")
                   and kube.get("Deployment", NS, f"roll-mailbox-{r}"), 60, what=f"region {r}")
        settle(kube, "roll", r)
        settle_services(kube, "roll", r)
    kube.merge_patch("XChatMesh", NS, "roll", {"spec": {"natsImage": "nats:2.12.4"}})

    def new_regions() -> list[str]:
        return [r for r in REGIONS if nats_image(kube, "roll", r) == "nats:2.12.4"]

    order: list[str] = []
    for step in range(3):
        eventually(lambda: len(new_regions()) == step + 1, 60, what=f"region {step + 1} restarted")
        (latest,) = set(new_regions()) - set(order)
        order.append(latest)
        if step < 2:
            cond = eventually(lambda: mesh_condition(kube, "roll", "RollingOut")["status"] == "True"
                              and mesh_condition(kube, "roll", "RollingOut"), 60, what="RollingOut")
            assert "held" in cond["message"], cond
        # Several resync periods (2 s in tests) pass: nobody else restarts while this region is not ready.
        time.sleep(5)
        assert sorted(new_regions()) == sorted(order), "a second region restarted before the first was ready"
        settle(kube, "roll", latest)
    assert sorted(order) == sorted(REGIONS)
    eventually(lambda: mesh_condition(kube, "roll", "RollingOut")["status"] == "False", 60, what="settled")


def test_an_upgrade_rolls_each_region_nats_then_its_services_then_the_next_region(kube, make_mesh, prober,
                                                                                 handover) -> None:
    """``image`` and ``natsImage`` changed together (a helm upgrade): region by region, first the
    region's NATS (its leaderships handed over just before), then its four services once that
    NATS is rolled out, and the next region only once those are too. Before, every service
    Deployment of every region was applied in the first pass."""
    for r in REGIONS:
        prober.set_healthy("up", r)
    make_mesh("up", image="xchat:0.2.0", natsImage="nats:2.12.3")
    for r in REGIONS:
        eventually(lambda r=r: kube.get("StatefulSet", NS, f"up-nats-{r}")
                   and kube.get("Deployment", NS, f"up-mailbox-{r}"), 60, what=f"region {r}")
        settle(kube, "up", r)
        settle_services(kube, "up", r)
    time.sleep(3)
    handover.calls[:] = [c for c in handover.calls if c[0] != "up"]
    kube.merge_patch("XChatMesh", NS, "up", {"spec": {"image": "xchat:0.2.2", "natsImage": "nats:2.12.4"}})

    def rolled() -> list[tuple[str, str]]:
        """(region, "nats" | "services") whose template carries the new image now."""
        out = []
        for r in REGIONS:
            if image_of(kube, "StatefulSet", f"up-nats-{r}") == "nats:2.12.4":
                out.append((r, "nats"))
            new = [s for s in SERVICES if image_of(kube, "Deployment", f"up-{s}-{r}") == "xchat:0.2.2"]
            assert new in ([], list(SERVICES)), f"region {r}: only {new} of its services applied"
            if new:
                out.append((r, "services"))
        return out

    order: list[tuple[str, str]] = []
    for step in range(6):
        eventually(lambda: len(rolled()) == step + 1, 60, what=f"step {step + 1} of the roll")
        (latest,) = set(rolled()) - set(order)
        order.append(latest)
        if step < 5:
            cond = eventually(lambda: mesh_condition(kube, "up", "RollingOut")["status"] == "True"
                              and mesh_condition(kube, "up", "RollingOut"), 60, what="RollingOut")
            assert "held" in cond["message"], cond
        # Several resync periods (2 s here): nothing else is applied while this step is not rolled out.
        time.sleep(5)
        assert sorted(rolled()) == sorted(order), f"a second step started before {latest} was rolled out"
        region, what = latest
        (settle if what == "nats" else settle_services)(kube, "up", region)
    assert order == [(r, what) for r in REGIONS for what in ("nats", "services")], order
    eventually(lambda: mesh_condition(kube, "up", "RollingOut")["status"] == "False", 60, what="settled")
    # Each region's leaderships were handed over once, while its NATS still ran the old image.
    calls = [c for c in handover.calls if c[0] == "up"]
    assert [(r, img) for _, r, img in calls] == [(r, "nats:2.12.3") for r in REGIONS], calls


def test_a_handover_that_cannot_finish_is_reported_and_the_roll_goes_on(kube, make_mesh, prober, handover) -> None:
    for r in REGIONS:
        prober.set_healthy("stuck", r)
    make_mesh("stuck", natsImage="nats:2.12.3")
    for r in REGIONS:
        eventually(lambda r=r: kube.get("StatefulSet", NS, f"stuck-nats-{r}")
                   and kube.get("Deployment", NS, f"stuck-mailbox-{r}"), 60, what=f"region {r}")
        settle(kube, "stuck", r)
        settle_services(kube, "stuck", r)
    for r in REGIONS:
        handover.fail("stuck", r)
    kube.merge_patch("XChatMesh", NS, "stuck", {"spec": {"natsImage": "nats:2.12.4"}})
    first = eventually(lambda: [r for r in REGIONS if nats_image(kube, "stuck", r) == "nats:2.12.4"], 60,
                       what="the first region rolled")
    cond = eventually(lambda: "leadership handover incomplete" in mesh_condition(kube, "stuck", "RollingOut")["message"]
                      and mesh_condition(kube, "stuck", "RollingOut"), 60, what="RollingOut names the handover")
    assert f"leaders still in region {first[0]}" in cond["message"], cond
    warnings = eventually(lambda: [e for e in events_for(kube, NS, "stuck", "LeadershipNotHandedOver")
                                   if e["type"] == "Warning"], 60, what="Warning event")
    assert "XCHAT_MAILBOX" in warnings[0]["message"]
    for r in REGIONS:
        settle(kube, "stuck", r)
    eventually(lambda: settle_workloads(kube, NS, "stuck") >= 0
               and mesh_condition(kube, "stuck", "RollingOut")["status"] == "False", 90, what="settled")
    assert all(nats_image(kube, "stuck", r) == "nats:2.12.4" for r in REGIONS)


def test_new_region_published_only_once_healthy(kube, make_mesh, prober) -> None:
    for r in REGIONS:
        prober.set_healthy("pub", r)
    prober.set_healthy("pub", "d", ok=False)
    make_mesh("pub")
    eventually(lambda: kube.get("ConfigMap", NS, "pub-endpoints")["data"]["regions"] == "a,b,c", 60, what="a,b,c")
    kube.merge_patch("XChatMesh", NS, "pub", {"spec": {"regions": [{"name": r} for r in (*REGIONS, "d")]}})
    eventually(lambda: kube.get("Deployment", NS, "pub-relay-d"), 60, what="region d created")
    time.sleep(5)  # several probe rounds: d is unhealthy throughout
    assert kube.get("ConfigMap", NS, "pub-endpoints")["data"]["regions"] == "a,b,c"
    prober.set_healthy("pub", "d")
    eventually(lambda: kube.get("ConfigMap", NS, "pub-endpoints")["data"]["regions"] == "a,b,c,d", 60,
               what="d published once healthy")


def test_child_refused_by_kubernetes_shows_in_status_and_events(kube, make_mesh) -> None:
    make_mesh("refused", services={"relay": {"resources": {"requests": {"memory": "-1Gi"}}}})

    def failed():
        cond = mesh_condition(kube, "refused", "Reconciled")
        return cond["status"] == "False" and cond
    cond = eventually(failed, 60, what="Reconciled=False")
    assert cond["reason"] == "ChildRejected" and "refused-relay-a" in cond["message"], cond
    warnings = eventually(lambda: [e for e in events_for(kube, NS, "refused", "ChildRejected") if e["type"] == "Warning"],
                          60, what="Warning event")
    assert "must be greater than or equal to 0" in warnings[0]["message"], warnings[0]["message"]
    # The fix is picked up and the condition clears.
    kube.merge_patch("XChatMesh", NS, "refused", {"spec": {"services": {"relay": {"resources": {"requests": {"memory": "64Mi"}}}}}})
    eventually(lambda: mesh_condition(kube, "refused", "Reconciled")["status"] == "True", 60, what="Reconciled=True")


def test_missing_tls_secret_is_not_reported_as_reconciled(kube, make_mesh) -> None:
    make_mesh("nosecret", tls={"enabled": True, "secretName": "nosecret-certs"})

    def failed():
        cond = mesh_condition(kube, "nosecret", "Reconciled")
        return cond["status"] == "False" and cond
    cond = eventually(failed, 60, what="Reconciled=False")
    assert cond["reason"] == "DependencyMissing" and "nosecret-certs does not exist" in cond["message"], cond
    eventually(lambda: [e for e in events_for(kube, NS, "nosecret", "DependencyMissing") if e["type"] == "Warning"],
               60, what="Warning event")
    assert kube.get("StatefulSet", NS, "nosecret-nats-a") is None  # nothing half-applied that cannot start
    kube.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "nosecret-certs", "namespace": NS},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": "eA==", "tls.key": "eA==", "ca.crt": "eA=="}}, field_manager="test")
    eventually(lambda: mesh_condition(kube, "nosecret", "Reconciled")["status"] == "True", 90, what="Reconciled=True")
    eventually(lambda: kube.get("StatefulSet", NS, "nosecret-nats-a"), 60, what="children created")
    kube.delete("Secret", NS, "nosecret-certs")
