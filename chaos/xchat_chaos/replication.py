"""The price of the replication topology: publish-ack latency of R3 vs R1, measured in place.

Two throw-away streams on the running mesh: one R1 placed in the home region,
one R3 spread over three regions by ``unique_tag``. Sequential publishes (one
in flight, as one ``Send``) give the cost per send; the difference is the
inter-region quorum round trip (plus fsync on ``sync_interval: always``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
import nats.errors
from nats.js.api import Placement, StorageType, StreamConfig

from xchat_chaos.checker import percentile

DEFAULT_SAMPLES = 150


async def _bench(nats_urls: list[str], home_region: str, samples: int) -> dict[str, dict[str, float]]:
    nc = await nats.connect(servers=nats_urls, connect_timeout=3, max_reconnect_attempts=2)
    js = nc.jetstream(timeout=10)
    out: dict[str, dict[str, float]] = {}
    try:
        for replicas in (1, 3):
            name = f"XCHAT_BENCH_R{replicas}"
            placement = Placement(tags=[f"region:{home_region}"]) if replicas == 1 else None
            with contextlib.suppress(nats.errors.Error):
                await js.delete_stream(name)
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[f"xchat.bench.r{replicas}"],
                    storage=StorageType.FILE,
                    num_replicas=replicas,
                    placement=placement,
                )
            )
            try:
                payload = b"x" * 512
                for _ in range(10):  # warm up the path and the leader
                    await js.publish(f"xchat.bench.r{replicas}", payload)
                times = []
                for _ in range(samples):
                    started = time.perf_counter()
                    await js.publish(f"xchat.bench.r{replicas}", payload)
                    times.append((time.perf_counter() - started) * 1000)
                out[f"R{replicas}"] = {
                    "p50_ms": percentile(times, 50),
                    "p99_ms": percentile(times, 99),
                    "mean_ms": sum(times) / len(times),
                    "samples": float(samples),
                }
            finally:
                with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
                    await js.delete_stream(name)
    finally:
        await nc.close()
    return out


def replication_cost(nats_urls: list[str], home_region: str, *, samples: int = DEFAULT_SAMPLES) -> dict[str, dict[str, float]]:
    """Blocking (runs its own event loop): call it from a worker thread."""
    result = asyncio.run(_bench(nats_urls, home_region, samples))
    if "R1" in result and "R3" in result:
        result["R3_minus_R1"] = {
            "p50_ms": result["R3"]["p50_ms"] - result["R1"]["p50_ms"],
            "p99_ms": result["R3"]["p99_ms"] - result["R1"]["p99_ms"],
        }
    return result


async def _step_down(nats_urls: list[str], stream: str, region: str) -> None:
    nc = await nats.connect(servers=nats_urls, connect_timeout=3, max_reconnect_attempts=2)
    try:
        body = b'{"placement":{"tags":["region:%s"]}}' % region.encode()
        with contextlib.suppress(nats.errors.Error, asyncio.TimeoutError):
            await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=5)
    finally:
        await nc.close()


def move_stream_leader(nats_urls: list[str], stream: str, region: str) -> None:
    """Asks ``stream``'s leader to step down in favour of a replica in ``region`` (best effort)."""
    asyncio.run(_step_down(nats_urls, stream, region))
