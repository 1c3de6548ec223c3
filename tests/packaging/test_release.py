"""`make release`'s artifacts, built for real into a temporary folder (charts/tools/release.sh).

Checks what a platform team checks before installing: every file is in
SHA256SUMS with the right digest (and ``sha256sum -c`` catches one changed
byte), the chart and the Python distributions carry the project's version, the
chart package holds the CRDs and renders, the proto module is complete, and the
SBOM is CycloneDX JSON naming the server and every runtime dependency it
declares. Image archives are left out (``--images`` needs images built as root,
~15 minutes: docs/chart.md). Needs pip to reach the package index (CI does) and
helm (make tools); ~1 minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "charts" / "tools" / "release.sh"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]

# Our helm is built without Kubernetes version ldflags and would assume v1.20.
KUBE_VERSION = "1.37.2"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def helm() -> Path:
    cached = Path(os.environ.get("XCHAT_CACHE", Path.home() / ".cache" / "xchat")) / "bin" / "helm"
    found = cached if os.access(cached, os.X_OK) else (Path(p) if (p := shutil.which("helm")) else None)
    if found is None:
        msg = "helm not built: operator/envtest/build-binaries.sh helm (make tools builds it)"
        if os.environ.get("XCHAT_REQUIRE_ENVTEST") == "1":
            pytest.fail(msg + " [XCHAT_REQUIRE_ENVTEST=1]")
        pytest.skip(msg)
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory, helm: Path) -> Path:
    out = tmp_path_factory.mktemp("release") / VERSION
    env = {**os.environ, "HELM": str(helm), "HELM_CACHE_HOME": "/tmp/xchat-helm/cache",
           "HELM_CONFIG_HOME": "/tmp/xchat-helm/config", "HELM_DATA_HOME": "/tmp/xchat-helm/data"}
    result = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_every_artifact_is_versioned_and_checksummed(release: Path) -> None:
    expected = {
        f"xchat_backbone-{VERSION}.tar.gz",
        f"xchat_backbone-{VERSION}-py3-none-any.whl",
        f"xchat_sdk-{VERSION}-py3-none-any.whl",
        f"xchat-{VERSION}.tgz",
        f"xchat-proto-{VERSION}.tar.gz",
        f"xchat-backbone-{VERSION}.cdx.json",
    }
    files = {p.name for p in release.iterdir()} - {"SHA256SUMS"}
    assert files == expected
    sums = dict(reversed(line.split(maxsplit=1)) for line in (release / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == expected
    for name, digest in sums.items():
        assert hashlib.sha256((release / name).read_bytes()).hexdigest() == digest, name
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=release).returncode == 0


def test_a_changed_byte_fails_the_documented_checksum_check(release: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in release.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    chart = copy / f"xchat-{VERSION}.tgz"
    data = bytearray(chart.read_bytes())
    data[len(data) // 2] ^= 0x01
    chart.write_bytes(bytes(data))
    result = subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=copy, capture_output=True, text=True)
    assert result.returncode != 0 and f"xchat-{VERSION}.tgz: FAILED" in result.stdout


def test_the_chart_package_has_the_release_version_crds_and_renders(release: Path, helm: Path) -> None:
    package = release / f"xchat-{VERSION}.tgz"
    with tarfile.open(package) as tar:
        chart = tar.extractfile("xchat/Chart.yaml").read().decode()  # type: ignore[union-attr]
        names = tar.getnames()
    assert re.search(rf"^version: {re.escape(VERSION)}$", chart, re.M)
    assert re.search(rf"^appVersion: {re.escape(VERSION)}$", chart, re.M)  # the image tag the chart defaults to
    assert {"xchat/crds/xchatmesh.yaml", "xchat/values.schema.json"} <= set(names)
    rendered = subprocess.run([str(helm), "template", "xchat", str(package), "--namespace", "xchat", "--kube-version", KUBE_VERSION],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    assert f"image: xchat:{VERSION}" in rendered.stdout


def test_the_python_distributions_carry_the_version_and_the_sdk_no_server_code(release: Path) -> None:
    with zipfile.ZipFile(release / f"xchat_backbone-{VERSION}-py3-none-any.whl") as wheel:
        meta = wheel.read(f"xchat_backbone-{VERSION}.dist-info/METADATA").decode()
        assert "License-Expression: Apache-2.0" in meta
        assert any(n.startswith("xchat/mailbox/") for n in wheel.namelist())
    with zipfile.ZipFile(release / f"xchat_sdk-{VERSION}-py3-none-any.whl") as wheel:
        top = {n.split("/")[1] for n in wheel.namelist() if n.startswith("xchat/") and n.count("/") >= 1}
        assert "client" in top and not top & {"mailbox", "relay", "auth", "keys", "core"}


def test_the_proto_module_is_complete(release: Path) -> None:
    with tarfile.open(release / f"xchat-proto-{VERSION}.tar.gz") as tar:
        names = set(tar.getnames())
    root = f"xchat-proto-{VERSION}"
    protos = {f"{root}/xchat/v1/{p.name}" for p in (REPO / "proto" / "xchat" / "v1").glob("*.proto")}
    assert {f"{root}/buf.yaml", *protos} <= names and len(protos) >= 5  # the glob found the module (attachments.proto made it 6)


def test_the_sbom_lists_the_server_and_every_runtime_dependency(release: Path) -> None:
    bom = json.loads((release / f"xchat-backbone-{VERSION}.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"].startswith("1.")
    root = bom["metadata"]["component"]
    assert (root["name"], root["version"]) == ("xchat-backbone", VERSION)
    components = {_normal(c["name"]): c for c in bom["components"]}
    declared = {_normal(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in PYPROJECT["project"]["dependencies"]}
    assert declared <= set(components), f"missing from the SBOM: {sorted(declared - set(components))}"
    for name in declared:
        component = components[name]
        assert component["version"] and component["purl"].startswith(f"pkg:pypi/{name}@"), component
    # Only what an install of the wheel brings: no installer, no test tools.
    assert not {"pip", "setuptools", "pytest", "mypy"} & set(components)
