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
    text = eventually(out, 10)
    header, row = text.splitlines()[:2]
    assert header.split() == ["NAME", "READY", "PHASE", "AGE"]
    assert row.split()[:3] == ["printed", "2/3", "Degraded"]
