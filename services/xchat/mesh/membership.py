"""Changing the regions of a running local mesh: add one, drain one, remove one.

What nats-server does, and what this module therefore does itself:

- **Add.** A new server tagged ``region:<name>`` routes to the others and joins
  the JetStream meta group as a healthy peer, but no replica moves: every R3
  stream already sits in three distinct regions (``unique_tag``), so the new
  region holds nothing until a peer is removed from a stream. The other
  servers' configs are rewritten with the new routes and reloaded (SIGHUP:
  routes are reloadable), so a later restart of any of them knows every peer.
- **Drain.** The region's service process stops (its clients fail over). The
  stream leaderships its servers hold are handed over (a step-down picks a
  current follower at once; a removed leader would leave the stream to a 4-9 s
  election), the meta leadership too, then ``STREAM.PEER.REMOVE`` takes each
  of its servers out of every replicated stream and bucket. The meta leader
  re-places the replica in the one region that holds none of that stream (the
  new one), which catches up. Drained: every stream has all its replicas
  current, none in the region.
- **Remove.** The drained region's servers stop (graceful) and leave the meta
  group (``SERVER.REMOVE``, system account: without it the meta group keeps
  them as offline peers and needs one more server for its quorum); the
  remaining servers' configs lose their routes (reloaded).

``LocalMesh`` owns the processes; these functions add to and take from
``mesh.regions`` and use its process helpers. Blocking: each runs its own
event loop for the JetStream requests (call them from a worker thread in
async code).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from xchat.mesh import jsadmin
from xchat.mesh.jsadmin import JetStreamAdminError, Placement
from xchat.mesh.natsconf import NatsNode
from xchat.mesh.ports import free_port
from xchat.mesh.processes import wait_until, write_private

if TYPE_CHECKING:
    from xchat.mesh.local import LocalMesh, Region

__all__ = ["MembershipError", "Placement", "add_region", "drain_region", "reload_configs", "remove_region", "wait_meta_group"]

# Re-placing a replica copies the stream to the new region: seconds on a
# loopback mesh, bounded so a stuck move fails instead of hanging a drill.
MOVE_TIMEOUT_S = 120.0
POLL_INTERVAL_S = 0.5


class MembershipError(RuntimeError):
    """A region change could not be carried out (the message says which step and why)."""


def add_region(mesh: LocalMesh, name: str, *, prepare: Callable[[Region], None] | None = None) -> Region:
    """Adds region ``name`` (as many NATS nodes as the others) to a running mesh.

    ``prepare(region)`` runs once its ports are chosen, before any process
    starts (the drill back end creates its link proxies there). Returns once
    its servers are current members of the meta group and its services report
    SERVING.
    """
    from xchat.mesh.local import Region

    if name in mesh.regions:
        raise MembershipError(f"region {name!r} already exists")
    first = next(iter(mesh.regions.values()))
    nodes = [
        NatsNode(
            name=f"{name}{i}", region=name, host=first.nodes[0].host, client_port=free_port(),
            cluster_port=free_port(), http_port=free_port(), store_dir=mesh.workdir / "jetstream" / f"{name}{i}",
        )
        for i in range(len(first.nodes))
    ]
    region = Region(name, nodes, grpc_port=free_port(), metrics_port=free_port())
    # Rebound, never mutated: drills read the regions from other threads while this runs.
    mesh.regions = {**mesh.regions, name: region}
    try:
        if prepare is not None:
            prepare(region)
        region.nats = [mesh._nats_process(node) for node in nodes]
        for proc in region.nats:
            proc.start()
        for node in nodes:
            mesh.wait_node(node.name)
        reload_configs(mesh, [n for n in mesh.all_nodes if n.region != name])
        wait_meta_group(mesh, {n.name for n in mesh.all_nodes})
        region.services = mesh._service_process(region)
        region.services.start()
        mesh.wait_serving(name)
    except BaseException:
        for proc in [*([region.services] if region.services else []), *region.nats]:
            proc.stop()
        mesh.regions = {k: v for k, v in mesh.regions.items() if k != name}
        raise
    return region


def drain_region(mesh: LocalMesh, name: str, *, timeout: float = MOVE_TIMEOUT_S) -> list[Placement]:
    """Stops the region's services and moves every replica it holds to other regions.

    Returns the final placements. Raises ``MembershipError`` when a replica
    cannot move (an R1 stream there, no region free for it, or past ``timeout``).
    """
    region = mesh.regions[name]
    others = [r for r in mesh.regions if r != name]
    # Refused before anything changes: with no region free of a stream, nats-server
    # would drop the replica and leave the stream under-replicated.
    widest = max((p.replicas for p in asyncio.run(_placements(mesh, _urls_outside(mesh, name)))), default=1)
    if len(others) < widest:
        raise MembershipError(
            f"draining region {name} would leave R{widest} streams on {len(others)} region(s): "
            f"add a region first (each replica needs a region of its own)"
        )
    if region.services is not None:
        region.services.stop()
    # From now on the placement keeper hands no leadership to it (until remove_region forgets it).
    mesh.placement_avoid.add(name)
    try:
        return asyncio.run(_move_replicas(mesh, name, others, timeout))
    except JetStreamAdminError as exc:
        raise MembershipError(f"draining region {name}: {exc}") from exc


def remove_region(mesh: LocalMesh, name: str) -> None:
    """Stops a drained region's servers, drops them from the meta group and forgets the region."""
    region = mesh.regions[name]
    urls = _urls_outside(mesh, name)
    leaving = [n.name for n in region.nodes]
    holding = [p.stream for p in asyncio.run(_placements(mesh, urls)) if set(leaving) & set(p.peers)]
    if holding:
        raise MembershipError(f"region {name} still holds replicas of {holding}: drain it first")
    for proc in [*([region.services] if region.services else []), *region.nats]:
        proc.stop()
    mesh.regions = {k: v for k, v in mesh.regions.items() if k != name}
    mesh.placement_avoid.discard(name)
    reload_configs(mesh, mesh.all_nodes)
    if mesh.system_password is None:
        raise MembershipError(
            f"region {name} stopped, but its servers {leaving} stay offline members of the meta group: "
            "removing them needs the system account (LocalMesh(system_account=True))"
        )
    try:
        asyncio.run(_remove_servers(mesh, urls, leaving))
    except JetStreamAdminError as exc:
        raise MembershipError(f"removing region {name}: {exc}") from exc
    wait_meta_group(mesh, {n.name for n in mesh.all_nodes})


def reload_configs(mesh: LocalMesh, nodes: Iterable[NatsNode]) -> None:
    """Rewrites ``nodes``' configs for the current regions and signals a reload (SIGHUP)."""
    for node in nodes:
        region = mesh.regions[node.region]
        write_private(mesh.workdir / "nats" / f"{node.name}.conf", mesh.nats_config(node))
        index = region.nodes.index(node)
        if index < len(region.nats):
            region.nats[index].signal(signal.SIGHUP)


def wait_meta_group(mesh: LocalMesh, servers: set[str], *, timeout: float = MOVE_TIMEOUT_S) -> None:
    """Until the meta leader's group is exactly ``servers``, every peer current."""
    wait_until(
        lambda: jsadmin.meta_group(mesh)[1] == servers,
        timeout=timeout, interval=POLL_INTERVAL_S, what=f"a JetStream meta group of exactly {sorted(servers)}",
    )


def _urls_outside(mesh: LocalMesh, name: str) -> list[str]:
    return [n.client_url for r in mesh.regions.values() if r.name != name for n in r.nodes]


async def _placements(mesh: LocalMesh, urls: list[str]) -> list[Placement]:
    nc = await jsadmin.connect(mesh, urls)
    try:
        return await jsadmin.placements(nc)
    finally:
        await nc.close()


async def _move_replicas(mesh: LocalMesh, name: str, others: list[str], timeout: float) -> list[Placement]:
    leaving = [n.name for n in mesh.regions[name].nodes]
    nc = await jsadmin.connect(mesh, _urls_outside(mesh, name))
    try:
        if mesh.system_password is not None and jsadmin.meta_group(mesh)[0] in leaving:
            system = await jsadmin.connect(mesh, _urls_outside(mesh, name), system=True)
            try:
                await jsadmin.step_down_meta(system, others[0])
            finally:
                await system.close()
        deadline = time.monotonic() + timeout
        requested: set[tuple[str, str]] = set()
        while True:
            try:
                placements = await jsadmin.placements(nc)
            except (JetStreamAdminError, TimeoutError):
                # The meta group electing its new leader answers "temporarily unavailable".
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(POLL_INTERVAL_S)
                continue
            pending = [p for p in placements if not p.settled_without(leaving)]
            if not pending:
                return placements
            for p in pending:
                on_leaving = [s for s in p.peers if s in leaving]
                if p.replicas == 1 and on_leaving:
                    raise MembershipError(f"stream {p.stream} has its only replica on {on_leaving[0]}: nowhere to move it from")
                if p.leader in leaving:
                    await jsadmin.step_down_stream(nc, p.stream)
                    continue
                for server in on_leaving:
                    if (p.stream, server) not in requested:
                        await jsadmin.remove_stream_peer(nc, p.stream, server)
                        requested.add((p.stream, server))
            if time.monotonic() > deadline:
                raise MembershipError(
                    f"replicas not moved off {leaving} after {timeout:.0f}s: "
                    + "; ".join(f"{p.stream} on {list(p.peers)} (current: {list(p.current)})" for p in pending)
                )
            await asyncio.sleep(POLL_INTERVAL_S)
    finally:
        await nc.close()


async def _remove_servers(mesh: LocalMesh, urls: list[str], servers: list[str]) -> None:
    system = await jsadmin.connect(mesh, urls, system=True)
    try:
        for server in servers:
            await jsadmin.remove_server(system, server)
    finally:
        await system.close()
