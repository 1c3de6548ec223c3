"""Side-by-side figures of two checkouts, for a busy or throttled machine (issue 18, ADR 0020).

    git archive OLD services | tar -x -C /tmp/old
    for i in 1 2; do for tree in /tmp/old/services services; do
        PYTHONPATH=$tree .venv/bin/python docs/perf/bench-ab.py 2>/dev/null; done; done

The smoke profile with 3 s closed loops, 3 s open loops (50 % of peak and
100 msg/s), one repeat and a 1,000-message backlog. Prints one JSON line per
run: the code it ran, the load average before and after, and for every SDK
phase delivered msg/s, p50/p99 ms, server and per-app client CPU µs per
message and the open-loop rate; the backlog's drain rate. Absolute figures
follow the machine (a throttled host halves them); alternate the two trees so
both see the same conditions and compare within a pair.
``group-fsync-ab.jsonl`` holds the pair that ADR 0020 cites.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

import xchat
from xchat.bench import PROFILES, run_sync

FIGURES = ("delivered_per_s", "p50_ms", "p99_ms", "server_cpu_us", "sender_cpu_us", "receiver_cpu_us", "rate_per_s")


def main() -> None:
    profile = replace(
        PROFILES["smoke"], throughput_s=3.0, open_loop_s=3.0, max_open_loop_rate=2000.0, repeats=1,
        backlog=1000, backlog_repeats=1, online_devices=10, idle_s=0.5,
    )
    load_before = os.getloadavg()[0]
    results = run_sync(profile)
    out: dict[str, Any] = {"code": xchat.__file__, "load": [round(load_before, 1), round(os.getloadavg()[0], 1)]}
    for variant, phases in results["sdk"].items():
        for phase, figures in phases.items():
            out[f"{variant}.{phase}"] = {k: round(figures.get(k) or 0, 1) for k in FIGURES}
    out["drain"] = round(results["backlog"]["drain_per_s"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
