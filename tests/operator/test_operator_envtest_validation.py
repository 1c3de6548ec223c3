"""The CRD's schema and CEL rules, enforced by a real API server; printer columns via kubectl."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from xchat_operator.errors import KubeError
from xchat_operator.testing import eventually, mesh_manifest

pytestmark = pytest.mark.envtest

NS = "elsewhere"  # no operator watches it: pure API-server behaviour
EXAMPLE = Path(__file__).resolve().parents[2] / "operator" / "examples" / "xchatmesh.yaml"


def rejected(kube, manifest: dict) -> str:
    with pytest.raises(KubeError) as err:
        kube.create(manifest)
    assert err.value.status == 422, err.value
    return str(err.value)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"regions": [{"name": "a"}, {"name": "b"}]}, "at least 3 regions are required for the region-loss guarantee"),
        ({"regions": [{"name": "a"}, {"name": "a"}, {"name": "b"}]}, "Duplicate value"),
        ({"regions": [{"name": "a", "storage": {"size": "lots"}}, {"name": "b"}, {"name": "c"}]},
         "storage.size must be a positive Kubernetes quantity such as 10Gi"),
        ({"regions": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "nats": {"resources": {"requests": {"cpu": "1 core"}}}},
         "spec.nats.resources.requests.cpu in body should match"),
        ({"regions": [{"name": "a", "natsNodes": 3}, {"name": "b"}, {"name": "c"}]},
         "every region must run the same number of NATS nodes"),
        ({"regions": [{"name": "A_1"}, {"name": "b"}, {"name": "c"}]}, "spec.regions[0].name in body should match"),
        ({"regions": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "durability": {"replicas": 5}},
         "durability.replicas cannot exceed the number of regions"),
    ],
    ids=["two-regions", "duplicate-names", "bad-storage-quantity", "bad-resource-quantity", "unequal-nats",
         "bad-region-name", "replicas-over-regions"],
)
def test_invalid_meshes_rejected(kube, envtest_env, spec: dict, message: str) -> None:
    manifest = {"apiVersion": "xchat.dev/v1alpha1", "kind": "XChatMesh",
                "metadata": {"name": "bad", "namespace": NS}, "spec": spec}
    assert message in rejected(kube, manifest)


def test_duplicate_names_also_get_readable_cel_message(kube, envtest_env) -> None:
    msg = rejected(kube, mesh_manifest("dup", regions=[{"name": "a"}, {"name": "a"}, {"name": "b"}], namespace=NS))
    assert "region names must be unique" in msg


def test_long_name_rejected(kube, envtest_env) -> None:
    assert "at most 24 characters" in rejected(kube, mesh_manifest("x" * 25, namespace=NS))


def test_immutable_fields(kube, envtest_env) -> None:
    kube.create(mesh_manifest("immut", namespace=NS))
    with pytest.raises(KubeError) as err:
        kube.merge_patch("XChatMesh", NS, "immut", {"spec": {"durability": {"replicas": 1}}})
    assert "durability.replicas is immutable" in str(err.value)
    with pytest.raises(KubeError) as err:
        kube.merge_patch("XChatMesh", NS, "immut", {"spec": {"regions": [
            {"name": "a", "storage": {"size": "20Gi"}}, {"name": "b"}, {"name": "c"}]}})
    assert "storage is immutable" in str(err.value)
    # A mutable field still changes.
    kube.merge_patch("XChatMesh", NS, "immut", {"spec": {"image": "xchat:0.2.0"}})


def test_defaults_applied(kube, envtest_env) -> None:
    obj = kube.create(mesh_manifest("defaults", namespace=NS))
    spec = obj["spec"]
    assert spec["image"] == "xchat:0.1.0" and spec["natsImage"] == "nats:2.12-alpine"
    assert spec["durability"] == {"replicas": 3}
    assert spec["tls"] == {"enabled": False}
    assert spec["services"]["relay"]["replicas"] == 2
    assert spec["regions"][0] == {"name": "a", "natsNodes": 1, "storage": {"size": "10Gi"},
                                  "topologyKey": "kubernetes.io/hostname", "mode": "Active", "down": False}


def test_example_manifest_is_valid(kube, envtest_env) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = NS
    kube.create(doc)


def test_kubectl_printer_columns(kube, envtest_env) -> None:
    kubectl = envtest_env.bin_dir / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not built (operator/envtest/build-binaries.sh kubectl)")
    kube.create(mesh_manifest("printed", namespace=NS))
    kube.merge_patch("XChatMesh", NS, "printed", {"status": {"readyRegions": "2/3", "phase": "Degraded"}},
                     subresource="status")

    def out() -> str:
        res = subprocess.run([str(kubectl), f"--kubeconfig={envtest_env.kubeconfig}", "get", "xchatmeshes",
                              "-n", NS, "printed"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return res.stdout
    text = eventually(out, 60)
    header, row = text.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "PHASE", "AGE"]
    assert row.split()[:3] == ["printed", "2/3", "Degraded"]


FOUR = [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]
MAJORITY = "at most (durability.replicas-1)/2 regions may be draining, drained or down at once"
OLD_NATS = "natsImage must be nats-server 2.12.3 or newer"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"regions": [{"name": "a", "down": True}, {"name": "b", "down": True}, {"name": "c", "down": True}]},
         MAJORITY),
        ({"regions": [{"name": "a", "down": True}, {"name": "b", "mode": "Draining"}, {"name": "c"}]}, MAJORITY),
        ({"regions": FOUR[:2] + [{"name": "c", "mode": "Draining"}, {"name": "d", "mode": "Draining"}]}, MAJORITY),
        ({"regions": [{"name": "a", "mode": "Draining"}, {"name": "b"}, {"name": "c"}], "durability": {"replicas": 1}},
         MAJORITY),
        ({"regions": FOUR[:3], "natsImage": "nats:2.11.4"}, OLD_NATS),
        ({"regions": FOUR[:3], "natsImage": "nats:2.12.2-alpine"}, OLD_NATS),
        ({"regions": FOUR[:3], "natsImage": "nats:2.10-alpine"}, OLD_NATS),
        ({"regions": FOUR[:3], "natsImage": "registry.local:5000/nats:v1.4.1"}, OLD_NATS),
    ],
    ids=["all-down", "down-and-draining", "two-draining-of-four", "r1-draining", "nats-2.11.4", "nats-2.12.2",
         "nats-2.10-floating", "registry-port-old"],
)
def test_majority_breaking_and_unsafe_specs_rejected(kube, envtest_env, spec: dict, message: str) -> None:
    manifest = {"apiVersion": "xchat.dev/v1alpha1", "kind": "XChatMesh",
                "metadata": {"name": "unsafe", "namespace": NS}, "spec": spec}
    assert message in rejected(kube, manifest)


@pytest.mark.parametrize("image", ["nats:2.12.3", "nats:2.12.20-alpine", "nats:2.12-alpine", "nats:2.13.0",
                                   "nats:3.0", "nats:latest", "registry.local:5000/nats:2.12.4",
                                   "nats@sha256:" + "0" * 64])
def test_current_nats_images_accepted(kube, envtest_env, image: str) -> None:
    name = "img-" + str(abs(hash(image)) % 10**8)
    kube.create(mesh_manifest(name, namespace=NS, natsImage=image))
    kube.delete("XChatMesh", NS, name)


def test_draining_a_second_region_is_refused_until_the_first_is_done(kube, envtest_env) -> None:
    kube.create(mesh_manifest("drain2", regions=FOUR, namespace=NS))
    kube.merge_patch("XChatMesh", NS, "drain2", {"spec": {"regions": FOUR[:3] + [{"name": "d", "mode": "Draining"}]}})
    with pytest.raises(KubeError) as err:
        kube.merge_patch("XChatMesh", NS, "drain2", {"spec": {"regions": [
            {"name": "a"}, {"name": "b"}, {"name": "c", "mode": "Draining"}, {"name": "d", "mode": "Draining"}]}})
    assert err.value.status == 422 and MAJORITY in str(err.value)
    with pytest.raises(KubeError) as err:  # marking another region down while d drains: same majority rule
        kube.merge_patch("XChatMesh", NS, "drain2", {"spec": {"regions": [
            {"name": "a", "down": True}, {"name": "b"}, {"name": "c"}, {"name": "d", "mode": "Draining"}]}})
    assert MAJORITY in str(err.value)
    # Finishing d (Drained, then removed) frees the budget for the next region.
    kube.merge_patch("XChatMesh", NS, "drain2", {"spec": {"regions": FOUR[:3] + [{"name": "d", "mode": "Drained"}]}})
    kube.merge_patch("XChatMesh", NS, "drain2", {"spec": {"regions": FOUR[:3]}})
    kube.merge_patch("XChatMesh", NS, "drain2", {"spec": {"regions": FOUR[:2] + [{"name": "c", "mode": "Draining"}]}})
    kube.delete("XChatMesh", NS, "drain2")
