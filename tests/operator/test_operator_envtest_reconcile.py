"""Reconciliation against a real kube-apiserver: children, updates, drift, deletion, pause, probes."""

from __future__ import annotations

import base64
import time

import pytest

from xchat_operator import credentials
from xchat_operator.testing import NS, eventually, events_for, mesh_manifest, region_conditions, settle_workloads

pytestmark = pytest.mark.envtest

SERVICES = ("auth", "keys", "relay", "mailbox")


def children(kube, mesh: str) -> set[tuple[str, str]]:
    out = set()
    for kind in ("ConfigMap", "Secret", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget"):
        for o in kube.list(kind, NS, labels={"xchat.dev/mesh": mesh}):
            out.add((kind, o["metadata"]["name"]))
    return out


def expected_children(mesh: str, regions: tuple[str, ...]) -> set[tuple[str, str]]:
    out = {("ConfigMap", f"{mesh}-endpoints"), ("ConfigMap", f"{mesh}-nats-urls"), ("Secret", f"{mesh}-nats-credentials"),
           ("Secret", f"{mesh}-token-signing-key"), ("Secret", f"{mesh}-token-public-key"),
           ("PodDisruptionBudget", f"{mesh}-nats")}
    for r in regions:
        out |= {("StatefulSet", f"{mesh}-nats-{r}"), ("Service", f"{mesh}-nats-{r}"),
                ("Service", f"{mesh}-nats-{r}-headless"), ("Secret", f"{mesh}-nats-{r}-config")}
        for s in SERVICES:
            out |= {("Deployment", f"{mesh}-{s}-{r}"), ("Service", f"{mesh}-{s}-{r}"),
                    ("PodDisruptionBudget", f"{mesh}-{s}-{r}")}
    return out


def nats_conf(kube, mesh: str, region: str) -> str:
    sec = kube.get("Secret", NS, f"{mesh}-nats-{region}-config")
    return base64.b64decode(sec["data"]["nats.conf"]).decode()


def test_create_makes_every_child(kube, make_mesh, prober) -> None:
    mesh = make_mesh("create", regions=[{"name": "a"}, {"name": "b"}, {"name": "c"}])
    want = expected_children("create", ("a", "b", "c"))
    eventually(lambda: children(kube, "create") >= want, 60, what="children")
    assert children(kube, "create") == want

    uid = mesh["metadata"]["uid"]
    for kind, name in want:
        obj = kube.get(kind, NS, name)
        assert obj["metadata"]["ownerReferences"][0]["uid"] == uid, (kind, name)

    conf = nats_conf(kube, "create", "b")
    assert 'server_tags: ["region:b"]' in conf
    assert 'unique_tag: "region:"' in conf
    assert "sync_interval: always" in conf
    assert 'name: "create"' in conf
    for r in "abc":
        assert f"@create-nats-{r}-0.create-nats-{r}-headless.{NS}.svc.cluster.local:6222" in conf
    assert '"$KV.xchat_prekeys.>"' in conf

    sts = kube.get("StatefulSet", NS, "create-nats-a")
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    dep = kube.get("Deployment", NS, "create-relay-a")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["XCHAT_NATS_URLS"]["valueFrom"]["configMapKeyRef"] == {"name": "create-nats-urls", "key": "a"}
    urls = kube.get("ConfigMap", NS, "create-nats-urls")["data"]["a"]
    assert urls.startswith(f"nats://create-nats-a.{NS}.svc.cluster.local:4222,")
    signing = kube.get("Secret", NS, "create-token-signing-key")
    assert len(base64.b64decode(base64.b64decode(signing["data"]["signing.key"]))) == 32

    # Status: observedGeneration, a Reconciled event, and (no pods under envtest)
    # the real prober reports NoReadyEndpoints instead of crashing.
    def probed():
        m = kube.get("XChatMesh", NS, "create")
        st = m["status"]
        assert st["observedGeneration"] == m["metadata"]["generation"]
        assert region_conditions(m, "a")["Ready"] == ("False", "NatsNoReadyEndpoints")
        return st
    st = eventually(probed, 60, what="probe status")
    assert st["readyRegions"] == "0/3" and st["phase"] == "Degraded"
    eventually(lambda: events_for(kube, NS, "create", "Reconciled"), 60, what="Reconciled event")


def test_injected_probe_results_make_regions_ready(kube, make_mesh, prober) -> None:
    for r in "abc":
        prober.set_healthy("healthy", r)
    make_mesh("healthy")

    def ready():
        m = kube.get("XChatMesh", NS, "healthy")
        assert m["status"]["phase"] == "Running", m["status"].get("phase")
        return m
    m = eventually(ready, 60, what="Running")
    assert m["status"]["readyRegions"] == "3/3"
    assert region_conditions(m, "b")["Ready"] == ("True", "Healthy")
    prober.set_healthy("healthy", "b", ok=False)
    m = eventually(lambda: kube.get("XChatMesh", NS, "healthy")["status"]["phase"] == "Degraded"
                   and kube.get("XChatMesh", NS, "healthy"), 60, what="Degraded")
    assert region_conditions(m, "b")["Ready"] == ("False", "NatsUnreachable")


def test_spec_change_updates_children(kube, make_mesh) -> None:
    make_mesh("upd")
    eventually(lambda: children(kube, "upd") >= expected_children("upd", ("a", "b", "c")), 60)
    kube.merge_patch("XChatMesh", NS, "upd", {"spec": {"services": {"relay": {"replicas": 4}},
                                                        "image": "xchat:0.2.0"}})
    # An image change rolls one region at a time, each once the previous one is rolled out:
    # the test plays the Deployment and StatefulSet controllers (envtest runs none).
    eventually(lambda: settle_workloads(kube, NS, "upd") >= 0
               and kube.get("Deployment", NS, "upd-relay-b")["spec"]["replicas"] == 4, 90, what="replicas")
    eventually(lambda: settle_workloads(kube, NS, "upd") >= 0
               and kube.get("Deployment", NS, "upd-auth-c")["spec"]["template"]["spec"]["containers"][0]["image"]
               == "xchat:0.2.0", 90, what="image")
    assert kube.get("Deployment", NS, "upd-auth-c")["spec"]["replicas"] == 2


def test_deleted_and_edited_children_come_back(kube, make_mesh) -> None:
    make_mesh("drift")
    eventually(lambda: children(kube, "drift") >= expected_children("drift", ("a", "b", "c")), 60)
    old_uid = kube.get("Deployment", NS, "drift-mailbox-b")["metadata"]["uid"]
    kube.delete("Deployment", NS, "drift-mailbox-b")
    eventually(lambda: (kube.get("Deployment", NS, "drift-mailbox-b") or {}).get("metadata", {}).get("uid")
               not in (None, old_uid), 60, what="recreated deployment")
    kube.delete("Secret", NS, "drift-nats-c-config")
    eventually(lambda: kube.get("Secret", NS, "drift-nats-c-config"), 60, what="recreated config")
    # An edit by someone else is undone.
    kube.merge_patch("StatefulSet", NS, "drift-nats-a", {"spec": {"replicas": 5}})
    eventually(lambda: kube.get("StatefulSet", NS, "drift-nats-a")["spec"]["replicas"] == 1, 60, what="reverted")
    # Events are posted after the corrections they report, whichever path (the child's event
    # or the resync timer) made them, naming what was put back.
    def drift_events() -> dict[str, str]:
        return {e["reason"]: e["message"] for e in events_for(kube, NS, "drift") if e["reason"] in ("Recreated", "Corrected")}

    eventually(lambda: {"Recreated", "Corrected"} <= set(drift_events()), 60, what="Recreated and Corrected events")
    recreated = " ".join(e["message"] for e in events_for(kube, NS, "drift", "Recreated"))
    assert "Deployment/drift-mailbox-b" in recreated and "Secret/drift-nats-c-config" in recreated
    assert "StatefulSet/drift-nats-a" in drift_events()["Corrected"]
    # An edit the child handler cannot tell from the operator's own (same field manager)
    # is still undone by the timer, and reported by it.
    kube.merge_patch("Service", NS, "drift-relay-c", {"metadata": {"labels": {"app.kubernetes.io/name": "edited"}}},
                     field_manager="xchat-operator")
    eventually(lambda: kube.get("Service", NS, "drift-relay-c")["metadata"]["labels"]["app.kubernetes.io/name"] == "xchat",
               60, what="service edit reverted by the timer")
    eventually(lambda: any("Service/drift-relay-c" in e["message"] for e in events_for(kube, NS, "drift", "Corrected")),
               60, what="the timer's Corrected event")


def test_delete_runs_finalizer_cleanup(kube, operator) -> None:
    kube.create(mesh_manifest("gone"))
    eventually(lambda: len(children(kube, "gone")) == len(expected_children("gone", ("a", "b", "c"))), 60)
    assert "xchat.dev/finalizer" in kube.get("XChatMesh", NS, "gone")["metadata"]["finalizers"]
    kube.delete("XChatMesh", NS, "gone")
    eventually(lambda: kube.get("XChatMesh", NS, "gone") is None, 60, what="mesh gone")
    # No garbage collector runs under envtest: what is gone, the finalizer deleted.
    assert children(kube, "gone") == set()


def test_pause_annotation_stops_reconciliation(kube, make_mesh) -> None:
    make_mesh("paused")
    eventually(lambda: children(kube, "paused") >= expected_children("paused", ("a", "b", "c")), 60)
    kube.merge_patch("XChatMesh", NS, "paused", {"metadata": {"annotations": {"xchat.dev/paused": "true"}}})

    def paused_cond():
        m = kube.get("XChatMesh", NS, "paused")
        conds = {c["type"]: c for c in m["status"]["conditions"]}
        assert conds["Paused"]["status"] == "True" and conds["Paused"]["reason"] == "PauseAnnotation"
        return m["status"]["phase"] == "Paused"
    eventually(paused_cond, 60, what="Paused condition")
    kube.merge_patch("XChatMesh", NS, "paused", {"spec": {"services": {"relay": {"replicas": 5}}}})
    kube.delete("Deployment", NS, "paused-keys-a")
    import time
    time.sleep(4)  # two timer periods
    assert kube.get("Deployment", NS, "paused-relay-a")["spec"]["replicas"] == 2
    assert kube.get("Deployment", NS, "paused-keys-a") is None
    kube.merge_patch("XChatMesh", NS, "paused", {"metadata": {"annotations": {"xchat.dev/paused": None}}})
    eventually(lambda: kube.get("Deployment", NS, "paused-relay-a")["spec"]["replicas"] == 5, 60, what="resumed")
    eventually(lambda: kube.get("Deployment", NS, "paused-keys-a"), 60, what="recreated after resume")
    eventually(lambda: {c["type"]: c["status"] for c in kube.get("XChatMesh", NS, "paused")["status"]["conditions"]}
               ["Paused"] == "False", 60, what="Paused=False")


def _templates(kube, mesh: str, regions) -> dict[str, dict]:
    out = {}
    for kind in ("StatefulSet", "Deployment"):
        for obj in kube.list(kind, NS, labels={"xchat.dev/mesh": mesh}):
            if obj["metadata"]["labels"].get("xchat.dev/region") in regions:
                out[f"{kind}/{obj['metadata']['name']}"] = obj["spec"]["template"]
    return out


def test_a_new_region_gets_its_own_certificates_and_no_other_pod_restarts(kube, make_mesh) -> None:
    """Adding region d (TLS on) restarts no pod of a, b or c: every pod template stays as it
    was. Before, the one mesh certificate (naming every region's NATS pods) was re-issued and
    its digest, with the services' NATS URL list in their env, changed every template."""
    make_mesh("tls", tls={"enabled": True})
    # Every object read below is created asynchronously by the operator: wait for all of them.
    eventually(lambda: len(_templates(kube, "tls", "abc")) == 15, 60, what="the workloads of a, b and c")
    eventually(lambda: "tls-nats-c-0.tls-nats-c-headless" in nats_conf(kube, "tls", "a"), 60, what="routes")
    time.sleep(3)  # a resync or two: the templates as the operator keeps them
    before = _templates(kube, "tls", "abc")
    ca = kube.get("Secret", NS, "tls-tls")["data"]["ca.crt"]

    kube.merge_patch("XChatMesh", NS, "tls", {"spec": {"regions": [{"name": "a"}, {"name": "b"}, {"name": "c"},
                                                                   {"name": "d"}]}})
    eventually(lambda: kube.get("StatefulSet", NS, "tls-nats-d") and kube.get("Deployment", NS, "tls-mailbox-d"),
               60, what="region d's workloads")
    eventually(lambda: "tls-nats-d-0.tls-nats-d-headless" in nats_conf(kube, "tls", "a"), 60, what="routes to d (reload)")
    time.sleep(5)  # several resync periods (2 s here)
    after = _templates(kube, "tls", "abc")
    assert [k for k in before if after.get(k) != before[k]] == []

    # Region d has certificates of its own, from the same CA; a's are as they were.
    conf = nats_conf(kube, "tls", "a")
    assert 'ca_file: "/etc/nats-tls/ca.crt"' in conf and "verify: true" in conf
    new = eventually(lambda: kube.get("Secret", NS, "tls-nats-d-tls"), 60, what="region d's NATS certificate")
    assert new["data"]["ca.crt"] == ca  # same CA: every client keeps trusting the mesh
    d_sans = credentials.dns_names_of(base64.b64decode(new["data"]["tls.crt"]).decode())
    assert f"*.tls-nats-d-headless.{NS}.svc.cluster.local" in d_sans
    a_sans = credentials.dns_names_of(base64.b64decode(kube.get("Secret", NS, "tls-nats-a-tls")["data"]["tls.crt"]).decode())
    assert f"*.tls-nats-a-headless.{NS}.svc.cluster.local" in a_sans
    assert not [n for n in a_sans if "-headless" in n and "nats-a-" not in n]
    eventually(lambda: all(kube.get("Secret", NS, f"tls-{s}-d-tls") for s in ("auth", "keys", "relay", "mailbox")),
               60, what="region d's service certificates")
    # The new URL lists reach a's services when they next start (a ConfigMap, not their template).
    assert kube.get("ConfigMap", NS, "tls-nats-urls")["data"]["a"].startswith("tls://tls-nats-a.")
    eventually(lambda: "tls-nats-d." in kube.get("ConfigMap", NS, "tls-nats-urls")["data"]["a"], 60,
               what="region a's services' NATS list")
