"""Online devices held open: what N idle ``messages()`` streams cost the servers.

Registers N devices (each its own ``Client``, state file and TLS channel, as N
phones would be), measures the server processes' resident memory and CPU with
none of them connected, then opens a receive stream on every one, lets them sit
idle and measures again. Per device: the memory difference / N; idle: server
CPU over the idle window as a share of one core, next to the same figure with
no device online (the matching baseline). All clients live in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from xchat.bench.meshes import BenchMesh
from xchat.bench.resources import CpuMeter, own_cpu_seconds
from xchat.bench.stats import Figures
from xchat.client import Client, ClientError

REGISTER_CONCURRENCY = 32
# After opening, streams get this long (plus a share per device) to settle before measuring.
SETTLE_S = 2.0
SETTLE_PER_DEVICE_S = 0.002


async def _idle_cpu(meter: CpuMeter, seconds: float) -> tuple[float, float]:
    """(server CPU as a share of one core, this process's CPU share) over ``seconds`` of idling."""
    before, own = meter.sample(), own_cpu_seconds()
    await asyncio.sleep(seconds)
    cost = meter.sample().minus(before)
    return cost.total_s / cost.wall_s, (own_cpu_seconds() - own) / cost.wall_s


async def _listen(client: Client) -> None:
    with contextlib.suppress(ClientError):
        async for message in client.messages():
            await client.ack(message)


@contextlib.asynccontextmanager
async def _devices(bench: BenchMesh, state_dir: Path, count: int, prefix: str) -> AsyncIterator[list[Client]]:
    clients: list[Client] = []
    regions = ("a", "b", "c")
    try:
        for i in range(count):
            clients.append(
                await Client.open(
                    state_dir / f"{prefix}{i}.db", bench.endpoints(regions[i % 3]), root_certificates=bench.root_certificates
                )
            )
        gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def register(i: int, client: Client) -> None:
            async with gate:
                await client.register(f"{prefix}{i}", one_time_prekeys=1)

        await asyncio.gather(*(register(i, c) for i, c in enumerate(clients)))
        yield clients
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def online_devices(bench: BenchMesh, state_dir: Path, *, count: int, idle_s: float, prefix: str) -> Figures:
    meter = bench.server_meter()
    state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    async with _devices(bench, state_dir, count, prefix) as clients:
        registered_s = time.monotonic() - started
        base_rss = meter.rss()
        base_cpu, _ = await _idle_cpu(meter, idle_s)
        listeners = [asyncio.create_task(_listen(c)) for c in clients]
        try:
            await asyncio.sleep(SETTLE_S + SETTLE_PER_DEVICE_S * count)
            if any(t.done() for t in listeners):
                raise RuntimeError("online devices: a receive stream ended on its own")
            rss = meter.rss()
            idle_cpu, client_cpu = await _idle_cpu(meter, idle_s)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    return {
        "devices": float(count),
        "register_per_s": count / registered_s if registered_s > 0 else None,
        "server_rss_bytes_per_device": (sum(rss.values()) - sum(base_rss.values())) / count,
        "services_rss_bytes_per_device": (rss["services"] - base_rss["services"]) / count,
        "nats_rss_bytes_per_device": (rss["nats"] - base_rss["nats"]) / count,
        "idle_server_cpu_share": idle_cpu,
        "idle_server_cpu_share_no_devices": base_cpu,
        "idle_client_cpu_share": client_cpu,
    }
