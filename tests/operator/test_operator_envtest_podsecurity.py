"""Every pod the operator creates is admitted under the ``restricted`` Pod Security Standard (real API server).

No kubelet runs under envtest, so the pods the StatefulSet and Deployment
controllers would create are built from the templates and submitted with
``dryRun=All`` into a namespace that enforces ``restricted``: admission runs for real.
"""

from __future__ import annotations

import copy

import pytest

from xchat_operator import builders
from xchat_operator.errors import KubeError
from xchat_operator.spec import parse_mesh

pytestmark = pytest.mark.envtest

RESTRICTED = "restricted"
PASSWORDS = {"auth": "pa", "keys": "pk", "relay": "pr", "mailbox": "pm", "route": "proute"}


def pods_of(spec_overrides: dict) -> list[dict]:
    spec = parse_mesh({"metadata": {"name": "ps", "namespace": RESTRICTED, "uid": "u", "generation": 1},
                       "spec": {"regions": [{"name": r} for r in "abc"], **spec_overrides}})
    pods = []
    for obj in builders.desired_objects(spec, PASSWORDS):
        if obj["kind"] not in ("StatefulSet", "Deployment"):
            continue
        pod_spec = copy.deepcopy(obj["spec"]["template"]["spec"])
        for claim in obj["spec"].get("volumeClaimTemplates") or ():  # what the StatefulSet controller adds
            pod_spec["volumes"].append({"name": claim["metadata"]["name"],
                                        "persistentVolumeClaim": {"claimName": f"{claim['metadata']['name']}-x"}})
        pods.append({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": obj["metadata"]["name"], "namespace": RESTRICTED,
                                  "labels": obj["spec"]["template"]["metadata"]["labels"]},
                     "spec": pod_spec})
    return pods


def dry_run(kube, pod: dict) -> None:
    kube.request("POST", f"/api/v1/namespaces/{RESTRICTED}/pods", body=pod, params={"dryRun": "All"})


@pytest.fixture(scope="module")
def restricted_namespace(kube, envtest_env) -> str:
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": RESTRICTED, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}}, field_manager="envtest")
    return RESTRICTED


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_every_mesh_pod_is_admitted_under_restricted(kube, restricted_namespace, tls: bool) -> None:
    pods = pods_of({"tls": {"enabled": tls}, "pods": {
        "imagePullSecrets": [{"name": "registry"}], "priorityClassName": "",
        "tolerations": [{"key": "region", "operator": "Equal", "value": "a", "effect": "NoSchedule"}]}})
    assert len(pods) == 3 + 12
    for pod in pods:
        dry_run(kube, pod)
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert pod["spec"]["imagePullSecrets"] == [{"name": "registry"}]
        assert pod["spec"]["tolerations"][0]["key"] == "region"


def test_the_namespace_really_enforces_restricted(kube, restricted_namespace) -> None:
    """The same pods without their security settings are refused: the test above can fail."""
    pod = pods_of({})[0]
    del pod["spec"]["securityContext"]
    for container in pod["spec"]["containers"]:
        container.pop("securityContext", None)
    with pytest.raises(KubeError) as err:
        dry_run(kube, pod)
    assert err.value.status == 403 and "violates PodSecurity" in str(err.value)
