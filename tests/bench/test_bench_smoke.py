"""``xchat bench`` as CI runs it: the smoke profile completes and reports every section.

Checks the shape and that each figure is a positive number, never the values
(the machine is shared and noisy; docs/perf/ keeps the measured results).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xchat.mesh.leftovers import kill, processes_of

XCHAT = [sys.executable, "-m", "xchat"]
PHASES = ("closed_1", "closed_64", "open_100", "open_half_peak")
POSITIVE_SDK = ("delivered_per_s", "p50_ms", "p99_ms")
# CPU per message comes from the processes' CPU clocks, which tick every 10 ms: a short
# smoke phase on a process that did little (NATS, mostly) can read 0 honestly.
CPU_SDK = ("server_cpu_us", "nats_cpu_us", "client_cpu_us", "sender_cpu_us")

pytestmark = pytest.mark.slow


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and value > 0


def test_smoke_profile_reports_every_section(tmp_path: Path) -> None:
    out, workdir = tmp_path / "bench.json", tmp_path / "work"
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*XCHAT, "bench", "--profile", "smoke", "--json", str(out), "--workdir", str(workdir)],
            capture_output=True, text=True, timeout=240,
        )
    finally:
        leftovers = processes_of(workdir)
        kill(leftovers)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not leftovers, "the bench left mesh processes behind"
    assert "Traceback" not in result.stderr
    elapsed = time.monotonic() - started

    report = json.loads(out.read_text())
    assert report["profile"] == "smoke" and report["schema"] == 1
    assert len(report["machine"]["load_average_before"]) == 3

    for name in ("jetstream_256", "jetstream_16k", "grpc_256", "grpc_16k"):
        baseline = report["baselines"][name]
        assert baseline and all(_positive(v) for v in baseline.values()), (name, baseline)

    assert set(report["sdk"]) >= {"cross_region_256", "same_region_256", "cross_region_16k"}
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line][:5]
    for variant, phases in report["sdk"].items():
        assert set(phases) >= set(PHASES[:3]), variant
        for phase, figures in phases.items():
            for figure in POSITIVE_SDK:
                assert _positive(figures.get(figure)), (variant, phase, figure, figures, warnings)
            for figure in CPU_SDK:
                assert isinstance(figures.get(figure), (int, float)) and figures[figure] >= 0, (variant, phase, figure, figures)
            assert figures["client_cpu_us"] + figures["server_cpu_us"] > 0, (variant, phase, "no CPU measured at all", figures)
            # A stored and replicated envelope takes several NATS messages (publish, Raft, read).
            assert figures.get("nats_msgs_per_message", 0) >= 1, (variant, phase, figures)
        for phase in ("open_100",):
            assert _positive(phases[phase]["p999_ms"]) and _positive(phases[phase]["rate_per_s"])
    assert "open_half_peak" in report["sdk"]["cross_region_256"]

    backlog = report["backlog"]
    for figure in ("queued", "drain_per_s", "stored_bytes_per_message", "client_cpu_us"):
        assert _positive(backlog[figure]), (figure, backlog)
    # A 50-message drain can finish within one 10 ms clock tick of the servers' CPU counters.
    assert backlog["server_cpu_us"] >= 0

    online = report["online"]
    assert _positive(online["devices"]) and _positive(online["register_per_s"])
    assert _positive(online["delivered_per_s_while_online"])
    for figure in ("server_rss_bytes_per_device", "idle_server_cpu_share", "idle_server_cpu_share_no_devices"):
        assert isinstance(online[figure], (int, float)), figure  # a small smoke run may measure ~0

    ratios = report["ratios"]
    assert _positive(ratios["cross_region_256"]["closed_64"]["delivered_per_s"]["jetstream_256.publish_windowed_per_s"])
    assert _positive(ratios["backlog"]["drain_per_s"]["jetstream_256.consume_per_s"])
    assert {t["target"] for t in report["targets"]} and all("met" in t for t in report["targets"])

    table = out.with_suffix(".md").read_text()
    assert "End to end through the SDK" in table and table in result.stdout
    print(f"smoke profile took {elapsed:.0f}s")


def test_bad_arguments_get_one_line_errors() -> None:
    result = subprocess.run([*XCHAT, "bench", "--online-devices", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "xchat: --online-devices must be at least 1"
    result = subprocess.run([*XCHAT, "bench", "--profile", "huge"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_ctrl_c_stops_the_bench_and_its_mesh(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    proc = subprocess.Popen(
        [*XCHAT, "bench", "--profile", "smoke", "--json", str(tmp_path / "b.json"), "--workdir", str(workdir)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 120
        seen: list[str] = []
        for line in proc.stderr:
            seen.append(line)
            if "repeat 1/1" in line or time.monotonic() > deadline:
                break
        assert proc.poll() is None, "the bench ended before it could be interrupted:\n" + "".join(seen)[-3000:]
        assert processes_of(workdir), "the mesh runs"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(90) == 130
        rest = proc.stderr.read()
        assert "Traceback" not in rest, rest[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        leftovers = processes_of(workdir)
        kill(leftovers)
    assert not leftovers, "no process left behind"
    assert not (tmp_path / "b.json").exists()
