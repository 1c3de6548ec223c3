"""The ``local`` back end: ``LocalMesh`` on this machine, link faults through toxiproxy.

Processes are started and stopped by ``xchat.mesh`` only (kill, freeze and
restart included); this module adds the proxies: every route from a node to
a node of another region dials a toxiproxy listener, so a partition disables
the proxies touching one region and latency adds toxics to all of them.
Routes inside a region stay direct.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from xchat.mesh import membership, upgrades
from xchat.mesh.local import HOST, LocalMesh, Region, free_port
from xchat.mesh.natsconf import NatsNode
from xchat.mesh.readiness import grpc_serving, nats_ready
from xchat_chaos.backend import BackendError
from xchat_chaos.monitoring import Redundancy, Topology, fetch_jsz, redundancy, topology
from xchat_chaos.replication import move_stream_leader
from xchat_chaos.toxiproxy import Toxiproxy, ToxiproxyError


def _proxy_name(src: NatsNode, dst: NatsNode) -> str:
    return f"route-{src.name}-{dst.name}"


class LocalBackend:
    name = "local"

    def __init__(
        self,
        workdir: Path,
        *,
        regions: tuple[str, ...] = ("a", "b", "c"),
        nodes_per_region: int = 1,
        replicas: int = 3,
        proxied: bool = True,
    ) -> None:
        self.workdir = workdir
        self.replicas = replicas
        self._proxy_ports: dict[str, int] = {}
        self.toxiproxy: Toxiproxy | None = Toxiproxy(workdir, host=HOST, port=free_port()) if proxied else None
        self.mesh = LocalMesh(
            workdir,
            regions=regions,
            nodes_per_region=nodes_per_region,
            replicas=replicas,
            route_url=self._route_url if proxied else None,
            # The meta API (a removed region's servers leave the meta group).
            system_account=True,
        )
        # What `upgrade` rolls out: the servers come back tagged version:<this>.
        self.upgrade_version = "2"
        self._node_region = {n.name: n.region for n in self.mesh.all_nodes}

    def _route_url(self, src: NatsNode, dst: NatsNode) -> str:
        if src.region == dst.region:
            return dst.route_url
        name = _proxy_name(src, dst)
        if name not in self._proxy_ports:
            self._proxy_ports[name] = free_port()
        return f"nats-route://{HOST}:{self._proxy_ports[name]}"

    def _cross_links(self) -> list[tuple[NatsNode, NatsNode]]:
        nodes = self.mesh.all_nodes
        return [(s, d) for s in nodes for d in nodes if s.region != d.region]

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(self.mesh.regions)

    def nodes(self, region: str) -> list[str]:
        return [n.name for n in self.mesh.regions[region].nodes]

    def start(self) -> None:
        try:
            if self.toxiproxy is not None:
                self.toxiproxy.start()
                for src, dst in self._cross_links():
                    name = _proxy_name(src, dst)
                    port = self._proxy_ports.setdefault(name, free_port())
                    self.toxiproxy.create(name, f"{HOST}:{port}", f"{dst.host}:{dst.cluster_port}")
            self.mesh.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self.mesh.stop()
        if self.toxiproxy is not None:
            self.toxiproxy.stop()

    def endpoints(self, region: str) -> list[str]:
        return self.mesh.endpoints(region)

    def kill_region(self, region: str) -> None:
        self.mesh.kill_region(region)

    def restore_region(self, region: str) -> None:
        self.mesh.start_region(region)
        self.mesh.wait_serving(region)

    def freeze_region(self, region: str) -> None:
        self.mesh.freeze_region(region)

    def thaw_region(self, region: str) -> None:
        self.mesh.thaw_region(region)

    def _proxies(self) -> Toxiproxy:
        if self.toxiproxy is None:
            raise BackendError("link faults need the proxied local back end (toxiproxy)")
        return self.toxiproxy

    def _set_region_links(self, region: str, enabled: bool) -> None:
        proxies = self._proxies()
        try:
            for src, dst in self._cross_links():
                if region in (src.region, dst.region):
                    proxies.set_enabled(_proxy_name(src, dst), enabled)
        except ToxiproxyError as exc:
            raise BackendError(str(exc)) from exc

    def partition_region(self, region: str) -> None:
        self._set_region_links(region, False)

    def heal_region(self, region: str) -> None:
        self._set_region_links(region, True)

    def add_latency(self, ms: int) -> None:
        proxies = self._proxies()
        # Half each way per proxy: a route carries both directions of one link,
        # so every inter-region round trip grows by 2 * ms.
        for src, dst in self._cross_links():
            proxies.add_latency(_proxy_name(src, dst), ms)

    def clear_latency(self) -> None:
        proxies = self._proxies()
        for src, dst in self._cross_links():
            proxies.clear_toxics(_proxy_name(src, dst))

    def kill_node(self, node: str) -> None:
        self.mesh.kill_node(node)

    def start_node(self, node: str) -> None:
        self.mesh.start_node(node)

    def restart_node(self, node: str) -> None:
        self.mesh.stop_node(node)
        self.mesh.start_node(node)

    def restart_services(self, region: str) -> None:
        self.mesh.restart_services(region)

    def nats_urls(self, region: str) -> list[str]:
        return self.mesh.nats_urls(region)

    def prefer_leader(self, stream: str, region: str) -> None:
        move_stream_leader(self.mesh.nats_urls(region), stream, region)

    def add_region(self, region: str) -> None:
        membership.add_region(self.mesh, region, prepare=self._link_region)
        self._node_region = {n.name: n.region for n in self.mesh.all_nodes}

    def _link_region(self, region: Region) -> None:
        """Proxies for every inter-region link of the new region, before its servers dial them."""
        if self.toxiproxy is None:
            return
        for src, dst in self._cross_links():
            if region.name in (src.region, dst.region):
                name = _proxy_name(src, dst)
                port = self._proxy_ports.setdefault(name, free_port())
                self.toxiproxy.create(name, f"{HOST}:{port}", f"{dst.host}:{dst.cluster_port}")

    def drain_region(self, region: str) -> dict[str, list[str]]:
        try:
            placements = membership.drain_region(self.mesh, region)
        except membership.MembershipError as exc:
            raise BackendError(str(exc)) from exc
        return {p.stream: list(p.peers) for p in placements}

    def remove_region(self, region: str) -> None:
        try:
            membership.remove_region(self.mesh, region)
        except membership.MembershipError as exc:
            raise BackendError(str(exc)) from exc
        finally:
            self._node_region = {n.name: n.region for n in self.mesh.all_nodes}

    def upgrade_plan(self) -> list[str | None]:
        return list(self.mesh.regions)

    def upgrade(self, step: str | None) -> dict[str, Any]:
        if step is None:
            raise BackendError("the local back end rolls one region per step")
        try:
            roll = upgrades.roll_region(self.mesh, step, self.upgrade_version)
        except (upgrades.UpgradeError, TimeoutError) as exc:
            raise BackendError(f"upgrading region {step}: {exc}") from exc
        # Proof the new version runs: every server of the region reports its tag (/varz).
        running = {}
        for node in self.mesh.regions[step].nodes:
            varz = fetch_jsz(self.mesh.monitor_url(node.name), query="/varz") or {}
            running[node.name] = [t for t in varz.get("tags") or [] if str(t).startswith("version:")]
            if running[node.name] != [f"version:{self.upgrade_version}"]:
                raise BackendError(f"{node.name} runs {running[node.name] or 'no version tag'} after its roll")
        return {**dataclasses.asdict(roll), "running": running}

    def ready_regions(self) -> list[str]:
        ca = self.mesh.root_certificates
        return [
            name
            for name, region in self.mesh.regions.items()
            if all(nats_ready(n) for n in region.nodes) and grpc_serving(region.endpoint, root_certificates=ca)
        ]

    def _documents(self) -> dict[str, dict[str, object]]:
        docs = {}
        for node in self.mesh.all_nodes:
            doc = fetch_jsz(self.mesh.monitor_url(node.name), timeout=1.0)
            if doc is not None:
                docs[node.name] = doc
        return docs

    def topology(self) -> Topology:
        return topology(self._documents(), self._node_region)

    def redundancy(self) -> Redundancy:
        routes = {}
        for node in self.mesh.all_nodes:
            doc = fetch_jsz(self.mesh.monitor_url(node.name), timeout=1.0, query="/routez")
            if doc is not None:
                routes[node.name] = doc
        return redundancy(self._documents(), servers=self._node_region, replicas=self.replicas, routes=routes)

    def route_count(self, node: str) -> int | None:
        """Routes ``node`` has right now (``/routez``), None when it does not answer."""
        doc = fetch_jsz(self.mesh.monitor_url(node), query="/routez")
        return None if doc is None else int(doc.get("num_routes", 0))
