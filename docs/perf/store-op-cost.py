"""What one replicated store operation costs the nats-servers (not a test: numbers, not assertions).

    .venv/bin/python docs/perf/store-op-cost.py [--count 600]

On the bench's mesh (``BenchMesh``: three regions, TLS, R3, ``sync_interval:
always``), one at a time, through an admin connection: ``count`` publishes of an
envelope-sized message (1,800 bytes) to a scratch R3 stream, then ``count / 2``
purges of that subject one sequence at a time (what a per-ack purge was), then
5 s of nothing. Reports each operation's rate and the CPU of the three
nats-servers per operation, read from ``/proc``. ADR 0008's addendum quotes it:
1,450 µs per publish and 1,533 µs per purge, against 60-75 µs per publish when
256 are in flight (the bench's windowed baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from xchat.bench.meshes import BenchMesh
from xchat.bench.resources import cpu_seconds

ENVELOPE_BYTES = 1800


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


async def main(count: int) -> None:
    with BenchMesh() as bench:
        nc = await bench.nats("a")
        try:
            js = nc.jetstream()
            await js.add_stream(name="STORE_OP_COST", subjects=["cost.>"], num_replicas=3)
            pids = [p.pid for r in bench.mesh.regions.values() for p in r.nats if p.pid is not None]
            for _ in range(50):  # warm-up: leaders elected, connections busy
                await js.publish("cost.x", b"x" * ENVELOPE_BYTES)

            cpu, started = _cpu(pids), time.monotonic()
            for _ in range(count):
                await js.publish("cost.x", b"x" * ENVELOPE_BYTES)
            cpu, took = _cpu(pids) - cpu, time.monotonic() - started
            print(f"sequential R3 publish: {count / took:.0f}/s, nats-servers {1e6 * cpu / count:.0f} us CPU per publish")

            first = (await js.stream_info("STORE_OP_COST")).state.first_seq
            purges = count // 2
            cpu, started = _cpu(pids), time.monotonic()
            for i in range(purges):
                await js.purge_stream("STORE_OP_COST", subject="cost.x", seq=first + i + 1)
            cpu, took = _cpu(pids) - cpu, time.monotonic() - started
            print(f"sequential purge: {purges / took:.0f}/s, nats-servers {1e6 * cpu / purges:.0f} us CPU per purge")

            cpu = _cpu(pids)
            await asyncio.sleep(5)
            print(f"idle: nats-servers {100 * (_cpu(pids) - cpu) / 5:.1f} % of a core")
        finally:
            await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=600, help="publishes (purges: half as many)")
    asyncio.run(main(parser.parse_args().count))
