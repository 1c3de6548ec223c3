"""Every scenario, in short form, on the local back end (real processes, toxiproxy links).

Fails on any lost acked message, duplicate to the app, order violation, stall,
RTO over the documented bound, or no return to full redundancy. Slow: CI runs it.
"""

from __future__ import annotations

import asyncio
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
