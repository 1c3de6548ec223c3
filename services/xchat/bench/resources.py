"""What processes cost: CPU seconds and resident memory read from ``/proc``, and the machine's load.

psutil is not a dependency; ``/proc/<pid>/stat`` (utime + stime, all threads)
and ``/proc/<pid>/status`` (VmRSS) are all the bench needs. A ``CpuMeter``
snapshots a set of processes before and after a phase; the difference divided
by the messages of the phase is the per-message cost.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read().decode()
    except OSError:
        return 0.0
    # The command name (field 2) may hold spaces; fields after the closing paren are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass(frozen=True, slots=True)
class CpuSample:
    wall_s: float
    by_role: dict[str, float]

    def minus(self, earlier: CpuSample) -> CpuSample:
        return CpuSample(
            self.wall_s - earlier.wall_s, {k: v - earlier.by_role.get(k, 0.0) for k, v in self.by_role.items()}
        )

    @property
    def total_s(self) -> float:
        return sum(self.by_role.values())


class CpuMeter:
    """CPU seconds of named groups of processes (e.g. ``nats``: three pids, ``services``: three pids)."""

    def __init__(self, groups: Mapping[str, Iterable[int]]) -> None:
        self.groups = {role: tuple(pids) for role, pids in groups.items()}

    def sample(self) -> CpuSample:
        return CpuSample(
            time.monotonic(), {role: sum(cpu_seconds(p) for p in pids) for role, pids in self.groups.items()}
        )

    def rss(self) -> dict[str, int]:
        return {role: sum(rss_bytes(p) for p in pids) for role, pids in self.groups.items()}
