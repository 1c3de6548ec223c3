"""The ``kind`` back end: a kind cluster whose nodes carry ``topology.kubernetes.io/region``.

Faults act on the node containers: ``docker kill``/``docker start`` (region
kill), ``docker pause``/``unpause`` (freeze), ``docker network disconnect``/
``connect`` from the kind network (partition: the region is cut off from
everything, clients included), ``tc netem`` inside each node container
(latency; kind node images ship iproute2). Nodes are found with kubectl;
NATS monitoring documents are read with ``kubectl exec`` into the NATS pods.

Every command goes through an injected ``Runner`` (argv -> stdout), so the
back end is unit-tested against a fake docker/kubectl.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from xchat_chaos.backend import BackendError
from xchat_chaos.monitoring import JSZ_QUERY, Redundancy, Topology, redundancy, topology

Runner = Callable[[Sequence[str]], str]
REGION_LABEL = "topology.kubernetes.io/region"
KIND_NETWORK = "kind"
NATS_SELECTOR = "app.kubernetes.io/name=nats"
SERVICES_SELECTOR = "app.kubernetes.io/part-of=xchat,app.kubernetes.io/component=services"
MONITOR_PORT = 8222
READY_TIMEOUT_S = 180.0


def run_command(argv: Sequence[str]) -> str:
    """The real runner: the command's stdout; failures raise ``BackendError``."""
    try:
        done = subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        stderr = getattr(exc, "stderr", "") or ""
        raise BackendError(f"{' '.join(argv)} failed: {exc} {stderr.strip()}") from exc
    return done.stdout


class KindBackend:
    name = "kind"

    def __init__(
        self,
        *,
        context: str = "kind-xchat",
        namespace: str = "xchat",
        endpoints: Mapping[str, str] | None = None,
        replicas: int = 3,
        runner: Runner = run_command,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.context = context
        self.namespace = namespace
        self._endpoints = dict(endpoints or {})
        self.replicas = replicas
        self._run = runner
        self._sleep = sleep
        self._nodes: dict[str, list[str]] | None = None

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
            if not nodes:
                raise BackendError(f"no kind node is labelled {REGION_LABEL} in context {self.context}")
            self._nodes = {r: sorted(n) for r, n in sorted(nodes.items())}
        return self._nodes

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self._node_map())

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
        """The cluster is provisioned outside the drill (kind + helm); check it is there."""
        self._node_map()
        missing = [r for r in self.regions if r not in self._endpoints]
        if missing:
            raise BackendError(f"no gRPC endpoint given for region(s) {missing}: pass --endpoints region=host:port,...")

    def stop(self) -> None:
        """Leaves the cluster running, but undoes any fault still in place."""
        for node in self._all_nodes():
            for argv in (["docker", "unpause", node], ["docker", "start", node], ["docker", "network", "connect", KIND_NETWORK, node]):
                try:
                    self._run(argv)
                except BackendError:
                    pass  # not paused / already running / already connected

    def endpoints(self, region: str) -> list[str]:
        order = [region, *[r for r in self.regions if r != region]]
        return [self._endpoints[r] for r in order if r in self._endpoints]

    # -- faults --------------------------------------------------------

    def _docker_each(self, verb: Sequence[str], region: str) -> None:
        for node in self.nodes(region):
            self._run(["docker", *verb, node])

    def kill_region(self, region: str) -> None:
        self._docker_each(["kill", "--signal", "KILL"], region)

    def restore_region(self, region: str) -> None:
        self._docker_each(["start"], region)
        self._wait_ready(region)

    def freeze_region(self, region: str) -> None:
        self._docker_each(["pause"], region)

    def thaw_region(self, region: str) -> None:
        self._docker_each(["unpause"], region)

    def partition_region(self, region: str) -> None:
        self._docker_each(["network", "disconnect", KIND_NETWORK], region)

    def heal_region(self, region: str) -> None:
        self._docker_each(["network", "connect", KIND_NETWORK], region)

    def add_latency(self, ms: int) -> None:
        # Every node delays its egress: each inter-node round trip grows by 2 * ms.
        for node in self._all_nodes():
            self._run(["docker", "exec", node, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", f"{ms}ms"])

    def clear_latency(self) -> None:
        for node in self._all_nodes():
            self._run(["docker", "exec", node, "tc", "qdisc", "del", "dev", "eth0", "root"])

    def kill_node(self, node: str) -> None:
        self._run(["docker", "kill", "--signal", "KILL", node])

    def start_node(self, node: str) -> None:
        self._run(["docker", "start", node])
        self._wait_node_ready(node)

    def restart_node(self, node: str) -> None:
        """Rolling restart of NATS: delete the NATS pod(s) on ``node`` and wait until ready again."""
        pods = self._pods_by_node(NATS_SELECTOR).get(node, [])
        for pod in pods:
            self._kubectl("delete", "pod", "-n", self.namespace, pod, "--wait=true")
        self._wait_pods_ready(NATS_SELECTOR)

    def restart_services(self, region: str) -> None:
        by_node = self._pods_by_node(SERVICES_SELECTOR)
        for node in self.nodes(region):
            for pod in by_node.get(node, []):
                self._kubectl("delete", "pod", "-n", self.namespace, pod, "--wait=true")
        self._wait_pods_ready(SERVICES_SELECTOR)

    def _wait_node_ready(self, node: str) -> None:
        self._kubectl("wait", "--for=condition=Ready", f"node/{node}", f"--timeout={READY_TIMEOUT_S:.0f}s")

    def _wait_ready(self, region: str) -> None:
        for node in self.nodes(region):
            self._wait_node_ready(node)
        self._wait_pods_ready(NATS_SELECTOR)
        self._wait_pods_ready(SERVICES_SELECTOR)

    def _wait_pods_ready(self, selector: str) -> None:
        self._kubectl(
            "wait", "-n", self.namespace, "--for=condition=Ready", "pod", "-l", selector, f"--timeout={READY_TIMEOUT_S:.0f}s"
        )

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
            for pod in self._pods(NATS_SELECTOR)
            if pod.get("status", {}).get("phase") == "Running"
        }

    def _server_regions(self) -> dict[str, str]:
        node_region = {n: r for r, ns in self._node_map().items() for n in ns}
        out = {}
        for pod in self._pods(NATS_SELECTOR):
            region = node_region.get(pod.get("spec", {}).get("nodeName", ""))
            if region is not None:
                out[pod["metadata"]["name"]] = region
        return out

    def _monitor(self, query: str) -> dict[str, dict[str, Any]]:
        docs = {}
        for server, pod in self._nats_pods().items():
            try:
                raw = self._kubectl(
                    "exec", "-n", self.namespace, pod, "-c", "nats", "--",
                    "wget", "-q", "-T", "2", "-O", "-", f"http://127.0.0.1:{MONITOR_PORT}{query}",
                )
                docs[server] = json.loads(raw)
            except (BackendError, ValueError):
                continue  # paused, killed or cut off: reported as not answering
        return docs

    def topology(self) -> Topology:
        return topology(self._monitor(JSZ_QUERY), self._server_regions())

    def redundancy(self) -> Redundancy:
        servers = self._server_regions()
        return redundancy(self._monitor(JSZ_QUERY), servers=servers, replicas=self.replicas, routes=self._monitor("/routez"))
