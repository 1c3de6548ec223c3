"""Fixtures of the chart tests: the real helm binary, rendering, and a real kube-apiserver.

Chain: ``helm`` (session: path of the helm binary) → ``render`` (values files →
parsed manifests) ; ``chart_apiserver`` (session: etcd + kube-apiserver from
``xchat_operator.envtest``, the chart's CRDs installed, namespaces made) →
``dry_run`` (server-side apply with ``--dry-run=server`` through the real kubectl).

Binaries come from ``${XCHAT_CACHE:-~/.cache/xchat}/bin``; if helm is missing and Go
is installed, ``operator/envtest/build-binaries.sh helm`` builds it once. Without
them the tests skip with the reason, or fail when ``XCHAT_REQUIRE_ENVTEST=1`` (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from xchat_operator import envtest

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "xchat"
BUILD_SCRIPT = REPO / "operator" / "envtest" / "build-binaries.sh"
# Our helm is built without Kubernetes version ldflags and would assume v1.20;
# render for the Kubernetes the envtest apiserver runs.
KUBE_VERSION = "1.37.2"
RELEASE, NAMESPACE = "xchat", "xchat"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
BAD_VALUES = sorted((CHART / "bad-values").glob("*.yaml"))
# Namespaces the ci/ values files put objects in.
NAMESPACES = ("xchat", "team-a", "team-b", "team-c")


def _unavailable(msg: str) -> None:
    if os.environ.get("XCHAT_REQUIRE_ENVTEST") == "1":
        pytest.fail(msg + " [XCHAT_REQUIRE_ENVTEST=1]")
    pytest.skip(msg)


def _tool(name: str) -> Path | None:
    cached = envtest.cache_bin_dir() / name
    if os.access(cached, os.X_OK):
        return cached
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture(scope="session")
def helm() -> Path:
    path = _tool("helm")
    if path is None and shutil.which("go"):
        subprocess.run(["bash", str(BUILD_SCRIPT), "helm"], check=False)
        path = _tool("helm")
    if path is None:
        _unavailable(f"helm binary unavailable in {envtest.cache_bin_dir()} or PATH and could not be built; "
                     f"run {BUILD_SCRIPT.relative_to(REPO)} helm")
    assert path is not None
    return path


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/xchat-helm/cache", "HELM_CONFIG_HOME": "/tmp/xchat-helm/config",
           "HELM_DATA_HOME": "/tmp/xchat-helm/data"}
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=60, env=env)


Render = Callable[..., list[dict[str, Any]]]


@pytest.fixture(scope="session")
def render_text(helm: Path) -> Callable[..., str]:
    def render_text(*values: Path, namespace: str = NAMESPACE, extra: Sequence[str] = ()) -> str:
        args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
        for v in values:
            args += ["--values", str(v)]
        done = run_helm(helm, *args, *extra)
        assert done.returncode == 0, f"helm template failed for {[v.name for v in values]}:\n{done.stderr}"
        return done.stdout

    return render_text


@pytest.fixture(scope="session")
def render(render_text: Callable[..., str]) -> Render:
    def render(*values: Path, **kwargs: Any) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all(render_text(*values, **kwargs)) if d]

    return render


@pytest.fixture(scope="session")
def kubectl() -> Path:
    path = _tool("kubectl")
    if path is None:
        _unavailable(f"kubectl unavailable; run {BUILD_SCRIPT.relative_to(REPO)} kubectl")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def chart_apiserver(kubectl: Path) -> Iterator[envtest.EnvTest]:
    """etcd + kube-apiserver with the chart's own crds/ installed (as helm does: CRDs first)."""
    try:
        envtest.find_binaries()
    except envtest.BinariesMissing as exc:
        if shutil.which("go"):
            subprocess.run(["bash", str(BUILD_SCRIPT), "etcd", "kube-apiserver", "kubectl"], check=False)
        try:
            envtest.find_binaries()
        except envtest.BinariesMissing:
            _unavailable(f"envtest binaries unavailable ({exc})")
    with envtest.running() as env:
        kube = env.kube()
        for crd in sorted((CHART / "crds").glob("*.yaml")):
            envtest.install(kube, crd)
        # The Prometheus Operator's PodMonitor, as a schemaless stand-in (ci/overrides enables it).
        stub = REPO / "tests" / "chart" / "podmonitor-crd.yaml"
        envtest.install(kube, stub)
        for ns in NAMESPACES:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, field_manager="chart-tests")
        yield env


@pytest.fixture(scope="session")
def dry_run(chart_apiserver: envtest.EnvTest, kubectl: Path) -> Callable[[str], subprocess.CompletedProcess[str]]:
    def dry_run(manifests: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(kubectl), "--kubeconfig", str(chart_apiserver.kubeconfig), "apply", "--server-side",
             "--dry-run=server", "--field-manager=helm", "-f", "-"],
            input=manifests, capture_output=True, text=True, timeout=60,
        )

    return dry_run
