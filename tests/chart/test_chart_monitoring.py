"""Monitoring in the chart: PodMonitors select ports that really serve /metrics, and the Grafana
dashboard queries only metrics the services and the operator export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from xchat.core.metrics import METRIC_NAMES as SERVICE_METRICS
from xchat_operator import builders
from xchat_operator.metrics import METRIC_NAMES as OPERATOR_METRICS
from xchat_operator.spec import parse_mesh

from .conftest import CHART, Render

DASHBOARD = CHART / "files" / "monitoring" / "dashboards" / "xchat.json"
PASSWORDS = {"auth": "a", "keys": "k", "relay": "r", "mailbox": "m", "bootstrap": "b", "route": "x"}


def _values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    return {name for expr in exprs for name in re.findall(r"\b(xchat_[a-z0-9_]+)\b", expr)}


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    queried = dashboard_metrics()
    assert queried, "the dashboard queries xchat metrics"
    assert queried - SERVICE_METRICS - OPERATOR_METRICS == set()
    # And it shows every service metric family (a metric nobody graphs is dead weight or a gap).
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in SERVICE_METRICS}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in queried}
    assert families - shown == set()


def test_pod_monitors_point_at_ports_that_serve_metrics(render: Render, tmp_path: Path) -> None:
    docs = render(_values(tmp_path, {"monitoring": {"podMonitor": {"enabled": True}, "natsExporter": {"enabled": True}}}))
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodMonitor"}
    mesh_cr = next(d for d in docs if d["kind"] == "XChatMesh")
    operator = next(d for d in docs if d["kind"] == "Deployment")
    assert mesh_cr["spec"]["monitoring"]["natsExporter"]["enabled"] is True

    # The mesh's pods, as the operator builds them from the rendered CR.
    mesh_cr["metadata"]["uid"] = "u"
    children = builders.desired_objects(parse_mesh(mesh_cr), PASSWORDS)
    mesh_monitor = next(m for m in monitors.values() if "xchat.dev/mesh" in m["spec"]["selector"]["matchLabels"])
    (components,) = [e["values"] for e in mesh_monitor["spec"]["selector"]["matchExpressions"]]
    assert set(components) == {"auth", "keys", "relay", "mailbox", "nats"}
    (endpoint,) = mesh_monitor["spec"]["podMetricsEndpoints"]
    for child in children:
        if child["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = child["spec"]["template"]
        if pod["metadata"]["labels"]["app.kubernetes.io/component"] in components:
            ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", ())}
            assert endpoint["port"] in ports, child["metadata"]["name"]

    operator_monitor = next(m for m in monitors.values() if m is not mesh_monitor)
    assert operator_monitor["spec"]["selector"]["matchLabels"].items() <= operator["spec"]["template"]["metadata"]["labels"].items()
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    assert {"name": "XCHAT_OPERATOR_METRICS_PORT", "value": "9090"} in container["env"]


def test_nats_pods_are_not_scraped_without_the_exporter(render: Render, tmp_path: Path) -> None:
    docs = render(_values(tmp_path, {"monitoring": {"podMonitor": {"enabled": True}}}))
    mesh_monitor = next(d for d in docs if d["kind"] == "PodMonitor" and "xchat.dev/mesh" in d["spec"]["selector"]["matchLabels"])
    assert "nats" not in mesh_monitor["spec"]["selector"]["matchExpressions"][0]["values"]
    assert "monitoring" not in next(d for d in docs if d["kind"] == "XChatMesh")["spec"]


def test_dashboard_configmap_for_grafana(render: Render, tmp_path: Path) -> None:
    assert not [d for d in render() if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]]
    docs = render(_values(tmp_path, {"monitoring": {"grafanaDashboard": {"enabled": True}}}))
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["xchat.json"]) == json.loads(DASHBOARD.read_text())


def test_log_settings_from_values_reach_the_mesh(render: Render, tmp_path: Path) -> None:
    docs = render(_values(tmp_path, {"mesh": {"logging": {"format": "json", "level": "debug"}}}))
    (mesh,) = [d for d in docs if d["kind"] == "XChatMesh"]
    assert mesh["spec"]["logging"] == {"format": "json", "level": "debug"}


def test_alerts_use_only_exported_metrics(render: Render, tmp_path: Path) -> None:
    assert not [d for d in render() if d["kind"] == "PrometheusRule"]
    docs = render(_values(tmp_path, {"monitoring": {"prometheusRule": {"enabled": True, "labels": {"release": "p"}}}}))
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {r["alert"] for r in rules} >= {"XChatRegionDown", "XChatStoreUnreachable", "XChatHighErrorRate", "XChatBacklogGrowing"}
    used = {n for r in rules for n in re.findall(r"\b(xchat_[a-z0-9_]+)\b", r["expr"])}
    assert used and used - SERVICE_METRICS - OPERATOR_METRICS == set()
    # Prometheus templates survive helm: the annotation still holds {{ $labels.region }}.
    down = next(r for r in rules if r["alert"] == "XChatRegionDown")
    assert "{{ $labels.region }}" in down["annotations"]["summary"]


def test_token_key_settings_from_values_reach_the_mesh(render: Render, tmp_path: Path) -> None:
    (default,) = [d for d in render() if d["kind"] == "XChatMesh"]
    assert parse_mesh({**default, "metadata": {"name": "m"}}).token_keys == parse_mesh(
        {"metadata": {"name": "m"}, "spec": {"regions": []}}).token_keys, "the chart's defaults are the operator's"
    values = {"mesh": {"tokenKeys": {"propagationSeconds": 90, "accessTokenLifetimeSeconds": 600, "rotateEveryDays": 30}}}
    (mesh,) = [d for d in render(_values(tmp_path, values)) if d["kind"] == "XChatMesh"]
    assert mesh["spec"]["tokenKeys"] == values["mesh"]["tokenKeys"]
    keys = parse_mesh(mesh).token_keys
    assert (keys.propagation_seconds, keys.access_token_lifetime_seconds, keys.rotate_every_days) == (90, 600, 30)
