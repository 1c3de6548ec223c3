"""The ``kind`` back end: a kind cluster whose nodes carry ``topology.kubernetes.io/region``.

Faults act on the node containers: ``docker kill``/``docker start`` (region
kill), ``docker pause``/``unpause`` (freeze), ``docker network disconnect``/
``connect`` from the kind network (partition: the region is cut off from
everything, clients included). ``tc netem`` (link latency) needs the
``sch_netem`` kernel module: where it is missing the back end says so
(``check_links``) instead of failing half-way through a drill. Nodes are found
with kubectl; NATS monitoring documents are read with ``kubectl exec`` into the
NATS pods. Pods are selected by the operator's labels
(``app.kubernetes.io/name=xchat``, ``xchat.dev/mesh=<mesh>``,
``app.kubernetes.io/component=nats|auth|keys|relay|mailbox``).

Reaching the services: the operator runs one ClusterIP Service per service and
region, so a region's endpoint is a mapping ``{"auth": .., "keys": ..,
"relay": .., "mailbox": ..}`` (what the SDK takes). Either they are given
(``endpoints``), or ``start`` exposes them itself: one NodePort Service per
service and region (``<mesh>-drill-<service>-<region>``, labelled
``app.kubernetes.io/managed-by=xchat-drill``, deleted again by ``stop``) and a
loopback forwarder per Service to ``<node IP of the region's worker>:<node
port>``. Loopback, because the mesh certificate names ``127.0.0.1`` and
``localhost`` but no node address; killing, freezing or cutting off a region
makes its forwarders fail exactly like the region's own addresses would. With
TLS on, the SDK trusts the mesh CA, read from the mesh TLS Secret's ``ca.crt``
(or given as ``root_certificates``).

Every command goes through an injected ``Runner`` (argv -> stdout), and the
forwarders through an injected factory, so the back end is unit-tested
against a fake docker/kubectl.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xchat_chaos.backend import BackendError
from xchat_chaos.forwarding import Forward, Forwarder, TcpForward
from xchat_chaos.kind_commands import (
    COMPONENT_LABEL,
    DRILL_MANAGER,
    Endpoint,
    GRPC_PORT,
    KIND_NETWORK,
    MESH_LABEL,
    NETEM_UNSUPPORTED,
    READY_TIMEOUT_S,
    REGION_LABEL,
    REGION_POD_LABEL,
    RELINK_SCRIPT,
    Runner,
    SERVICES,
    http_body,
    monitor_request,
    nats_selector,
    run_command,
    services_selector,
)
from xchat_chaos.kind_mesh import MeshEditor, placements, ready_by_workloads
from xchat_chaos.monitoring import JSZ_QUERY, Redundancy, Topology, redundancy, topology



class KindBackend:
    name = "kind"

    def __init__(
        self,
        *,
        context: str = "kind-xchat",
        namespace: str = "xchat",
        mesh: str = "xchat",
        endpoints: Mapping[str, Endpoint] | None = None,
        root_certificates: bytes | None = None,
        replicas: int = 3,
        runner: Runner = run_command,
        forwarder: Forwarder = TcpForward,
        sleep: Callable[[float], None] = time.sleep,
        release: str = "xchat",
        chart: str = "charts/xchat",
        upgrade_image_tag: str | None = None,
        upgrade_nats_tag: str | None = None,
    ) -> None:
        self.context = context
        self.namespace = namespace
        self.mesh = mesh
        self._endpoints: dict[str, Endpoint] = dict(endpoints or {})
        # Exposes the Services itself (NodePorts + loopback forwarders) when none are given.
        self._expose = not self._endpoints
        self.root_certificates = root_certificates
        self.replicas = replicas
        self._run = runner
        self._forwarder = forwarder
        self._sleep = sleep
        self._nodes: dict[str, list[str]] | None = None
        self._addresses: dict[str, str] = {}
        self._forwards: list[Forward] = []
        self._killed: dict[str, str] = {}  # name given to kill_node -> node container
        self._partitioned: dict[str, str] = {}  # node -> its address before the partition
        self.nats_selector = nats_selector(mesh)
        self.services_selector = services_selector(mesh)
        # scale-region and upgrade: spec edits and helm, waiting on the mesh's status.
        self.editor = MeshEditor(run=runner, context=context, namespace=namespace, mesh=mesh, sleep=sleep)
        self.release = release
        self.chart = chart
        self.upgrade_image_tag = upgrade_image_tag
        self.upgrade_nats_tag = upgrade_nats_tag
        # The mesh's regions (spec) once started: a node labelled for a region the
        # mesh does not have yet (scale-region's new one) is not a region of the drill.
        self._mesh_regions: list[str] | None = None

    # -- discovery -----------------------------------------------------

    def _kubectl(self, *args: str) -> str:
        return self._run(["kubectl", "--context", self.context, *args])

    def _node_map(self) -> dict[str, list[str]]:
        if self._nodes is None:
            doc = json.loads(self._kubectl("get", "nodes", "-l", REGION_LABEL, "-o", "json"))
            nodes: dict[str, list[str]] = {}
            for item in doc.get("items", []):
                region = item["metadata"]["labels"][REGION_LABEL]
                nodes.setdefault(region, []).append(item["metadata"]["name"])
                for addr in item.get("status", {}).get("addresses", []):
                    if addr.get("type") == "InternalIP":
                        self._addresses[item["metadata"]["name"]] = addr["address"]
            if not nodes:
                raise BackendError(f"no kind node is labelled {REGION_LABEL} in context {self.context}")
            self._nodes = {r: sorted(n) for r, n in sorted(nodes.items())}
        return self._nodes

    @property
    def regions(self) -> tuple[str, ...]:
        known = self._mesh_regions
        return tuple(r for r in self._node_map() if known is None or r in known)

    def nodes(self, region: str) -> list[str]:
        return list(self._node_map()[region])

    def _all_nodes(self) -> list[str]:
        return [n for ns in self._node_map().values() for n in ns]

    def _pods(self, selector: str) -> list[dict[str, Any]]:
        doc = json.loads(self._kubectl("get", "pods", "-n", self.namespace, "-l", selector, "-o", "json"))
        return list(doc.get("items", []))

    def _pods_by_node(self, selector: str) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for pod in self._pods(selector):
            node = pod.get("spec", {}).get("nodeName", "")
            out.setdefault(node, []).append(pod["metadata"]["name"])
        return out

    def start(self) -> None:
        """The cluster is provisioned outside the drill (kind + helm); check it is there and reach it."""
        self._node_map()
        try:
            self._mesh_regions = self.editor.spec_regions() or None
        except (BackendError, ValueError):
            self._mesh_regions = None  # reported with its reason by _mesh_ca below
        if self.root_certificates is None:
            self.root_certificates = self._mesh_ca()
        if self._expose:
            self._expose_services()
        missing = [r for r in self.regions if r not in self._endpoints]
        if missing:
            raise BackendError(
                f"no gRPC endpoint given for region(s) {missing}: pass --endpoints region=host:port,... "
                "or region.service=host:port,... (or none at all: the back end then exposes the Services itself)"
            )

    def stop(self) -> None:
        """Leaves the cluster running, but undoes any fault still in place and what ``start`` exposed."""
        for node in self._all_nodes():
            for argv in (["docker", "unpause", node], ["docker", "start", node]):
                try:
                    self._run(argv)
                except BackendError:
                    pass  # not paused / already running
            try:
                self._reconnect(node)
            except BackendError:
                pass  # already connected
        for forward in self._forwards:
            forward.close()
        self._forwards = []
        if self._expose:
            self._endpoints = {}
            try:
                self._kubectl(
                    "delete", "service", "-n", self.namespace, "--ignore-not-found", "--wait=false",
                    "-l", f"app.kubernetes.io/managed-by={DRILL_MANAGER},{MESH_LABEL}={self.mesh}",
                )
            except BackendError:
                pass

    def endpoints(self, region: str) -> list[Any]:
        """The region's own endpoint first; each one address or a per-service mapping."""
        order = [region, *[r for r in self.regions if r != region]]
        return [self._endpoints[r] for r in order if r in self._endpoints]

    # -- reaching the mesh from the drill host --------------------------

    def _mesh_ca(self) -> bytes | None:
        """The mesh CA (``ca.crt`` of the mesh TLS Secret), or None when the mesh runs without TLS."""
        try:
            mesh = json.loads(self._kubectl("get", "xchatmesh", "-n", self.namespace, self.mesh, "-o", "json"))
        except (BackendError, ValueError) as exc:
            raise BackendError(f"XChatMesh {self.namespace}/{self.mesh} not found in context {self.context}: {exc}") from exc
        tls = mesh.get("spec", {}).get("tls") or {}
        if not tls.get("enabled", False):
            return None
        secret_name = tls.get("secretName") or f"{self.mesh}-tls"
        secret = json.loads(self._kubectl("get", "secret", "-n", self.namespace, secret_name, "-o", "json"))
        ca = secret.get("data", {}).get("ca.crt")
        if not ca:
            raise BackendError(f"TLS Secret {self.namespace}/{secret_name} has no ca.crt")
        return base64.b64decode(ca)

    def _drill_service(self, service: str, region: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": f"{self.mesh}-drill-{service}-{region}",
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": DRILL_MANAGER,
                    MESH_LABEL: self.mesh,
                    COMPONENT_LABEL: service,
                    REGION_POD_LABEL: region,
                },
            },
            "spec": {
                "type": "NodePort",
                "selector": {MESH_LABEL: self.mesh, COMPONENT_LABEL: service, REGION_POD_LABEL: region},
                "ports": [{"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc"}],
            },
        }

    def _expose_services(self) -> None:
        """NodePort Services (ours, beside the operator's ClusterIP ones) + loopback forwarders."""
        doc = {"apiVersion": "v1", "kind": "List", "items": [
            self._drill_service(s, r) for r in self.regions for s in SERVICES
        ]}
        fd, path = tempfile.mkstemp(prefix="xchat-drill-services-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            self._kubectl("apply", "-f", path)
        finally:
            os.unlink(path)
        listing = json.loads(self._kubectl(
            "get", "service", "-n", self.namespace, "-o", "json",
            "-l", f"app.kubernetes.io/managed-by={DRILL_MANAGER},{MESH_LABEL}={self.mesh}",
        ))
        ports: dict[tuple[str, str], int] = {}
        for item in listing.get("items", []):
            labels = item["metadata"].get("labels", {})
            for port in item.get("spec", {}).get("ports", []):
                if port.get("nodePort"):
                    ports[(labels.get(REGION_POD_LABEL, ""), labels.get(COMPONENT_LABEL, ""))] = int(port["nodePort"])
        for region in self.regions:
            mapping = {}
            for service in SERVICES:
                if (region, service) not in ports:
                    raise BackendError(f"no node port for {service} in region {region}")
                forward = self._forwarder(self._target(region, ports[(region, service)]))
                self._forwards.append(forward)
                mapping[service] = forward.address
            self._endpoints[region] = mapping

    def _target(self, region: str, port: int) -> Callable[[], tuple[str, int]]:
        def target() -> tuple[str, int]:
            return self._node_address(self.nodes(region)[0]), port
        return target

    def _node_address(self, node: str) -> str:
        if node not in self._addresses:
            fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
            found = self._run(["docker", "inspect", "-f", fmt, node]).split()
            if not found:
                raise BackendError(f"kind node {node} has no address (stopped or disconnected)")
            self._addresses[node] = found[0]
        return self._addresses[node]

    def _forget_address(self, region: str) -> None:
        """A restarted or reconnected node may come back with another address."""
        for node in self.nodes(region):
            self._addresses.pop(node, None)

    # -- faults --------------------------------------------------------

    def _docker_each(self, verb: Sequence[str], region: str) -> None:
        for node in self.nodes(region):
            self._run(["docker", *verb, node])

    def kill_region(self, region: str) -> None:
        self._docker_each(["kill", "--signal", "KILL"], region)

    def restore_region(self, region: str) -> None:
        self._docker_each(["start"], region)
        self._forget_address(region)
        self._wait_ready(region)

    def freeze_region(self, region: str) -> None:
        self._docker_each(["pause"], region)

    def thaw_region(self, region: str) -> None:
        self._docker_each(["unpause"], region)

    def partition_region(self, region: str) -> None:
        for node in self.nodes(region):
            # Reconnected with the same address: the node's pod /24 is named after it.
            self._partitioned[node] = self._node_address(node)
            self._run(["docker", "network", "disconnect", KIND_NETWORK, node])

    def heal_region(self, region: str) -> None:
        for node in self.nodes(region):
            self._reconnect(node)
        self._forget_address(region)

    def _reconnect(self, node: str) -> None:
        address = self._partitioned.pop(node, None)
        ip = ["--ip", address] if address else []
        self._run(["docker", "network", "connect", *ip, KIND_NETWORK, node])
        self._run(["docker", "exec", node, "sh", "-c", RELINK_SCRIPT])

    def check_links(self) -> None:
        """Raises ``BackendError`` (``NETEM_UNSUPPORTED``) if tc netem cannot work on the nodes."""
        node = self._all_nodes()[0]
        try:
            self._run(["docker", "exec", node, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "0ms"])
        except BackendError as exc:
            raise BackendError(f"{NETEM_UNSUPPORTED}: {exc}") from exc
        self._run(["docker", "exec", node, "tc", "qdisc", "del", "dev", "eth0", "root"])

    def add_latency(self, ms: int) -> None:
        # Every node delays its egress: each inter-node round trip grows by 2 * ms.
        for node in self._all_nodes():
            try:
                self._run(["docker", "exec", node, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", f"{ms}ms"])
            except BackendError as exc:
                raise BackendError(f"{NETEM_UNSUPPORTED}: {exc}") from exc

    def clear_latency(self) -> None:
        for node in self._all_nodes():
            try:
                self._run(["docker", "exec", node, "tc", "qdisc", "del", "dev", "eth0", "root"])
            except BackendError:
                pass  # nothing was added (or the node is gone): nothing to clear

    def _node_of(self, name: str) -> str:
        """A kind node, given its name or the name of a NATS server (pod) on it."""
        if name in self._all_nodes():
            return name
        for pod in self._pods(self.nats_selector):
            if pod["metadata"]["name"] == name and pod.get("spec", {}).get("nodeName"):
                return str(pod["spec"]["nodeName"])
        raise BackendError(f"{name!r} is neither a kind node nor a NATS pod of mesh {self.mesh}")

    def kill_node(self, node: str) -> None:
        """``node``: a kind node or a NATS server name (its pod: the node it runs on is killed)."""
        container = self._node_of(node)
        self._killed[node] = container
        self._run(["docker", "kill", "--signal", "KILL", container])

    def start_node(self, node: str) -> None:
        # The pod of a killed node may be gone from the API by now: remember where it was.
        container = self._killed.pop(node, None) or self._node_of(node)
        self._run(["docker", "start", container])
        node = container
        self._addresses.pop(node, None)
        self._wait_node_ready(node)

    def restart_node(self, node: str) -> None:
        """Rolling restart of NATS: delete the NATS pod(s) on ``node`` and wait until ready again."""
        node = self._node_of(node)
        pods = self._pods_by_node(self.nats_selector).get(node, [])
        for pod in pods:
            self._kubectl("delete", "pod", "-n", self.namespace, pod, "--wait=true")
        self._wait_pods_ready(self.nats_selector)

    def restart_services(self, region: str) -> None:
        by_node = self._pods_by_node(self.services_selector)
        for node in self.nodes(region):
            for pod in by_node.get(node, []):
                self._kubectl("delete", "pod", "-n", self.namespace, pod, "--wait=true")
        self._wait_pods_ready(self.services_selector)

    def _wait_node_ready(self, node: str) -> None:
        self._kubectl("wait", "--for=condition=Ready", f"node/{node}", f"--timeout={READY_TIMEOUT_S:.0f}s")

    def _wait_ready(self, region: str) -> None:
        for node in self.nodes(region):
            self._wait_node_ready(node)
        self._wait_pods_ready(self.nats_selector)
        self._wait_pods_ready(self.services_selector)

    def _wait_pods_ready(self, selector: str) -> None:
        self._kubectl(
            "wait", "-n", self.namespace, "--for=condition=Ready", "pod", "-l", selector, f"--timeout={READY_TIMEOUT_S:.0f}s"
        )

    # -- topology changes and upgrades (xchat_chaos.kind_mesh) ------------

    def add_region(self, region: str) -> None:
        if region not in self._node_map():
            raise BackendError(
                f"no kind node is labelled {REGION_LABEL}={region}: label a worker for the new region first "
                f"(kubectl label node <worker> {REGION_LABEL}={region})"
            )
        self.editor.add_region(region)
        self._mesh_regions = self.editor.spec_regions()

    def drain_region(self, region: str) -> dict[str, list[str]]:
        self.editor.drain_region(region)
        return placements(self._monitor(JSZ_QUERY))

    def servers(self, region: str) -> list[str]:
        """The NATS server names (pods) of ``region``: what placements list (``nodes`` are kind nodes here)."""
        return sorted(s for s, r in self._server_regions().items() if r == region)

    def remove_region(self, region: str) -> None:
        self.editor.remove_region(region)
        self._mesh_regions = self.editor.spec_regions()

    def upgrade_plan(self) -> list[str | None]:
        return [None]  # one helm upgrade; the operator rolls the regions one at a time

    def upgrade(self, step: str | None) -> dict[str, Any]:
        return self.editor.upgrade(
            release=self.release, chart=self.chart, image_tag=self.upgrade_image_tag, nats_tag=self.upgrade_nats_tag
        )

    def ready_regions(self) -> list[str]:
        """From the pods' readiness (StatefulSets and Deployments), sampled often during a roll;
        the operator's per-region Ready lags behind by its probe period."""
        try:
            return ready_by_workloads(self.editor.workloads(), self.regions)
        except (BackendError, ValueError):
            return []  # the API server unreachable counts as nothing known to be ready

    # -- observation ---------------------------------------------------

    def nats_urls(self, region: str) -> list[str]:
        return []  # NATS is not exposed outside the cluster; the R3/R1 probe runs on the local back end

    def prefer_leader(self, stream: str, region: str) -> None:
        """Steps the stream leader down with a placement preference, from inside a NATS pod."""
        pods = self._nats_pods()
        if not pods:
            return
        body = json.dumps({"placement": {"tags": [f"region:{region}"]}})
        try:
            self._kubectl(
                "exec", "-n", self.namespace, next(iter(pods.values())), "-c", "nats", "--",
                "nats", "request", f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body,
            )
        except BackendError:
            pass  # best effort: the drill records where the leaders actually were

    def _nats_pods(self) -> dict[str, str]:
        """server name (pod name) -> pod, for running NATS pods."""
        return {
            pod["metadata"]["name"]: pod["metadata"]["name"]
            for pod in self._pods(self.nats_selector)
            if pod.get("status", {}).get("phase") == "Running"
        }

    def _server_regions(self) -> dict[str, str]:
        node_region = {n: r for r, ns in self._node_map().items() for n in ns}
        out = {}
        for pod in self._pods(self.nats_selector):
            region = node_region.get(pod.get("spec", {}).get("nodeName", ""))
            if region is not None:
                out[pod["metadata"]["name"]] = region
        return out

    def _monitor(self, query: str) -> dict[str, dict[str, Any]]:
        docs = {}
        for server, pod in self._nats_pods().items():
            try:
                raw = self._kubectl("exec", "-n", self.namespace, pod, "-c", "nats", "--", *monitor_request(query))
                docs[server] = json.loads(http_body(raw))
            except (BackendError, ValueError):
                continue  # paused, killed or cut off: reported as not answering
        return docs

    def topology(self) -> Topology:
        return topology(self._monitor(JSZ_QUERY), self._server_regions())

    def redundancy(self) -> Redundancy:
        servers = self._server_regions()
        return redundancy(self._monitor(JSZ_QUERY), servers=servers, replicas=self.replicas, routes=self._monitor("/routez"))
