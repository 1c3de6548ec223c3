"""``xchat drill --status-port``: during a drill the page shows the lost region and the delivery going on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xchat.mesh.ports import free_port

XCHAT = [sys.executable, "-m", "xchat"]
DRILL_WITHIN_S = 240.0  # start, 4 + 10 + 3 s of traffic, the checks and the report, on a loaded machine


def _snapshot(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}status.json", timeout=5) as reply:
            data: dict[str, Any] = json.load(reply)
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None  # not serving yet, or already stopped


@pytest.mark.slow
def test_the_page_shows_the_fault_and_the_delivery_rate_during_a_drill(tmp_path: Path, reap: Callable[[Path], None]) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen(
        [*XCHAT, "drill", "region-kill", "--status-port", str(port), "--no-progress", "--warmup", "4", "--fault", "10",
         "--settle", "3", "--workdir", str(tmp_path / "mesh"), "--out", str(tmp_path / "report")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    seen_down: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + DRILL_WITHIN_S
        while proc.poll() is None and time.monotonic() < deadline:
            snapshot = _snapshot(url)
            if snapshot and seen_down is None:
                down = [r["region"] for r in snapshot["regions"] if r["state"] == "down"]
                if down and (snapshot["delivery"]["delivered_per_s"] or 0) > 0:
                    seen_down = snapshot
            time.sleep(0.3)
        output = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        reap(tmp_path)  # a killed drill leaves its mesh behind
    assert f"status page: {url}" in output, output
    assert seen_down is not None, f"no snapshot showed a region down with messages delivered:\n{output}"
    lost = next(r for r in seen_down["regions"] if r["state"] == "down")
    assert lost["services"] == "UNREACHABLE" and not any(n["healthy"] for n in lost["nodes"])
    assert _snapshot(url) is None, "the page stops with the drill"
