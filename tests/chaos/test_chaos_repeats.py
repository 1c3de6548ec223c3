"""``xchat drill --repeat N``: the medians of N runs, each on a fresh mesh (issue 10 asks RTO
as medians of >= 5 runs). The summary over hand-made reports, the flag's mistakes, and
two short real runs through the command as a person types it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xchat.mesh.leftovers import kill, processes_of
from xchat_chaos.repeats import summarize, table

XCHAT = [sys.executable, "-m", "xchat"]


def _report(passed: bool, send: float, deliver: float | None, lost: int = 0) -> dict[str, Any]:
    window = {"send_survivors_s": 0.2, "send_failed_over_s": send, "deliver_survivors_s": 0.3, "deliver_failed_over_s": deliver}
    return {
        "scenario": "region-kill", "backend": "local", "passed": passed,
        "rpo": {"lost_acked": lost}, "counts": {"acked": 100, "duplicated": 0, "out_of_order": 0},
        "rto": {"max_s": max(v for v in window.values() if v is not None), "windows": [window]},
        "max_stall_s": 0.5,
    }


def test_summary_takes_medians_and_fails_when_any_run_failed() -> None:
    summary = summarize([_report(True, 1.0, 0.5), _report(True, 3.0, None), _report(False, 2.0, 1.5, lost=1)])
    figures = summary["figures"]
    assert figures["send_failed_over_s"]["median"] == 2.0 and figures["send_failed_over_s"]["runs"] == [1.0, 3.0, 2.0]
    assert figures["deliver_failed_over_s"]["median"] == 1.0  # the run with no one to measure is left out
    assert figures["max_s"]["median"] == 2.0
    assert summary["passed"] is False and summary["lost_acked"] == 1 and summary["acked"] == 300
    text = table(summary)
    assert "3 run(s): FAIL" in text and "send, failed over" in text and "1.00 3.00 2.00" in text


def test_repeat_mistakes_get_one_line_errors() -> None:
    for args, expected in (
        (["--repeat", "0"], "--repeat"),
        (["--repeat", "2", "--backend", "kind"], "the local back end only"),
    ):
        result = subprocess.run([*XCHAT, "drill", "region-kill", *args, "--no-progress"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_two_short_runs_write_each_report_and_the_medians(tmp_path: Path) -> None:
    out, workdir = tmp_path / "out", tmp_path / "work"
    try:
        result = subprocess.run(
            [*XCHAT, "drill", "region-kill", "--repeat", "2", "--no-progress", "--out", str(out), "--workdir", str(workdir),
             "--warmup", "3", "--fault", "4", "--settle", "3", "--users-per-region", "1", "--rate", "2"],
            capture_output=True, text=True, timeout=600,
        )
    finally:
        leftovers = processes_of(workdir)
        kill(leftovers)
    assert not leftovers
    assert result.returncode == 0, result.stdout + result.stderr
    for run in (1, 2):
        assert json.loads((out / f"run-{run}" / "report.json").read_text())["passed"] is True
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == 2 and summary["passed"] and summary["lost_acked"] == 0
    assert len(summary["figures"]["max_s"]["runs"]) == 2 and summary["figures"]["max_s"]["median"] is not None
    assert "region-kill on local, 2 run(s): PASS" in result.stdout
