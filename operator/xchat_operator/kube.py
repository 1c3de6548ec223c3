"""The operator's small Kubernetes API adapter.

Server-side apply (``application/apply-patch+yaml``, field manager
``xchat-operator``, ``force=true``) makes every write idempotent and resets
drifted fields; ``get``/``list``/``delete``/``create`` cover the rest.

Connection details come from the ``kubernetes`` package's config loaders
(in-cluster, then kubeconfig), the HTTP goes through ``urllib3``; the
transport is injectable (``http=``) for tests.  Foreign errors are translated
here, in one place, into :class:`~.errors.KubeError` (chained).
"""

from __future__ import annotations

import dataclasses
import json
import os
import ssl
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import urllib3

from .bearer import BearerToken
from .errors import KubeConflict, KubeError

FIELD_MANAGER = "xchat-operator"
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
REQUEST_TIMEOUT_SECONDS = 15.0  # a slow API server should surface as a retry, not a hang

#: kind -> (API group/version, plural, namespaced)
RESOURCES: Mapping[str, tuple[str, str, bool]] = {
    "ConfigMap": ("v1", "configmaps", True),
    "Secret": ("v1", "secrets", True),
    "Service": ("v1", "services", True),
    "Event": ("v1", "events", True),
    "PersistentVolumeClaim": ("v1", "persistentvolumeclaims", True),
    "Endpoints": ("v1", "endpoints", True),
    "Pod": ("v1", "pods", True),
    "Namespace": ("v1", "namespaces", False),
    "ServiceAccount": ("v1", "serviceaccounts", True),
    "StatefulSet": ("apps/v1", "statefulsets", True),
    "Deployment": ("apps/v1", "deployments", True),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets", True),
    "EndpointSlice": ("discovery.k8s.io/v1", "endpointslices", True),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies", True),
    "XChatMesh": ("xchat.dev/v1alpha1", "xchatmeshes", True),
    "Role": ("rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "CustomResourceDefinition": ("apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    "KopfPeering": ("kopf.dev/v1", "kopfpeerings", True),
    "ClusterKopfPeering": ("kopf.dev/v1", "clusterkopfpeerings", False),
}

#: kinds the operator creates for a mesh and prunes when no longer desired
OWNED_KINDS: tuple[str, ...] = (
    "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget", "NetworkPolicy",
)


def collection_path(kind: str, namespace: str | None) -> str:
    try:
        gv, plural, namespaced = RESOURCES[kind]
    except KeyError as exc:
        raise KubeError(f"unknown kind {kind}", status=0) from exc
    base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
    if namespaced and namespace:
        return f"{base}/namespaces/{namespace}/{plural}"
    return f"{base}/{plural}"


def object_path(kind: str, namespace: str | None, name: str) -> str:
    return f"{collection_path(kind, namespace)}/{name}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Connection:
    host: str
    token: str | None = None
    token_file: str | None = None  # read again as the kubelet rotates it (in a pod)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True


def load_connection(kubeconfig: str | None = None) -> Connection:
    """Connection details: in-cluster service account, else ``kubeconfig`` (or ``$KUBECONFIG``)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    token_file = None
    try:
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        token_file = SERVICE_ACCOUNT_TOKEN
    except config.ConfigException:
        # Pass the path explicitly: the kubernetes package reads $KUBECONFIG only at its import.
        path = kubeconfig or os.environ.get("KUBECONFIG") or None
        config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    # The key's name differs between kubernetes client generations.
    raw = dict(cfg.api_key or {})
    token = raw.get("BearerToken") or raw.get("authorization") or None
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return Connection(host=cfg.host, token=token, token_file=token_file, ca_file=cfg.ssl_ca_cert,
                      cert_file=cfg.cert_file, key_file=cfg.key_file, verify=bool(cfg.verify_ssl))


class Kube:
    """Blocking API client; one per operator process (urllib3 pools are thread-safe)."""

    def __init__(
        self,
        *,
        host: str,
        token: str | None = None,
        token_file: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        verify: bool = True,
        headers: Mapping[str, str] | None = None,
        http: urllib3.PoolManager | None = None,
    ) -> None:
        self.host = host.rstrip("/")
        self._token = BearerToken(token=token, token_file=token_file)
        self._headers = dict(headers or {})
        if http is None:
            ctx = ssl.create_default_context(cafile=ca_file) if verify else ssl._create_unverified_context()
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file)
            http = urllib3.PoolManager(ssl_context=ctx, maxsize=8, retries=False,
                                       timeout=urllib3.Timeout(total=REQUEST_TIMEOUT_SECONDS))
        self._http = http

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster service account if present, otherwise the kubeconfig."""
        c = load_connection(kubeconfig)
        return cls(host=c.host, token=c.token, token_file=c.token_file, ca_file=c.ca_file, cert_file=c.cert_file,
                   key_file=c.key_file, verify=c.verify)

    def with_headers(self, headers: Mapping[str, str]) -> Kube:
        """Same connection, extra headers (e.g. ``Impersonate-User`` in tests)."""
        clone = Kube.__new__(Kube)
        clone.host, clone._token, clone._http = self.host, self._token, self._http
        clone._headers = {**self._headers, **headers}
        return clone

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        url = self.host + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body).encode()
        resp = self._send(method, url, path, data, content_type)
        if resp.status == 401 and self._token.rotates:
            self._token.refresh()  # rotated by the kubelet since we last read it
            resp = self._send(method, url, path, data, content_type)
        payload: Any = None
        if resp.data:
            try:
                payload = json.loads(resp.data)
            except ValueError:
                payload = resp.data.decode(errors="replace")
        if resp.status >= 400:
            message = payload.get("message", "") if isinstance(payload, dict) else str(payload)
            reason = payload.get("reason", "") if isinstance(payload, dict) else ""
            err = KubeConflict if resp.status == 409 else KubeError
            raise err(f"{method} {path}: {resp.status} {message}", status=resp.status, reason=reason)
        return payload

    def _send(self, method: str, url: str, path: str, data: bytes | None, content_type: str) -> Any:
        headers = {"Accept": "application/json", **self._headers}
        token = self._token.value()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if data is not None:
            headers["Content-Type"] = content_type
        try:
            return self._http.request(method, url, body=data, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise KubeError(f"{method} {path}: {exc}", status=0) from exc

    # --- conveniences -------------------------------------------------------

    def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> Any:
        meta = obj["metadata"]
        path = object_path(str(obj["kind"]), meta.get("namespace"), meta["name"])
        return self.request("PATCH", path, body=obj, content_type="application/apply-patch+yaml",
                            params={"fieldManager": field_manager, "force": "true"})

    def get(self, kind: str, namespace: str | None, name: str) -> Any | None:
        try:
            return self.request("GET", object_path(kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, kind: str, namespace: str | None, *, labels: Mapping[str, str] | None = None) -> list[Any]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        out = self.request("GET", collection_path(kind, namespace), params=params)
        return list(out.get("items") or [])

    def create(self, obj: Mapping[str, Any]) -> Any:
        return self.request("POST", collection_path(str(obj["kind"]), obj["metadata"].get("namespace")), body=obj)

    def delete(self, kind: str, namespace: str | None, name: str, *, propagation: str = "Background") -> bool:
        """Delete; ``False`` when it was already gone."""
        try:
            self.request("DELETE", object_path(kind, namespace, name),
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation})
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: Mapping[str, Any],
                    *, subresource: str = "", field_manager: str | None = None) -> Any:
        path = object_path(kind, namespace, name) + (f"/{subresource}" if subresource else "")
        params = {"fieldManager": field_manager} if field_manager else None
        return self.request("PATCH", path, body=patch, content_type="application/merge-patch+json", params=params)


def apply_all(kube: Kube, objs: Iterable[Mapping[str, Any]]) -> int:
    n = 0
    for obj in objs:
        kube.apply(obj)
        n += 1
    return n
