"""The chart's alerts in a real Prometheus over a real mesh: killing a region turns them red
within seconds, and green again once it is back.

The PrometheusRule is rendered by helm from the chart as users install it; its groups become
a Prometheus rules file with every ``for:`` cut to ``FOR``. This test is about the expressions
and their wiring (metric and label names, the region label coming from the services' own
``xchat_build_info``, staleness of a dead target), not about the production delays, which
``test_chart_monitoring`` and the chart's defaults own. Prometheus scrapes each region's
services process every second with the labels a PodMonitor gives a pod (``namespace``,
``pod``); there is no operator here, so the operator's alerts stay silent by construction.

Prometheus comes from ``${XCHAT_CACHE:-~/.cache/xchat}/bin/prometheus``
(``charts/tools/build-prometheus.sh``, run by ``make tools``); without it the test skips, or
fails when ``XCHAT_REQUIRE_ENVTEST=1`` (CI).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from xchat.mesh.local import HOST, LocalMesh
from xchat.mesh.ports import free_port
from xchat.mesh.processes import Supervised, wait_until
from xchat_operator import envtest

from .conftest import REPO

BUILD_SCRIPT = REPO / "charts" / "tools" / "build-prometheus.sh"
FOR = "2s"  # every rule's `for:` here; the chart's are minutes
START_S = 30.0  # Prometheus up, every target scraped, the rules evaluated, nothing firing
FIRE_S = 30.0  # region b killed → its alert firing
RESOLVE_S = 30.0  # region b serving again → no alert left


@pytest.fixture(scope="session")
def prometheus_binary() -> Path:
    path = envtest.cache_bin_dir() / "prometheus"
    if not os.access(path, os.X_OK):
        msg = f"prometheus unavailable in {envtest.cache_bin_dir()}; run {BUILD_SCRIPT.relative_to(REPO)} (make tools)"
        if os.environ.get("XCHAT_REQUIRE_ENVTEST") == "1":
            pytest.fail(msg + " [XCHAT_REQUIRE_ENVTEST=1]")
        pytest.skip(msg)
    return path


def rules_file(rendered: list[dict[str, Any]], path: Path) -> list[str]:
    """The PrometheusRule's groups as a rules file, each ``for:`` cut to ``FOR``; returns the alert names."""
    (rule,) = [d for d in rendered if d["kind"] == "PrometheusRule"]
    groups = rule["spec"]["groups"]
    for group in groups:
        for r in group["rules"]:
            if "for" in r:
                r["for"] = FOR
    path.write_text(yaml.safe_dump({"groups": groups}))
    return [r["alert"] for g in groups for r in g["rules"] if "alert" in r]


class Prometheus:
    """A Prometheus on loopback scraping each region's services; its HTTP API as plain calls."""

    def __init__(self, binary: Path, workdir: Path, mesh: LocalMesh, rules: Path) -> None:
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        targets = [
            {"targets": [f"{HOST}:{r.metrics_port}"], "labels": {"namespace": "xchat", "pod": f"services-{name}"}}
            for name, r in mesh.regions.items()
        ]
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "xchat-services", "static_configs": targets}],
        }
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = Supervised(
            "prometheus",
            [str(binary), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address={HOST}:{port}", "--log.level=warn"],
            log_path=workdir / "prometheus.log",
        )

    def start(self) -> None:
        self.process.start()

        def ready() -> bool:
            if not self.process.alive:
                raise RuntimeError(f"prometheus exited:\n{self.process.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                    return bool(reply.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(ready, timeout=START_S, interval=0.2, what="prometheus to be ready")

    def stop(self) -> None:
        self.process.stop()

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as reply:
            body = json.load(reply)
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        return list(self.api("alerts")["alerts"])

    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.alerts() if a["state"] == "firing"]

    def vector(self, expr: str) -> dict[str, float]:
        """An instant query's result as {pod label: value}."""
        return {s["metric"].get("pod", ""): float(s["value"][1]) for s in self.api("query", query=expr)["result"]}

    def rules_ok_since(self, since: float) -> bool:
        """Every group evaluated after ``since`` and every rule healthy (an expression that errors,
        e.g. a join matching many-to-many, shows as health "err" here and would never fire)."""
        groups = self.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        errors = {r["name"]: r.get("lastError") for r in rules if r["health"] == "err"}
        assert not errors, errors
        return bool(rules) and all(r["health"] == "ok" for r in rules) and all(
            _unix(g["lastEvaluation"]) > since for g in groups)


def _unix(rfc3339: str) -> float:
    """Prometheus's timestamps (UTC, up to nanoseconds) as seconds since the epoch."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(trimmed).timestamp()


def eventually(check: Callable[[], bool], *, timeout: float, what: str, show: Callable[[], object]) -> None:
    """``wait_until`` whose timeout says what Prometheus saw last."""
    try:
        wait_until(check, timeout=timeout, interval=0.25, what=what)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; last seen: {show()}") from None


@pytest.fixture
def prometheus_over_mesh(
    prometheus_binary: Path, render: Callable[..., list[dict[str, Any]]], fresh_mesh_factory: Callable[..., LocalMesh],
    tmp_path: Path,
) -> Iterator[tuple[Prometheus, LocalMesh, list[str]]]:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"monitoring": {"prometheusRule": {"enabled": True}}}))
    alerts = rules_file(render(values), tmp_path / "rules.yaml")
    mesh = fresh_mesh_factory()
    prom = Prometheus(prometheus_binary, tmp_path / "prometheus", mesh, tmp_path / "rules.yaml")
    try:
        prom.start()
        yield prom, mesh, alerts
    finally:
        prom.stop()


def test_killing_a_region_turns_the_alerts_red_and_its_return_green(
    prometheus_over_mesh: tuple[Prometheus, LocalMesh, list[str]],
) -> None:
    prom, mesh, alerts = prometheus_over_mesh
    assert "XChatRegionServicesDown" in alerts
    pods = {f"services-{name}" for name in mesh.regions}

    # Green first, and not vacuously: every region scraped and reaching JetStream, the rules
    # evaluated on those samples, and no alert pending or firing.
    eventually(
        lambda: prom.vector("up") == dict.fromkeys(pods, 1.0) and prom.vector("xchat_store_up") == dict.fromkeys(pods, 1.0),
        timeout=START_S, what="every region scraped and its store up", show=lambda: prom.vector("up"),
    )
    scraped_at = time.time()
    eventually(lambda: prom.rules_ok_since(scraped_at) and not prom.alerts(), timeout=START_S,
               what="no alert on a healthy mesh", show=prom.alerts)

    mesh.kill_region("b")

    def region_b_down_fires() -> bool:
        return any(a["labels"].get("alertname") == "XChatRegionServicesDown" and a["labels"].get("region") == "b"
                   for a in prom.firing())

    eventually(region_b_down_fires, timeout=FIRE_S, what="XChatRegionServicesDown{region=b} firing", show=prom.alerts)
    down = [a["labels"] for a in prom.firing() if a["labels"]["alertname"] == "XChatRegionServicesDown"]
    assert down == [{"alertname": "XChatRegionServicesDown", "namespace": "xchat", "region": "b", "severity": "critical"}]

    mesh.start_region("b")
    mesh.wait_serving("b")
    eventually(lambda: not prom.alerts(), timeout=RESOLVE_S, what="every alert resolved once region b serves",
               show=prom.alerts)
