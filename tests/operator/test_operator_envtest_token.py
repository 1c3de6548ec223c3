"""The operator keeps working when the kubelet rotates its service account token.

A pod's token is a bound, projected token that the kubelet rewrites before it
expires; a client that read the file once is refused (401) once the old token
is no longer valid. Here the old token is invalidated the way a real one ends:
the object it is bound to goes away (its expiry would take an hour).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xchat_operator.errors import KubeError
from xchat_operator.kube import Kube
from xchat_operator.testing import NS, eventually

pytestmark = pytest.mark.envtest

ACCOUNT = "rotating-token"


def _bound_token(kube: Kube, secret: dict[str, Any]) -> str:
    request = {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": secret["metadata"]["name"],
                                    "uid": secret["metadata"]["uid"]}, "expirationSeconds": 3600},
    }
    reply = kube.request("POST", f"/api/v1/namespaces/{NS}/serviceaccounts/{ACCOUNT}/token", body=request)
    return str(reply["status"]["token"])


def _secret(kube: Kube, name: str) -> dict[str, Any]:
    return dict(kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}}))


def test_a_rotated_token_file_is_read_again(envtest_env, kube: Kube, tmp_path: Path) -> None:
    if kube.get("Namespace", None, NS) is None:
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ACCOUNT, "namespace": NS}})
    first, second = _secret(kube, "token-anchor-1"), _secret(kube, "token-anchor-2")
    token_file = tmp_path / "token"
    old_token = _bound_token(kube, first)
    token_file.write_text(old_token)
    client = Kube(host=envtest_env.url, token_file=str(token_file), ca_file=str(envtest_env.ca_file))
    assert "versions" in client.request("GET", "/api")
    # The kubelet writes the new token; the old one then stops being valid.
    token_file.write_text(_bound_token(kube, second))
    kube.delete("Secret", NS, "token-anchor-1")
    kept = Kube(host=envtest_env.url, token=old_token, ca_file=str(envtest_env.ca_file))

    def old_token_refused() -> bool:
        try:
            kept.request("GET", "/api")
        except KubeError as exc:
            return exc.status == 401
        return False

    eventually(old_token_refused, 30, what="the old token to be refused")
    # The client had the old token (read under a minute ago) and recovers by itself.
    assert "versions" in client.request("GET", "/api"), "the client read the rotated token"
