"""``xchat bench``'s SDK phases, narrowed to compare two commits on a busy machine (issue 18).

    PYTHONPATH=/path/to/checkout/services .venv/bin/python docs/perf/bench-narrow.py

The smoke profile with 3 s closed loops, 1 s open loops, one repeat and a
1,000-message backlog (~60 s on 2 cores). Prints one JSON line: the code it
ran, the load average before and after, and every SDK phase's client CPU µs per
message (sender, receiver, both) and delivered msg/s, and the backlog's. Run it
alternately for two checkouts (``git archive COMMIT services | tar -x -C DIR``)
so both see the same machine load; per-message CPU counts work, but on a
loaded machine fixed per-second costs (timers, polling, scrubs) spread over
fewer messages, so only figures taken side by side compare.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from typing import Any

import xchat
from xchat.bench import PROFILES, run_sync

FIGURES = ("sender_cpu_us", "receiver_cpu_us", "client_cpu_us", "delivered_per_s", "drain_per_s")


def main() -> None:
    profile = replace(
        PROFILES["smoke"], throughput_s=3.0, open_loop_s=1.0, repeats=1, backlog=1000, backlog_repeats=1,
        online_devices=10, idle_s=0.5,
    )
    load_before = os.getloadavg()[0]
    results = run_sync(profile)
    out: dict[str, Any] = {"code": xchat.__file__, "load": [round(load_before, 1), round(os.getloadavg()[0], 1)]}

    def walk(figures: dict[str, Any], prefix: str) -> None:
        for key, value in figures.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif key in FIGURES:
                out[prefix + key] = round(value)

    walk({"sdk": results["sdk"], "backlog": results["backlog"]}, "")
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
