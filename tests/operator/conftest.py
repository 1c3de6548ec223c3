"""Fixtures of the operator tests.

Chain: ``envtest_env`` (session: etcd + kube-apiserver, CRDs installed) →
``kube`` (admin API client) → ``operator`` (session: the operator running
in-process in a thread, standalone, watching namespace ``xchat`` with an
injectable prober) → per-test mesh helpers.

Binaries: ``${XCHAT_CACHE:-~/.cache/xchat}/bin``; if missing and Go is
installed, ``operator/envtest/build-binaries.sh`` builds them first.  Without
them the envtest tests skip — or fail when ``XCHAT_REQUIRE_ENVTEST=1`` (CI).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Short timer period for the in-process operator; must be set before the
# handlers module is imported (the kopf timer reads it at registration).
os.environ.setdefault("XCHAT_OPERATOR_RESYNC_SECONDS", "2")
os.environ.setdefault("XCHAT_OPERATOR_RESYNC_IDLE_SECONDS", "0.5")

from xchat_operator import envtest  # noqa: E402
from xchat_operator.kube import Kube  # noqa: E402
from xchat_operator.probes import Check, RegionHealth, make_default_prober  # noqa: E402
from xchat_operator.spec import SERVICE_NAMES, MeshSpec, Region  # noqa: E402
from xchat_operator.testing import NS, eventually, mesh_manifest  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "operator" / "crd"
RBAC_DIR = REPO / "operator" / "rbac"
BUILD_SCRIPT = REPO / "operator" / "envtest" / "build-binaries.sh"


def _binaries_or_skip() -> None:
    try:
        envtest.find_binaries()
        return
    except envtest.BinariesMissing as exc:
        missing = str(exc)
    if shutil.which("go"):
        # Slow (kube-apiserver ~7-30 min on 2 cores) but only once: the cache persists.
        subprocess.run(["bash", str(BUILD_SCRIPT), "etcd", "kube-apiserver", "kubectl"], check=False)
        try:
            envtest.find_binaries()
            return
        except envtest.BinariesMissing as exc:
            missing = str(exc)
    msg = f"envtest binaries unavailable ({missing}); run {BUILD_SCRIPT.relative_to(REPO)}"
    if os.environ.get("XCHAT_REQUIRE_ENVTEST") == "1":
        pytest.fail(msg + " [XCHAT_REQUIRE_ENVTEST=1]")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def envtest_env() -> Iterator[envtest.EnvTest]:
    _binaries_or_skip()
    with envtest.running() as env:
        kube = env.kube()
        for f in ("kopf-peering.yaml", "xchatmesh.yaml"):
            envtest.install(kube, CRD_DIR / f)
        for ns in (NS, "xchat-system", "xchat-ha", "elsewhere"):
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, field_manager="envtest")
        yield env


@pytest.fixture(scope="session")
def kube(envtest_env: envtest.EnvTest) -> Kube:
    return envtest_env.kube()


class FakeProber:
    """Returns results a test set per (mesh, region); otherwise the real default prober."""

    def __init__(self) -> None:
        self.results: dict[tuple[str, str], RegionHealth] = {}
        self.calls = 0
        self._real = make_default_prober(timeout=1.0)

    def set_healthy(self, mesh: str, region: str, ok: bool = True) -> None:
        c = Check(ok=ok, reason="Serving" if ok else "Unreachable")
        self.results[(mesh, region)] = RegionHealth(region=region, nats=c, services={s: c for s in SERVICE_NAMES})

    async def __call__(self, kube: Kube, spec: MeshSpec, region: Region) -> RegionHealth:
        self.calls += 1
        res = self.results.get((spec.name, region.name))
        if res is not None:
            return res
        return await self._real(kube, spec, region)


@pytest.fixture(scope="session")
def prober() -> FakeProber:
    return FakeProber()


class FakeHandover:
    """Stands in for the NATS leadership handover before a region's NATS roll (no NATS under envtest).

    Records each call as (mesh, region, the region's NATS image at that moment) and answers
    done, unless a test made a region's handover fail (``fail``).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.failing: set[tuple[str, str]] = set()
        self.kube: Kube | None = None

    def fail(self, mesh: str, region: str) -> None:
        self.failing.add((mesh, region))

    def __call__(self, spec: MeshSpec, region: Region) -> Any:
        from xchat_operator import names
        from xchat_operator.replicas import Handover

        image = ""
        if self.kube is not None:
            sts = self.kube.get("StatefulSet", spec.namespace, names.nats_statefulset(spec.name, region.name)) or {}
            containers = ((sts.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [{}]
            image = str(containers[0].get("image", ""))
        self.calls.append((spec.name, region.name, image))
        if (spec.name, region.name) in self.failing:
            return Handover(region=region.name, done=False,
                            message=f"leaders still in region {region.name} after 20s: XCHAT_MAILBOX")
        return Handover(region=region.name, done=True, message=f"no stream or meta leader in region {region.name}",
                        stepped_down=("XCHAT_MAILBOX",))


@pytest.fixture(scope="session")
def handover(kube: Kube) -> FakeHandover:
    fake = FakeHandover()
    fake.kube = kube
    return fake


@pytest.fixture(scope="session")
def operator(envtest_env: envtest.EnvTest, kube: Kube, prober: FakeProber, handover: FakeHandover) -> Iterator[None]:
    """The operator, in-process (a thread with its own event loop), namespace ``xchat``."""
    import kopf

    from xchat_operator.settings import from_env

    os.environ["KUBECONFIG"] = str(envtest_env.kubeconfig)  # kopf's login reads it
    stop, ready = threading.Event(), threading.Event()
    cfg = from_env({**os.environ, "XCHAT_OPERATOR_IDENTITY": "in-process"})
    memo = kopf.Memo(kube=kube, prober=prober, config=cfg, handover=handover)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(kopf.operator(standalone=True, namespaces=[NS], memo=memo,
                                      stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # surfaced at teardown
            errors.append(exc)

    thread = threading.Thread(target=run, name="xchat-operator", daemon=True)
    thread.start()
    assert ready.wait(30), f"operator did not start: {errors}"
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "operator thread did not stop"


@pytest.fixture
def make_mesh(kube: Kube, operator: None) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create meshes through the admin client; delete them (and wait) after the test."""
    created: list[str] = []

    def make(name: str, **kw: Any) -> dict[str, Any]:
        obj = kube.create(mesh_manifest(name, **kw))
        created.append(name)
        return dict(obj)

    yield make
    for name in created:
        kube.delete("XChatMesh", NS, name)
    for name in created:
        eventually(lambda n=name: kube.get("XChatMesh", NS, n) is None, 30, what=f"mesh {name} deleted")


