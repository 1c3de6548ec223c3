"""The chart ships the operator's CRDs and RBAC rules unchanged (operator/ is the source)."""

from __future__ import annotations

import subprocess

import yaml

from .conftest import CHART, REPO, Render

OPERATOR = REPO / "operator"


def test_copies_are_identical_to_the_operator_files() -> None:
    done = subprocess.run(["bash", str(CHART / "sync-from-operator.sh"), "--check"], capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stderr}run charts/xchat/sync-from-operator.sh"
    for name in ("xchatmesh.yaml", "kopf-peering.yaml"):
        assert (CHART / "crds" / name).read_bytes() == (OPERATOR / "crd" / name).read_bytes()


def _cluster_role_rules(path: str) -> list[dict[str, object]]:
    docs = [d for d in yaml.safe_load_all((OPERATOR / "rbac" / path).read_text()) if d]
    (role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    return list(role["rules"])


def test_rendered_rbac_rules_are_the_operator_rules(render: Render) -> None:
    roles = {d["metadata"]["name"]: d for d in render() if d["kind"] == "ClusterRole"}
    assert roles["xchat-operator"]["rules"] == _cluster_role_rules("clusterrole.yaml")
    assert roles["xchat-operator-mesh"]["rules"] == _cluster_role_rules("mesh-role.yaml")


def test_every_operator_crd_is_in_the_chart() -> None:
    crds = {p.name for p in (OPERATOR / "crd").glob("*.yaml")
            if any(d and d.get("kind") == "CustomResourceDefinition" for d in yaml.safe_load_all(p.read_text()))}
    assert crds <= {p.name for p in (CHART / "crds").glob("*.yaml")}
