"""What key transparency adds to a fetch on a real local mesh (docs/adr/0014).

    .venv/bin/python tests/client/bench_kt_lookup.py [--accounts 50] [--lookups 200]

Starts a three-region mesh, registers ``--accounts`` accounts, then times
``--lookups`` verified lookups (Auth.LookupKey + every check the SDK makes)
from a client in another region than the one that registered them, and the
SDK's own CPU per lookup (process time: proofs, signature, state write).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from xchat.client import Client
from xchat.mesh.local import LocalMesh


async def run(mesh: LocalMesh, work: Path, accounts: int, lookups: int) -> dict[str, object]:
    names = [f"kt{i}x{int(time.time())}" for i in range(accounts)]
    async with await Client.open(work / "reader.db", mesh.endpoints("b")) as reader:
        await reader.register(f"reader{int(time.time())}")
        for i, name in enumerate(names):
            async with await Client.open(work / f"{i}.db", mesh.endpoints("a")) as c:
                await c.register(name)
                await c.monitor_account()  # sealed
        wall, cpu = [], []
        for n in range(lookups):
            name = names[n % accounts]
            t0, c0 = time.perf_counter(), time.process_time()
            await reader._transparency.lookup(name)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1e6)
        head = reader._transparency.last_epoch
    return {
        "accounts": accounts,
        "lookups": lookups,
        "epoch": head.epoch if head else None,
        "lookup_ms": {"median": round(statistics.median(wall), 2), "p90": round(sorted(wall)[int(len(wall) * 0.9)], 2)},
        "sdk_cpu_us_per_lookup": {"median": round(statistics.median(cpu)), "p90": round(sorted(cpu)[int(len(cpu) * 0.9)])},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kt-bench-") as tmp, LocalMesh(Path(tmp) / "mesh") as mesh:
        print(json.dumps(asyncio.run(run(mesh, Path(tmp), args.accounts, args.lookups)), indent=1))


if __name__ == "__main__":
    main()
