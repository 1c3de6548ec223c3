"""The operator's ServiceAccount can do what the operator does, and nothing else.

Installs ``operator/rbac/*.yaml`` as they are, then talks to the API server
as ``system:serviceaccount:xchat-system:xchat-operator`` (impersonation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from xchat_operator import envtest
from xchat_operator.errors import KubeError
from xchat_operator.kube import OWNED_KINDS, RESOURCES

pytestmark = pytest.mark.envtest

REPO = Path(__file__).resolve().parents[2]
SA = "system:serviceaccount:xchat-system:xchat-operator"
MESH_NS = "xchat"


@pytest.fixture(scope="module")
def as_operator(kube, envtest_env):
    for f in sorted((REPO / "operator" / "rbac").glob("*.yaml")):
        envtest.install(kube, f)
    envtest.install(kube, REPO / "operator" / "crd" / "kopf-peering-objects.yaml")
    return kube.with_headers({"Impersonate-User": SA, "Impersonate-Group": "system:serviceaccounts"})


def can(client, verb: str, resource: str, group: str = "", namespace: str | None = MESH_NS,
        subresource: str = "", name: str = "") -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                        "namespace": namespace or "", "subresource": subresource, "name": name}},
    }
    out = client.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=review)
    return bool(out["status"]["allowed"])


def forbidden(fn) -> None:
    with pytest.raises(KubeError) as err:
        fn()
    assert err.value.status == 403, err.value


def test_everything_the_operator_does_is_allowed(as_operator) -> None:
    for kind in OWNED_KINDS:
        gv, plural, _ = RESOURCES[kind]
        group = gv.split("/")[0] if "/" in gv else ""
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            assert can(as_operator, verb, plural, group), (verb, plural)
    for verb in ("get", "list", "watch", "patch"):
        assert can(as_operator, verb, "xchatmeshes", "xchat.dev")
    assert can(as_operator, "patch", "xchatmeshes", "xchat.dev", subresource="status")
    assert can(as_operator, "create", "events")
    assert can(as_operator, "list", "endpointslices", "discovery.k8s.io")
    assert can(as_operator, "patch", "kopfpeerings", "kopf.dev")
    assert can(as_operator, "patch", "clusterkopfpeerings", "kopf.dev", namespace=None, name="xchat-operator")
    assert can(as_operator, "list", "customresourcedefinitions", "apiextensions.k8s.io", namespace=None)


def test_real_calls_allowed(as_operator) -> None:
    as_operator.list("Secret", MESH_NS)
    as_operator.apply({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "rbac-probe", "namespace": MESH_NS}, "data": {"k": "v"}})
    assert as_operator.delete("ConfigMap", MESH_NS, "rbac-probe")
    as_operator.request("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/xchat-operator", body={"status": {}},
                        content_type="application/merge-patch+json")


def test_outside_rbac_is_forbidden(as_operator) -> None:
    forbidden(lambda: as_operator.list("Secret", "elsewhere"))  # Secrets of another namespace
    forbidden(lambda: as_operator.list("Secret", None))  # ... or cluster-wide
    forbidden(lambda: as_operator.create({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "escalate"}, "rules": []}))
    forbidden(lambda: as_operator.delete("PersistentVolumeClaim", MESH_NS, "data-x-nats-a-0"))  # data is never deleted
    forbidden(lambda: as_operator.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": MESH_NS},
                                          "spec": {"containers": [{"name": "c", "image": "x"}]}}))
    forbidden(lambda: as_operator.apply({"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "x", "namespace": "elsewhere"}}))
    forbidden(lambda: as_operator.request("PATCH", "/apis/kopf.dev/v1/clusterkopfpeerings/someone-else",
                                          body={"status": {}}, content_type="application/merge-patch+json"))
    assert not can(as_operator, "create", "pods", subresource="exec")
    assert not can(as_operator, "escalate", "clusterroles", "rbac.authorization.k8s.io", namespace=None)
