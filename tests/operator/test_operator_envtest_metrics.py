"""The operator's /metrics against a real kube-apiserver: reconciles counted, phase and region health per mesh."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from xchat_operator import metrics
from xchat_operator.testing import NS, eventually

pytestmark = pytest.mark.envtest


@pytest.fixture
def scrape(operator: None) -> Iterator[object]:
    """Serves the in-process operator's metrics on a free port, as XCHAT_OPERATOR_METRICS_PORT does."""
    port = metrics.serve(0, "127.0.0.1")

    def read() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
        }

    yield read
    metrics.stop()


def test_reconciles_phase_and_region_health_are_exported(kube, make_mesh, prober, scrape) -> None:
    for region in ("a", "b", "c"):
        prober.set_healthy("observed", region)
    make_mesh("observed", regions=[{"name": "a"}, {"name": "b"}, {"name": "c"}])

    def value(name: str, **labels: str) -> float | None:
        want = set(labels.items())
        found = [v for (n, lbls), v in scrape().items() if n == name and want <= lbls]
        return sum(found) if found else None

    eventually(lambda: (value("xchat_operator_reconciles_total", trigger="change", result="applied") or 0) >= 1, 60,
               what="a counted reconcile")
    eventually(lambda: value("xchat_operator_mesh_phase", mesh="observed", phase="Running") == 1, 60, what="phase Running")
    assert value("xchat_operator_mesh_phase", mesh="observed", phase="Degraded") == 0
    assert value("xchat_operator_ready_regions", mesh="observed") == 3
    assert value("xchat_operator_region_healthy", mesh="observed", region="b") == 1
    assert {n for n, _ in scrape()} >= {"xchat_operator_reconcile_duration_seconds_count", "xchat_operator_region_healthy"}

    prober.set_healthy("observed", "b", ok=False)
    eventually(lambda: value("xchat_operator_region_healthy", mesh="observed", region="b") == 0, 60, what="region b down")
    eventually(lambda: value("xchat_operator_mesh_phase", mesh="observed", phase="Degraded") == 1, 60, what="phase Degraded")

    kube.delete("XChatMesh", NS, "observed")
    eventually(lambda: value("xchat_operator_mesh_phase", mesh="observed") is None, 60, what="series of a deleted mesh removed")
