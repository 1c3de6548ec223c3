"""`helm lint` and `helm template` of the chart: defaults and every ci/ values file.

Checks what a reviewer would: names fit in 63 characters, app.kubernetes.io labels,
non-root read-only pods with resources and probes, region spread, the mesh CR built
from values, merge/patch applied, the helm test hook present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHART, CI_VALUES, KUBE_VERSION, Render, run_helm

VALUE_SETS = [pytest.param((), id="defaults")] + [pytest.param((v,), id=v.stem) for v in CI_VALUES]


def _kinds(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


def _pod_specs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = []
    for d in docs:
        if d["kind"] == "Pod":
            specs.append(d["spec"])
        elif d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            specs.append(d["spec"]["template"]["spec"])
    return specs


def test_ci_values_files_exist() -> None:
    assert len(CI_VALUES) >= 4, "charts/xchat/ci/ should hold several realistic values files"


@pytest.mark.parametrize("values", VALUE_SETS)
def test_helm_lint_is_clean(helm: Path, values: tuple[Path, ...]) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    for v in values:
        args += ["--values", str(v)]
    done = run_helm(helm, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ERROR]" not in done.stdout and "[WARNING]" not in done.stdout, done.stdout


@pytest.mark.parametrize("values", VALUE_SETS)
def test_render_is_well_formed(render: Render, values: tuple[Path, ...]) -> None:
    docs = render(*values)
    assert docs, "nothing rendered"
    for d in docs:
        meta = d["metadata"]
        assert len(meta["name"]) <= 63, f"{d['kind']}/{meta['name']} is longer than 63 characters"
        labels = meta.get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/component", "app.kubernetes.io/part-of", "helm.sh/chart"):
            assert key in labels, f"{d['kind']}/{meta['name']} lacks label {key}"
        assert all(len(v) <= 63 for v in labels.values())
    for spec in _pod_specs(docs):
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
        for c in spec["containers"]:
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True
            assert csc["allowPrivilegeEscalation"] is False
            assert csc["capabilities"]["drop"] == ["ALL"]
            assert c["resources"].get("requests"), f"container {c['name']} has no resource requests"
            assert c["resources"].get("limits", {}).get("memory"), f"container {c['name']} has no memory limit"


def test_defaults_install_operator_mesh_and_test(render: Render) -> None:
    kinds = _kinds(render())
    assert set(kinds) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "RoleBinding", "Deployment",
                          "KopfPeering", "XChatMesh", "Pod"}
    dep = kinds["Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "xchat:0.1.0"
    assert c["command"][-1] == "xchat-operator" and "exec python3 -m xchat_operator" in c["command"][2]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["XCHAT_OPERATOR_NAMESPACES"] == "xchat"
    assert env["XCHAT_OPERATOR_PEERING"] == "xchat-operator"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["port"] == "health"
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"][0]["metadata"]["name"]
    spread = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert spread == {"topology.kubernetes.io/region", "kubernetes.io/hostname"}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]

    (binding,) = kinds["RoleBinding"]
    assert binding["metadata"]["namespace"] == "xchat"
    assert binding["roleRef"]["name"].endswith("-operator-mesh")


def test_mesh_cr_from_values(render: Render) -> None:
    (mesh,) = _kinds(render())["XChatMesh"]
    spec = mesh["spec"]
    assert mesh["metadata"] == {**mesh["metadata"], "name": "xchat", "namespace": "xchat"}
    assert [r["name"] for r in spec["regions"]] == ["a", "b", "c"]
    # Regions without a nodeSelector select the nodes labelled with their name.
    assert [r["nodeSelector"] for r in spec["regions"]] == [
        {"topology.kubernetes.io/region": n} for n in ("a", "b", "c")]
    assert spec["durability"] == {"replicas": 3}
    assert spec["tls"] == {"enabled": True}
    assert set(spec["services"]) == {"auth", "keys", "relay", "mailbox"}
    assert spec["natsImage"].startswith("xchat-nats:")


def test_production_values(render: Render) -> None:
    docs = render(CHART / "ci" / "production-values.yaml")
    kinds = _kinds(docs)
    (mesh,) = kinds["XChatMesh"]
    assert mesh["metadata"]["name"] == "prod"
    assert mesh["spec"]["tls"] == {"enabled": True, "secretName": "xchat-prod-tls"}
    assert mesh["spec"]["regions"][0]["nodeSelector"] == {"topology.kubernetes.io/region": "eu-west-1"}
    assert mesh["spec"]["regions"][0]["storage"] == {"size": "50Gi", "storageClassName": "fast-ssd"}
    assert mesh["spec"]["image"] == "registry.example.com/xchat/xchat:0.1.0"
    dep = kinds["Deployment"][0]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    (test_pod,) = kinds["Pod"]
    vol = {v["name"]: v for v in test_pod["spec"]["volumes"]}
    assert vol["ca"]["secret"] == {"secretName": "xchat-prod-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}


def test_cluster_wide_binds_mesh_role_cluster_wide(render: Render) -> None:
    kinds = _kinds(render(CHART / "ci" / "five-regions-values.yaml"))
    assert "RoleBinding" not in kinds
    assert {b["roleRef"]["name"] for b in kinds["ClusterRoleBinding"]} == {"xchat-operator", "xchat-operator-mesh"}
    assert [p["kind"] for p in kinds.get("ClusterKopfPeering", [])] == ["ClusterKopfPeering"]
    args = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args
    (mesh,) = kinds["XChatMesh"]
    assert mesh["spec"]["durability"]["replicas"] == 5 and len(mesh["spec"]["regions"]) == 5


def test_operator_only_binds_each_watched_namespace(render: Render) -> None:
    kinds = _kinds(render(CHART / "ci" / "operator-only-values.yaml"))
    assert "XChatMesh" not in kinds and "Pod" not in kinds
    assert sorted(b["metadata"]["namespace"] for b in kinds["RoleBinding"]) == ["team-a", "team-b", "team-c"]
    assert sorted(p["metadata"]["namespace"] for p in kinds["KopfPeering"]) == ["team-a", "team-b", "team-c"]
    env = {e["name"]: e.get("value") for e in kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["XCHAT_OPERATOR_NAMESPACES"] == "team-a,team-b,team-c"


def test_merge_and_patch(render: Render) -> None:
    kinds = _kinds(render(CHART / "ci" / "overrides-values.yaml"))
    dep = kinds["Deployment"][0]
    assert dep["metadata"]["name"] == "chat-operator"
    assert dep["metadata"]["annotations"] == {"example.com/owner": "messaging"}
    assert dep["spec"]["revisionHistoryLimit"] == 3
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["env"][-1] == {"name": "XCHAT_OPERATOR_PRIORITY", "value": "200"}
    assert c["livenessProbe"]["periodSeconds"] == 10
    assert dep["metadata"]["labels"]["team"] == "messaging"
    (mesh,) = kinds["XChatMesh"]
    assert mesh["spec"]["services"]["relay"]["replicas"] == 3  # merged
    assert mesh["spec"]["services"]["auth"]["replicas"] == 2  # untouched sibling kept
    assert mesh["metadata"]["annotations"] == {"xchat.dev/paused": "false"}
    assert "limits" not in mesh["spec"]["nats"]["resources"]
    pm = next(p for p in kinds["PodMonitor"] if p["metadata"]["namespace"] == mesh["metadata"]["namespace"]
              and p["spec"]["selector"]["matchLabels"].get("xchat.dev/mesh"))
    assert pm["spec"]["selector"]["matchLabels"] == {"xchat.dev/mesh": "dev"}
    assert pm["metadata"]["labels"]["release"] == "prometheus"
    (test_pod,) = kinds["Pod"]
    assert test_pod["spec"]["tolerations"] == [{"operator": "Exists"}]
    assert "XCHAT_TEST_CA" not in {e["name"] for e in test_pod["spec"]["containers"][0]["env"]}  # TLS off


def test_helm_test_pod_talks_to_every_region(render: Render) -> None:
    (pod,) = _kinds(render())["Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["python3", "-c"]
    script = c["args"][0]
    compile(script, "send_and_receive.py", "exec")  # the inlined script is valid Python
    assert "from xchat.client import Client" in script
    env = {e["name"]: e.get("value") for e in c["env"]}
    regions = json.loads(env["XCHAT_TEST_ENDPOINTS"])
    assert [r["region"] for r in regions] == ["a", "b", "c"]
    assert regions[0]["endpoints"] == {
        s: f"xchat-{s}-a.xchat.svc.cluster.local:50051" for s in ("auth", "keys", "relay", "mailbox")}
    assert env["XCHAT_TEST_CA"] == "/etc/xchat/tls/ca.crt"
    assert pod["spec"]["automountServiceAccountToken"] is False

