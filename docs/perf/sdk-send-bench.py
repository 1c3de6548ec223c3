"""Delivered msg/s through the public SDK with 1 and 64 sends in flight (issue 18).

One sending app in region a, one receiving app in region c, 256-byte bodies,
a local three-region mesh with TLS. The receiver acks every message after
``messages()`` yields it; the clock runs from the first send to the last
receive. Not a unit test: run it by hand on a quiet machine.

    .venv/bin/python docs/perf/sdk-send-bench.py --messages 2000 --in-flight 1 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

from xchat.client import Client
from xchat.mesh.local import LocalMesh


def _cpu_seconds() -> dict[str, float]:
    """User + system CPU of this process and of every process below it, by command name."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        stats[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    out: dict[str, float] = {}
    todo = [os.getpid()]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        name, seconds = stats.get(pid, ("?", 0.0))
        key = "bench (both SDK clients)" if pid == os.getpid() else name
        out[key] = out.get(key, 0.0) + seconds
    return out


async def run(mesh: LocalMesh, workdir: Path, count: int, in_flight: int) -> dict[str, float]:
    ca = mesh.root_certificates
    tag = secrets.token_hex(3)
    sender = await Client.open(workdir / f"s{tag}.db", mesh.endpoints("a"), root_certificates=ca)
    receiver = await Client.open(workdir / f"r{tag}.db", mesh.endpoints("c"), root_certificates=ca)
    try:
        await sender.register(f"s{tag}")
        await receiver.register(f"r{tag}")
        await sender.send(f"r{tag}", b"w" * 256)  # session set up outside the clock
        inbox = receiver.messages()
        await receiver.ack(await anext(inbox))
        body = b"x" * 256
        done = asyncio.Event()
        got = 0
        latencies: list[float] = []

        async def receive() -> None:
            nonlocal got
            async for message in inbox:
                latencies.append(time.time() * 1000 - message.sent_at_ms)
                await receiver.ack(message)
                got += 1
                if got == count:
                    done.set()
                    return

        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                await sender.send(f"r{tag}", body)

        reader = asyncio.create_task(receive())
        cpu_before = _cpu_seconds()
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        sent = time.perf_counter()
        await asyncio.wait_for(done.wait(), 600)
        end = time.perf_counter()
        cpu_after = _cpu_seconds()
        await reader
        await inbox.aclose()
        latencies.sort()
        return {
            "in_flight": in_flight,
            "messages": count,
            "send_s": round(sent - start, 3),
            "delivered_msg_s": round(count / (end - start), 1),
            "latency_p50_ms": round(latencies[len(latencies) // 2], 1),
            "latency_p99_ms": round(latencies[int(len(latencies) * 0.99)], 1),
            "cpu_us_per_msg": {k: round((cpu_after[k] - cpu_before.get(k, 0.0)) / count * 1e6) for k in cpu_after},
        }
    finally:
        await sender.close()
        await receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalMesh(Path(tmp) / "mesh", tls=True) as mesh:
        for in_flight in args.in_flight:
            print(json.dumps(asyncio.run(run(mesh, Path(tmp), args.messages, in_flight))), flush=True)


if __name__ == "__main__":
    main()
