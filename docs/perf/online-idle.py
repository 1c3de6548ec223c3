"""What N idle online devices cost, beyond ``xchat bench``'s online figures (issue 18, ADR 0020).

    PYTHONPATH=services .venv/bin/python docs/perf/online-idle.py 1000 10
    PRE=60 FLAMES=/tmp/flames PYTHONPATH=services .venv/bin/python docs/perf/online-idle.py 1000 10

Runs the bench's online phase (N devices registered in crowd processes, every
one's ``messages()`` opened, the mesh of ``xchat bench``) and, while they are
online, waits PRE seconds, then measures for the given seconds: CPU per thread
of every service process and nats-server (% of one core), and with FLAMES set
a py-spy profile (raw, collapsed stacks) of region a's service process. Prints
one JSON document: the bench's online figures and the per-thread shares.

To see what the devices' apps do, run it on a copy of ``services`` whose
``bench/online.py`` configures logging in ``_crowd`` (ADR 0020 counted the
SDK's failovers that way).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from xchat.bench import online
from xchat.bench.meshes import REGIONS, BenchMesh
from xchat.bench.stats import Figures


def _thread_ticks(pid: int) -> dict[str, int]:
    """CPU clock ticks per thread name of ``pid``."""
    out: dict[str, int] = defaultdict(int)
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = open(f"/proc/{pid}/task/{tid}/stat").read()
        except FileNotFoundError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[name] += int(fields[11]) + int(fields[12])
    return out


def _nats_pids(bench: BenchMesh) -> list[int]:
    return [p.pid for r in bench.mesh.regions.values() for p in r.nats if p.pid is not None]


async def main(count: int, seconds: float) -> None:
    shares: dict[str, Any] = {}
    with BenchMesh(None) as bench:
        pids = {f"services-{r}": bench.service_pid(r) for r in REGIONS}
        pids.update({f"nats-{i}": pid for i, pid in enumerate(_nats_pids(bench))})

        async def measure() -> Figures:
            await asyncio.sleep(float(os.environ.get("PRE", "0")))
            profiler = None
            if os.environ.get("FLAMES"):
                profiler = subprocess.Popen(
                    [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record", "--pid", str(pids["services-a"]),
                     "--rate", "100", "--nonblocking", "--duration", str(int(seconds)), "--format", "raw",
                     "--output", os.path.join(os.environ["FLAMES"], "online-idle-services-a.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            before = {role: _thread_ticks(pid) for role, pid in pids.items()}
            started = time.monotonic()
            await asyncio.sleep(seconds)
            wall = time.monotonic() - started
            tick = os.sysconf("SC_CLK_TCK")
            for role, pid in pids.items():
                after = _thread_ticks(pid)
                shares[role] = {
                    name: round(100 * (ticks - before[role].get(name, 0)) / tick / wall, 2)
                    for name, ticks in after.items() if ticks > before[role].get(name, 0)
                }
            if profiler is not None:
                profiler.wait(seconds + 30)
            return {}

        figures = await online.online_devices(bench, bench.workdir / "online", count=count, idle_s=5.0, prefix="idle-", load=measure)
    print(json.dumps({"online": figures, "cpu_percent_of_a_core_by_thread": shares}, indent=1))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
