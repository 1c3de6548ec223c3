"""The fault scenarios: each an async function over a ``Drill`` (back end + workload + clock).

A scenario injects its faults inside ``drill.fault(...)`` windows and, after
undoing them, waits for ``drill.recovered(...)`` (full redundancy). It never
touches processes or the network itself: everything goes through the back
end, so the same scenario runs on every back end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xchat_chaos.monitoring import HEDGE_STREAM, MAILBOX_STREAM

if TYPE_CHECKING:
    from xchat_chaos.drill import Drill

Scenario = Callable[["Drill"], Awaitable[None]]


# How long the mesh's placement keeper (xchat.mesh.placement) may take to move the hedge
# stream's leader out of the mailbox stream's leader's region (its pass every 2 s + a hand-over).
KEEPER_BOUND_S = 10.0


async def _hard_target(d: Drill) -> str:
    """The region holding the meta leader, with every stream's leader moved there too.

    The hedge stream's leader goes there last: the mesh's placement keeper must
    move it out again (ADR 0013), within ``KEEPER_BOUND_S``; the drill records
    how long it took and then checks that sends survive the loss of the region
    holding every other leader.
    """
    topo = await d.call(d.backend.topology)
    target = topo.meta_leader_region or d.backend.regions[0]
    for _ in range(3):
        # Every leader (issue 10: "the lost region held the meta leader and every stream
        # leader"); the devices bucket is read on every send.
        away = [s for s, leader in topo.stream_leaders.items() if s != HEDGE_STREAM and topo.region_of(leader) != target]
        if topo.mailbox_leader_region == target and not away:
            break
        for stream in away or [MAILBOX_STREAM]:
            await d.call(d.backend.prefer_leader, stream, target)
        await asyncio.sleep(1.0)
        topo = await d.call(d.backend.topology)
    loop = asyncio.get_running_loop()
    moved_at = loop.time()
    if topo.region_of(topo.stream_leaders.get(HEDGE_STREAM)) != target:
        await d.call(d.backend.prefer_leader, HEDGE_STREAM, target)
    seen_together = False
    separated_after: float | None = None
    while loop.time() - moved_at < KEEPER_BOUND_S:
        await asyncio.sleep(0.25)
        topo = await d.call(d.backend.topology)
        hedge_region = topo.region_of(topo.stream_leaders.get(HEDGE_STREAM))
        seen_together = seen_together or hedge_region == target
        if hedge_region is not None and hedge_region != topo.mailbox_leader_region:
            separated_after = loop.time() - moved_at
            break
    d.note("target", target)
    d.note("hedge_leader_moved_into_target_and_seen_there", seen_together)
    d.note("keeper_separated_hedge_leader_after_s", None if separated_after is None else round(separated_after, 2))
    if separated_after is None:
        d.problems.append(
            f"the hedge stream's leader still shared region {topo.mailbox_leader_region} with the mailbox stream's "
            f"{KEEPER_BOUND_S:.0f} s after it was moved there (no placement keeper? xchat.mesh.placement)"
        )
    d.note("leaders_at_fault", {"meta": topo.meta_leader, "streams": topo.stream_leaders})
    d.note("meta_and_mailbox_leader_in_target", topo.meta_leader_region == target and topo.mailbox_leader_region == target)
    d.note(
        "every_leader_but_the_hedge_in_target",
        all(topo.region_of(leader) == target for s, leader in topo.stream_leaders.items() if s != HEDGE_STREAM),
    )
    return target


async def _region_fault(d: Drill, name: str, inject: Callable[[str], None], undo: Callable[[str], None]) -> None:
    """Shared shape: hard target, burst + a device mid-backlog at the moment of the fault."""
    target = await _hard_target(d)
    backlog = d.backlog_user(target)
    spike = asyncio.create_task(d.workload.burst(d.settings.burst))
    if backlog is not None:
        d.workload.resume_receiver(backlog, slow=d.settings.backlog_slow_s)
    await asyncio.sleep(0.3)
    async with d.fault(name, target):
        await d.call(inject, target)
        await d.hold(d.settings.fault_s)
        await d.call(undo, target)
    await spike
    await d.recovered(name)


async def region_kill(d: Drill) -> None:
    await _region_fault(d, "region-kill", d.backend.kill_region, d.backend.restore_region)


async def region_freeze(d: Drill) -> None:
    await _region_fault(d, "region-freeze", d.backend.freeze_region, d.backend.thaw_region)


async def region_partition(d: Drill) -> None:
    await _region_fault(d, "region-partition", d.backend.partition_region, d.backend.heal_region)


async def link_latency(d: Drill) -> None:
    ms = d.settings.latency_ms
    async with d.fault(f"latency+{ms}ms", None):
        await d.call(d.backend.add_latency, ms)
        d.note("replication_cost_with_latency", await d.replication_cost())
        await d.hold(d.settings.fault_s)
        await d.call(d.backend.clear_latency)
    await d.recovered("link-latency")


async def rolling_restart(d: Drill) -> None:
    for region in d.backend.regions:
        for node in d.backend.nodes(region):
            # Services keep serving through another region's node: nobody is expected to fail over.
            async with d.fault(f"restart-{node}", None):
                await d.call(d.backend.restart_node, node)
            await d.recovered(f"restart-{node}")
        async with d.fault(f"restart-services-{region}", region):
            await d.call(d.backend.restart_services, region)
        await d.hold(d.settings.step_s)


async def flapping(d: Drill) -> None:
    target = await _hard_target(d)
    for i in range(d.settings.flaps):
        async with d.fault(f"flap-{i + 1}", target):
            await d.call(d.backend.kill_region, target)
            await d.hold(d.settings.fault_s / 2)
            await d.call(d.backend.restore_region, target)
        await d.hold(d.settings.step_s)
    await d.recovered("flapping")


async def node_loss(d: Drill) -> None:
    topo = await d.call(d.backend.topology)
    victim = topo.stream_leaders.get(MAILBOX_STREAM) or d.backend.nodes(d.backend.regions[0])[0]
    d.note("target", victim)
    # One node of a region: its region keeps serving on the others, nobody fails over.
    async with d.fault(f"node-loss-{victim}", None):
        await d.call(d.backend.kill_node, victim)
        await d.hold(d.settings.fault_s)
        await d.call(d.backend.start_node, victim)
    await d.recovered("node-loss")


# The bar: an upgrade or a topology change never leaves fewer regions ready
# than a majority of an R3 stream's replicas.
MIN_READY_REGIONS = 2
READY_SAMPLE_S = 0.5
# A region counts as not ready once its probe failed on this many samples in a row (1 s):
# a one-second health probe on a loaded machine, or the moment a meta-leader hand-over
# makes JetStream's account info fail, misses once. Kubernetes marks a service pod unready
# after 3 failures 5 s apart (builders.py), so this stays far stricter than kind's view.
READY_FAILURES_IN_A_ROW = 2


class _ReadyWatch:
    """Samples the back end's ready regions every ``READY_SAMPLE_S`` while a change runs."""

    def __init__(self, d: Drill) -> None:
        self.d = d
        self.samples: list[tuple[float, int]] = []
        self.raw_lowest: int | None = None  # single samples, no failures-in-a-row rule
        self.errors: list[str] = []
        self._recent: list[set[str]] = []  # the last READY_FAILURES_IN_A_ROW samples' ready regions
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                ready = await self.d.call(self.d.backend.ready_regions)
            except Exception as exc:  # noqa: BLE001 - a probe: counted and reported, never the drill's end
                self.errors.append(f"t={self.d.now():.1f}: {exc}")
            else:
                self._recent = [*self._recent, set(ready)][-READY_FAILURES_IN_A_ROW:]
                self.raw_lowest = len(ready) if self.raw_lowest is None else min(self.raw_lowest, len(ready))
                # Ready unless its probe failed on every one of the last samples.
                self.samples.append((round(self.d.now(), 2), len(set().union(*self._recent))))
            await asyncio.sleep(READY_SAMPLE_S)

    async def __aenter__(self) -> _ReadyWatch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        counts = [n for _, n in self.samples]
        lowest = min(counts) if counts else None
        self.d.note("min_ready_regions", lowest)
        self.d.note("min_ready_regions_single_sample", self.raw_lowest)
        self.d.note("ready_regions_samples", len(counts))
        if self.errors:
            self.d.note("ready_regions_probe_errors", self.errors[:20])
        # Only the changes: (t, ready regions) whenever the count moved.
        self.d.note("ready_regions_timeline", [s for i, s in enumerate(self.samples) if i == 0 or s[1] != self.samples[i - 1][1]])
        if lowest is not None and lowest < MIN_READY_REGIONS:
            self.d.problems.append(f"only {lowest} region(s) ready at some moment (at least {MIN_READY_REGIONS} required)")


def _new_region_name(existing: tuple[str, ...]) -> str:
    return next(c for c in "defghijklmnopqrstuvwxyz" if c not in existing)


async def scale_region(d: Drill) -> None:
    """Adds a region, then drains and removes the one holding the mailbox stream leader."""
    original = d.backend.regions
    new = _new_region_name(original)
    d.note("added_region", new)
    async with _ReadyWatch(d):
        async with d.fault(f"add-region-{new}", None):
            await d.call(d.backend.add_region, new)
        await d.recovered(f"add-region-{new}")
        topo = await d.call(d.backend.topology)
        target = topo.mailbox_leader_region if topo.mailbox_leader_region in original else original[0]
        d.note("target", target)
        d.note("leaders_at_drain", {"meta": topo.meta_leader, "streams": topo.stream_leaders})
        async with d.fault(f"drain-{target}", target):
            placement = await d.call(d.backend.drain_region, target)
            await d.hold(d.settings.step_s)
        d.note("placement_after_drain", placement)
        # NATS server names, which placements list (on kind, nodes() are the docker nodes).
        new_servers = set(await d.call(getattr(d.backend, "servers", d.backend.nodes), new))
        d.note("new_region_holds_every_stream", all(new_servers & set(peers) for peers in placement.values()))
        if not all(new_servers & set(peers) for peers in placement.values()):
            d.problems.append(f"after draining {target}, region {new} does not hold a replica of every stream: {placement}")
        await d.recovered(f"drain-{target}")
        async with d.fault(f"remove-{target}", target):
            await d.call(d.backend.remove_region, target)
        await d.recovered(f"remove-{target}")
    d.note("regions_after", list(d.backend.regions))


async def upgrade(d: Drill) -> None:
    """Rolls the new version over the mesh: one region per step, or the platform's own roll."""
    rolls: list[dict[str, object]] = []
    async with _ReadyWatch(d):
        for step in await d.call(d.backend.upgrade_plan):
            name = f"upgrade-{step or 'mesh'}"
            async with d.fault(name, step):
                rolls.append(await d.call(d.backend.upgrade, step))
            await d.recovered(name)
            await d.hold(d.settings.step_s)
    d.note("upgrade_steps", rolls)


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    run: Scenario
    description: str
    nodes_per_region: int = 1
    needs_links: bool = False
    # Keep one device per region offline from the start, to be mid-backlog at the fault.
    backlog: bool = False


SCENARIOS: dict[str, ScenarioSpec] = {
    "region-kill": ScenarioSpec(region_kill, "SIGKILL every process of the leaders' region, then restart it", backlog=True),
    "region-freeze": ScenarioSpec(region_freeze, "SIGSTOP every process of the leaders' region, then SIGCONT", backlog=True),
    "region-partition": ScenarioSpec(
        region_partition, "cut every inter-region link of the leaders' region both ways, then heal", needs_links=True, backlog=True
    ),
    "link-latency": ScenarioSpec(link_latency, "add delay to every inter-region link, then remove it", needs_links=True),
    "rolling-restart": ScenarioSpec(rolling_restart, "restart every NATS node and service process, one at a time"),
    "flapping": ScenarioSpec(flapping, "kill and restart the leaders' region several times"),
    "node-loss": ScenarioSpec(node_loss, "SIGKILL the mailbox leader's node in a region of 2 nodes, then restart it", nodes_per_region=2),
    "scale-region": ScenarioSpec(
        scale_region, "add a fourth region, then drain the mailbox leader's region (replicas move) and remove it"
    ),
    "upgrade": ScenarioSpec(upgrade, "roll a new version over every region's NATS and services, one region at a time"),
}
