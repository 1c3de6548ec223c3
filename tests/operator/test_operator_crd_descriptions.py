"""Every property of the XChatMesh schema carries a description, so ``kubectl explain`` documents it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from xchat_operator.testing import eventually

REPO = Path(__file__).resolve().parents[2]
COPIES = [REPO / "operator" / "crd" / "xchatmesh.yaml", REPO / "charts" / "xchat" / "crds" / "xchatmesh.yaml"]


# The API server refuses anything but a type on the root's metadata (explain shows ObjectMeta's own text).
EXEMPT = {"v1alpha1.metadata"}


def undescribed(schema: dict[str, Any], path: str) -> Iterator[str]:
    for name, sub in (schema.get("properties") or {}).items():
        if not str(sub.get("description") or "").strip() and f"{path}.{name}" not in EXEMPT:
            yield f"{path}.{name}"
        yield from undescribed(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from undescribed(schema["items"], f"{path}[]")


@pytest.mark.parametrize("crd_file", COPIES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_property_has_a_description(crd_file: Path) -> None:
    crd = yaml.safe_load(crd_file.read_text())
    missing = [p for v in crd["spec"]["versions"] for p in undescribed(v["schema"]["openAPIV3Schema"], v["name"])]
    assert missing == [], f"{crd_file.relative_to(REPO)}: properties without a description (kubectl explain shows none)"


def test_the_walk_sees_nested_and_array_properties() -> None:
    schema = {"properties": {"a": {"description": "x", "type": "array",
                                   "items": {"properties": {"b": {"type": "string"}}}}}}
    assert list(undescribed(schema, "v")) == ["v.a[].b"]


@pytest.mark.envtest
def test_kubectl_explain_prints_the_descriptions(envtest_env) -> None:
    kubectl = envtest_env.bin_dir / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not built (operator/envtest/build-binaries.sh kubectl)")

    def explain() -> str:
        res = subprocess.run([str(kubectl), f"--kubeconfig={envtest_env.kubeconfig}", "explain",
                              "xchatmeshes.spec.regions.mode"], capture_output=True, text=True, timeout=30)
        # The API server publishes a new CRD's OpenAPI a moment after installing it.
        assert res.returncode == 0, res.stderr
        return res.stdout
    text = eventually(explain, 60, interval=1.0, what="kubectl explain xchatmeshes.spec.regions.mode")
    assert "Draining: services scaled to 0" in " ".join(text.split())
