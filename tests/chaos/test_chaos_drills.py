"""Every scenario, in short form, on the local back end (real processes, toxiproxy links).

Fails on any lost acked message, duplicate to the app, order violation, stall,
RTO over the documented bound, or no return to full redundancy. Slow: CI runs it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from xchat_chaos import report
from xchat_chaos.drill import DrillSettings, run_drill
from xchat_chaos.local import LocalBackend
from xchat_chaos.scenarios import SCENARIOS
from xchat_chaos.workload import WorkloadSettings

# Short form: tens of seconds per scenario on 2 cores.
SHORT = DrillSettings(
    warmup_s=4.0,
    fault_s=7.0,
    settle_s=4.0,
    step_s=1.5,
    drain_s=40.0,
    flaps=2,
    burst=5,
    measure_replication=False,
    workload=WorkloadSettings(users_per_region=2, rate=2.5),
)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_scenario_short_form(scenario: str, tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "mesh", nodes_per_region=SCENARIOS[scenario].nodes_per_region)
    await asyncio.to_thread(backend.start)
    try:
        result = await run_drill(scenario, backend, SHORT, tmp_path / "drill")
    finally:
        await asyncio.to_thread(backend.stop)
    written = report.write(result, tmp_path / "report")
    print(report.headline(written))
    assert (tmp_path / "report" / "report.html").exists() and (tmp_path / "report" / "timeline.png").exists()
    assert result.failures == []
    assert written["rpo"]["lost_acked"] == 0
    assert written["counts"]["duplicated"] == 0 and written["counts"]["out_of_order"] == 0
    assert written["rto"]["max_s"] is not None and written["rto"]["max_s"] <= SHORT.rto_bound_s


# Under load: several senders per region, each with sends in flight (the SDK's SendStream path).
LOADED = dataclasses.replace(
    SHORT, fault_s=8.0, drain_s=60.0, workload=WorkloadSettings(users_per_region=2, rate=8.0, in_flight=8)
)
# Sends of the cut-off region's users must move before the partition heals (fault_s).
PARTITION_SEND_FAILOVER_S = 5.0


@pytest.mark.slow
async def test_partition_under_load_moves_the_cut_off_users_sends(tmp_path: Path) -> None:
    """A region cut off from the others still answers its clients, quickly: each envelope on
    a SendStream came back UNAVAILABLE (no quorum), the stream itself worked, and the SDK
    kept retrying that region until the partition healed (sends of its users resumed only
    after it: 8-10 s). Now two streams in a row that stored nothing move the client."""
    backend = LocalBackend(tmp_path / "mesh", nodes_per_region=SCENARIOS["region-partition"].nodes_per_region)
    await asyncio.to_thread(backend.start)
    try:
        result = await run_drill("region-partition", backend, LOADED, tmp_path / "drill")
    finally:
        await asyncio.to_thread(backend.stop)
    written = report.write(result, tmp_path / "report")
    print(report.headline(written))
    assert written["rpo"]["lost_acked"] == 0
    assert written["counts"]["duplicated"] == 0 and written["counts"]["out_of_order"] == 0
    (window,) = written["rto"]["windows"]
    assert window["send_failed_over_s"] is not None and window["send_failed_over_s"] <= PARTITION_SEND_FAILOVER_S, window
    # Every message was stored: a send() of a busy app must never be told its message is
    # "no longer queued" (UNKNOWN) because it was stored before the caller began to wait.
    assert "UNKNOWN" not in written["counts"]["send_errors"], written["counts"]["send_errors"]
