"""Rolling a new version over a running local mesh, one region at a time.

A local "new version" is the same binaries started from a changed config:
each NATS server of the region comes back tagged ``version:<v>`` (readable
in ``/varz``, so a roll can be verified), and the service process is
replaced. What it exercises is what an image change does on Kubernetes:
every process of the region stopped and started again, in the order the
operator rolls (NATS first, then the services), never two regions at once.

Per NATS server: the stream leaderships it holds, and the meta leadership,
are handed over first (a graceful step-down; a stopped leader would leave
its streams to a 4-9 s election), then a graceful stop, the new config, a
start, and a wait until ``/healthz`` passes (JetStream current on that
server) and every stream has all its replicas current again with the meta
group complete. Only then the next server, and finally the region's service
process (graceful stop and start; its clients fail over while it restarts).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xchat.mesh import jsadmin
from xchat.mesh.jsadmin import JetStreamAdminError
from xchat.mesh.processes import wait_until, write_private

if TYPE_CHECKING:
    from xchat.mesh.local import LocalMesh

CATCH_UP_TIMEOUT_S = 120.0
HANDOVER_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.5


class UpgradeError(RuntimeError):
    """A region could not be rolled (the message says which server and step)."""


@dataclass
class RegionRoll:
    """How long each step of one region's roll took (seconds)."""

    region: str
    version: str
    handover_s: dict[str, float] = field(default_factory=dict)
    nats_restart_s: dict[str, float] = field(default_factory=dict)
    catch_up_s: dict[str, float] = field(default_factory=dict)
    services_s: float = 0.0


def roll_region(mesh: LocalMesh, region: str, version: str) -> RegionRoll:
    """Replaces every process of ``region`` with ``version``; returns once it serves again
    and every stream is current with all its replicas."""
    roll = RegionRoll(region, version)
    mesh.versions[region] = version
    others = [r for r in mesh.regions if r != region]
    # The placement keeper hands no leadership to the region being rolled (its hand-over moves them away).
    mesh.placement_avoid.add(region)
    try:
        _roll_nodes(mesh, region, roll)
    finally:
        mesh.placement_avoid.discard(region)
    started = time.monotonic()
    mesh.restart_services(region)
    roll.services_s = round(time.monotonic() - started, 2)
    return roll


def _roll_nodes(mesh: LocalMesh, region: str, roll: RegionRoll) -> None:
    others = [r for r in mesh.regions if r != region]
    for node in mesh.regions[region].nodes:
        started = time.monotonic()
        asyncio.run(_hand_over(mesh, node.name, others[0] if others else region))
        roll.handover_s[node.name] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        mesh.stop_node(node.name)
        write_private(mesh.workdir / "nats" / f"{node.name}.conf", mesh.nats_config(node))
        mesh.start_node(node.name)
        roll.nats_restart_s[node.name] = round(time.monotonic() - started, 2)
        started = time.monotonic()
        wait_current(mesh)
        roll.catch_up_s[node.name] = round(time.monotonic() - started, 2)


def wait_current(mesh: LocalMesh, timeout: float = CATCH_UP_TIMEOUT_S) -> None:
    """Until the meta group holds every server and every stream has all its replicas current."""
    servers = {n.name for n in mesh.all_nodes}
    urls = [n.client_url for n in mesh.all_nodes]

    def current() -> bool:
        if jsadmin.meta_group(mesh)[1] != servers:
            return False
        try:
            placements = asyncio.run(_placements(mesh, urls))
        except (JetStreamAdminError, OSError, TimeoutError):
            return False
        return all(p.settled_without() for p in placements)

    wait_until(current, timeout=timeout, interval=POLL_INTERVAL_S, what="every stream current with all its replicas")


async def _placements(mesh: LocalMesh, urls: list[str]) -> list[jsadmin.Placement]:
    nc = await jsadmin.connect(mesh, urls)
    try:
        return await jsadmin.placements(nc)
    finally:
        await nc.close()


async def _hand_over(mesh: LocalMesh, server: str, prefer_region: str) -> None:
    """Moves every leadership ``server`` holds to another server, or fails after a bound."""
    urls = [n.client_url for n in mesh.all_nodes if n.name != server]
    nc = await jsadmin.connect(mesh, urls)
    try:
        deadline = time.monotonic() + HANDOVER_TIMEOUT_S
        while True:
            meta_leader = jsadmin.meta_group(mesh)[0]
            try:
                led = [p.stream for p in await jsadmin.placements(nc) if p.leader == server]
                if meta_leader == server and mesh.system_password is not None:
                    system = await jsadmin.connect(mesh, urls, system=True)
                    try:
                        await jsadmin.step_down_meta(system, prefer_region)
                    finally:
                        await system.close()
                for stream in led:
                    await jsadmin.step_down_stream(nc, stream)
            except (JetStreamAdminError, TimeoutError):
                led = ["?"]  # an election in progress: look again
            if not led and (meta_leader != server or mesh.system_password is None):
                return
            if time.monotonic() > deadline:
                raise UpgradeError(f"{server} still leads {led} (meta leader: {meta_leader}) after {HANDOVER_TIMEOUT_S:.0f}s")
            await asyncio.sleep(POLL_INTERVAL_S)
    finally:
        await nc.close()
