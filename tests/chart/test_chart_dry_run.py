"""Every rendered manifest is accepted by a real kube-apiserver (server-side dry-run apply).

The apiserver (``xchat_operator.envtest``) has the chart's crds/ installed first,
as helm does, so the XChatMesh object is checked against the CRD's OpenAPI schema
and CEL rules too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import subprocess

import pytest

from xchat_operator import envtest

from .conftest import CHART, CI_VALUES, run_helm

pytestmark = pytest.mark.envtest

VALUE_SETS = [pytest.param((), id="defaults")] + [pytest.param((v,), id=v.stem) for v in CI_VALUES]
DryRun = Callable[[str], subprocess.CompletedProcess[str]]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_apiserver_accepts_rendered_manifests(render_text: Callable[..., str], dry_run: DryRun,
                                              values: tuple[Path, ...]) -> None:
    manifests = render_text(*values)
    done = dry_run(manifests)
    assert done.returncode == 0, f"kube-apiserver rejected the render:\n{done.stderr}"
    applied = [line for line in done.stdout.splitlines() if "serverside-applied" in line]
    assert len(applied) == manifests.count("\nkind: "), done.stdout


def test_apiserver_rejects_what_the_crd_forbids(render_text: Callable[..., str], dry_run: DryRun,
                                                tmp_path: Path) -> None:
    # The chart's schema keeps these out, but `mesh.patch` can still smuggle one in:
    # the CRD's CEL rules are the last line of defence.
    values = tmp_path / "values.yaml"
    values.write_text("mesh:\n  patch:\n    - {op: replace, path: /spec/durability/replicas, value: 4}\n")
    done = dry_run(render_text(values))
    assert done.returncode != 0
    assert "spec.durability.replicas" in done.stderr and "Unsupported value: 4" in done.stderr, done.stderr


def test_render_with_crds_is_accepted(render_text: Callable[..., str], dry_run: DryRun) -> None:
    done = dry_run(render_text(extra=["--include-crds"]))
    assert done.returncode == 0, done.stderr
    assert "customresourcedefinition.apiextensions.k8s.io/xchatmeshes.xchat.dev serverside-applied" in done.stdout


def test_helm_install_and_uninstall(helm: Path, chart_apiserver: envtest.EnvTest) -> None:
    """A real `helm install` (no controllers run: objects are only stored), then its NOTES and uninstall."""
    kubeconfig = ["--kubeconfig", str(chart_apiserver.kubeconfig), "--namespace", "xchat"]
    done = run_helm(helm, "install", "notes", str(CHART), *kubeconfig, "--set", "mesh.name=notes")
    assert done.returncode == 0, done.stderr
    notes = done.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n xchat get xchatmesh notes" in notes
    assert "configmap notes-endpoints" in notes
    assert "helm test notes" in notes
    assert "secret notes-tls" in notes  # how to fetch the CA the SDK must trust
    kube = chart_apiserver.kube()
    mesh = kube.request("GET", "/apis/xchat.dev/v1alpha1/namespaces/xchat/xchatmeshes/notes")
    assert mesh["spec"]["regions"][0]["natsNodes"] == 1  # stored, defaulted by the CRD schema
    assert kube.get("Deployment", "xchat", "notes-xchat-operator") is not None
    done = run_helm(helm, "uninstall", "notes", *kubeconfig)
    assert done.returncode == 0, done.stderr
    assert kube.get("Deployment", "xchat", "notes-xchat-operator") is None
