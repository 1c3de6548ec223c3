"""``mesh.keyTransparency`` values reach the XChatMesh the chart renders, and from it auth's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from xchat_operator import builders
from xchat_operator.spec import parse_mesh

from .conftest import CHART, Render

PASSWORDS = {"auth": "a", "keys": "k", "relay": "r", "mailbox": "m", "bootstrap": "b", "route": "x"}
KEYS = ["i2w5vSDuFhxjK1RTjF0lnfh9/thxhr8ZXvzsbu3kAhs=", "+/9XPUzQuX7FDTh6IJCzI/o3tnLH4dcRbyn3+YzyPaw="]


def _mesh(render: Render, tmp_path: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    files = []
    if values is not None:
        files.append(tmp_path / "values.yaml")
        files[0].write_text(yaml.safe_dump(values))
    (mesh,) = [d for d in render(*files) if d["kind"] == "XChatMesh"]
    return dict(mesh)


def _auth_env(mesh: dict[str, Any]) -> dict[str, str]:
    spec = parse_mesh(mesh)
    env = builders.service_env(spec, "auth", spec.regions[0], "cluster.local")
    return {e["name"]: e.get("value", "") for e in env if e["name"].startswith("XCHAT_KT_")}


def test_defaults_render_no_block_and_set_nothing(render: Render, tmp_path: Path) -> None:
    mesh = _mesh(render, tmp_path)
    assert "keyTransparency" not in mesh["spec"]
    assert _auth_env(mesh) == {}


def test_values_render_into_the_mesh_and_auths_environment(render: Render, tmp_path: Path) -> None:
    mesh = _mesh(render, tmp_path, {"mesh": {"keyTransparency": {"auditorKeys": KEYS, "epochIntervalSeconds": 0.25}}})
    assert mesh["spec"]["keyTransparency"] == {"auditorKeys": KEYS, "epochIntervalSeconds": 0.25}
    assert _auth_env(mesh) == {"XCHAT_KT_AUDITOR_KEYS": ",".join(KEYS), "XCHAT_KT_EPOCH_INTERVAL_S": "0.25"}


def test_either_field_alone(render: Render, tmp_path: Path) -> None:
    only_keys = _mesh(render, tmp_path, {"mesh": {"keyTransparency": {"auditorKeys": KEYS[:1]}}})
    assert only_keys["spec"]["keyTransparency"] == {"auditorKeys": KEYS[:1]}
    only_interval = _mesh(render, tmp_path, {"mesh": {"keyTransparency": {"epochIntervalSeconds": 30}}})
    assert only_interval["spec"]["keyTransparency"] == {"epochIntervalSeconds": 30}
    assert _auth_env(only_interval) == {"XCHAT_KT_EPOCH_INTERVAL_S": "30"}


def test_production_values_list_their_auditors(render: Render) -> None:
    (mesh,) = [d for d in render(CHART / "ci" / "production-values.yaml") if d["kind"] == "XChatMesh"]
    assert len(mesh["spec"]["keyTransparency"]["auditorKeys"]) == 2
