"""``xchat drill --repeat N``: the same drill N times, each on a fresh mesh, and the medians.

One run's RTO swings with where the leaders were, what the machine was doing and
when in a send the fault landed; a claim about failover time is a median over
runs (issue 10: "medians of >= 5 runs"). ``summarize`` takes the runs' report
dicts (``xchat_chaos.report.to_json``) and gives, per RTO figure (sends and
deliveries, survivors and failed-over users, the worst of them, the longest
stall), every run's value and the median; plus RPO and the verdicts.
"""

from __future__ import annotations

import statistics
from typing import Any

# report["rto"]["windows"][i] keys, and the names the summary gives them.
FIGURES = {
    "send_survivors_s": "send, survivors",
    "send_failed_over_s": "send, failed over",
    "deliver_survivors_s": "deliver, survivors",
    "deliver_failed_over_s": "deliver, failed over",
}


def _worst(report: dict[str, Any], key: str) -> float | None:
    """The largest value of ``key`` over the run's fault windows (None: no user to measure).

    A user that never resumed is not in these figures: the run then fails
    (``unresolved_rto``), and so does the summary."""
    values = [v for v in (w.get(key) for w in report["rto"]["windows"]) if v is not None]
    return max(values) if values else None


def _median(values: list[float | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return statistics.median(measured) if measured else None


def summarize(reports: list[dict[str, Any]]) -> dict[str, Any]:
    per_figure: dict[str, dict[str, Any]] = {}
    for key, name in FIGURES.items():
        values = [_worst(r, key) for r in reports]
        per_figure[key] = {"name": name, "runs": values, "median": _median(values)}
    rto = [r["rto"]["max_s"] for r in reports]
    per_figure["max_s"] = {"name": "RTO (worst figure)", "runs": rto, "median": _median(rto)}
    stalls = [r["max_stall_s"] for r in reports]
    per_figure["max_stall_s"] = {"name": "longest stall", "runs": stalls, "median": _median(stalls)}
    return {
        "scenario": reports[0]["scenario"] if reports else None,
        "backend": reports[0]["backend"] if reports else None,
        "runs": len(reports),
        "passed": bool(reports) and all(r["passed"] for r in reports),
        "lost_acked": sum(r["rpo"]["lost_acked"] for r in reports),
        "duplicated": sum(r["counts"]["duplicated"] for r in reports),
        "out_of_order": sum(r["counts"]["out_of_order"] for r in reports),
        "acked": sum(r["counts"]["acked"] for r in reports),
        "figures": per_figure,
    }


def table(summary: dict[str, Any]) -> str:
    """The summary as text: one row per figure, the runs' values and the median."""
    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    runs = summary["runs"]
    lines = [
        f"{summary['scenario']} on {summary['backend']}, {runs} run(s): {'PASS' if summary['passed'] else 'FAIL'}"
        f"   RPO: {summary['lost_acked']} of {summary['acked']} acked lost"
        f"   duplicated {summary['duplicated']}   out of order {summary['out_of_order']}",
        f"  {'seconds':<22} {'median':>7}   runs",
    ]
    for figure in summary["figures"].values():
        lines.append(f"  {figure['name']:<22} {cell(figure['median']):>7}   {' '.join(cell(v) for v in figure['runs'])}")
    return "\n".join(lines)
