"""Turning a ``DrillResult`` into the report: JSON, a PNG timeline and an HTML page.

The JSON is the contract (CI and people read it): RPO (acked messages lost),
RTO per fault window (survivors and failed-over users, sends and
deliveries), latency percentiles before/during/after, throughput, the
Jepsen-style counts, recoveries to full redundancy and the R3 vs R1 cost.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from xchat_chaos.drill import DrillResult


def _num(x: float | None) -> float | None:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return round(float(x), 4)


def to_json(result: DrillResult) -> dict[str, Any]:
    v = result.verdict
    s = result.settings
    return {
        "scenario": result.scenario,
        "backend": result.backend,
        "passed": result.passed,
        "failures": result.failures,
        "rpo": {"lost_acked": v.rpo, "lost": [{"key": l.key, "ack_t": _num(l.ack_t), "position": l.position} for l in v.lost]},
        "rto": {
            "bound_s": s.rto_bound_s,
            "max_s": _num(v.max_rto),
            "windows": [
                {
                    "fault": w.fault,
                    "region": w.region,
                    "start_s": _num(w.start),
                    "send_survivors_s": _num(w.send_survivors),
                    "send_failed_over_s": _num(w.send_failed_over),
                    "deliver_survivors_s": _num(w.deliver_survivors),
                    "deliver_failed_over_s": _num(w.deliver_failed_over),
                }
                for w in v.rto
            ],
        },
        "counts": {
            "attempted": v.attempted,
            "acked": v.acked,
            "delivered": v.delivered,
            "lost": len(v.lost),
            "lost_prefix": sum(1 for l in v.lost if l.position == "prefix"),
            "lost_middle": sum(1 for l in v.lost if l.position == "middle"),
            "lost_postfix": sum(1 for l in v.lost if l.position == "postfix"),
            "unknown": len(v.unknown),
            "recovered": len(v.recovered),
            "unexpected": len(v.unexpected),
            "duplicated": len(v.duplicated),
            "out_of_order": len(v.out_of_order),
            "send_errors": dict(sorted(result.history.send_errors.items())),
        },
        "latency_s": {phase: {k: _num(x) for k, x in stats.items()} for phase, stats in v.latency.items()},
        "throughput": {k: _num(x) for k, x in v.throughput.items()},
        "max_stall_s": _num(v.max_stall),
        "stalls_s": {u: _num(st) for u, (st, _since) in v.stalls.items()},
        "faults": [{"name": f.name, "region": f.region, "start_s": _num(f.start), "end_s": _num(f.end)} for f in result.history.faults],
        "recoveries": result.recoveries,
        "notes": result.notes,
        "duration_s": _num(result.history.duration),
        "users": result.history.users,
        "settings": {
            "warmup_s": s.warmup_s,
            "fault_s": s.fault_s,
            "settle_s": s.settle_s,
            "rate_per_user": s.workload.rate,
            "users_per_region": s.workload.users_per_region,
            "burst": s.burst,
            "latency_ms": s.latency_ms,
            "flaps": s.flaps,
        },
        "timeline": [{k: _num(x) for k, x in row.items()} for row in v.timeline],
    }


def headline(report: dict[str, Any]) -> str:
    c = report["counts"]
    lat = report["latency_s"]

    def ms(phase: str, q: str) -> str:
        x = lat.get(phase, {}).get(q)
        return "-" if x is None else f"{x * 1000:.0f}ms"

    rto = report["rto"]["max_s"]
    lines = [
        f"{report['scenario']} on {report['backend']}: {'PASS' if report['passed'] else 'FAIL'}",
        f"  RPO: {report['rpo']['lost_acked']} acked message(s) lost   RTO: {'-' if rto is None else f'{rto:.1f}s'} (bound {report['rto']['bound_s']:.0f}s)",
        f"  attempted {c['attempted']}  acked {c['acked']}  delivered {c['delivered']}  unknown {c['unknown']}  recovered {c['recovered']}"
        f"  duplicated {c['duplicated']}  out-of-order {c['out_of_order']}  unexpected {c['unexpected']}"
        + (f"  send() errors {errors}" if (errors := c.get("send_errors")) else ""),
        f"  latency p50/p99  before {ms('before', 'p50')}/{ms('before', 'p99')}  during {ms('during', 'p50')}/{ms('during', 'p99')}"
        f"  after {ms('after', 'p50')}/{ms('after', 'p99')}   max stall {report['max_stall_s'] or 0:.1f}s",
    ]
    for rec in report["recoveries"]:
        lines.append(f"  full redundancy after {rec['after']}: {'yes' if rec['ok'] else 'NO'} in {rec['seconds']:.1f}s")
    cost = (report["notes"] or {}).get("replication_cost") or {}
    if "R1" in cost and "R3" in cost:
        lines.append(f"  publish ack p50: R1 {cost['R1']['p50_ms']:.2f}ms  R3 {cost['R3']['p50_ms']:.2f}ms")
    for failure in report["failures"]:
        lines.append(f"  FAIL: {failure}")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> bool:
    """Delivery rate and latency over time, fault windows shaded; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = report["timeline"]
    t = [r["t"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    ax1.plot(t, [r["deliveries"] for r in rows], label="delivered/s", color="tab:blue")
    ax1.plot(t, [r["acks"] for r in rows], label="acked/s", color="tab:green", alpha=0.6)
    ax1.set_ylabel("messages / s")
    ax1.legend(loc="upper right")
    ax2.plot(t, [(r["p50"] or math.nan) * 1000 if r["p50"] is not None else math.nan for r in rows], label="p50", color="tab:purple")
    ax2.plot(t, [(r["p99"] or math.nan) * 1000 if r["p99"] is not None else math.nan for r in rows], label="p99", color="tab:red")
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ms, by delivery second)")
    ax2.set_xlabel("seconds since start of traffic")
    ax2.legend(loc="upper right")
    for fault in report["faults"]:
        for ax in (ax1, ax2):
            ax.axvspan(fault["start_s"], fault["end_s"], color="tab:orange", alpha=0.2)
    ax1.set_title(f"{report['scenario']} ({report['backend']}): fault windows shaded; RPO {report['rpo']['lost_acked']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def page(report: dict[str, Any], png: Path | None) -> str:
    image = ""
    if png is not None and png.exists():
        image = f'<img alt="timeline" src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}">'
    windows = "".join(
        f"<tr><td>{html.escape(w['fault'])}</td><td>{w['region'] or '-'}</td>"
        + "".join(f"<td>{'-' if w[k] is None else f'{w[k]:.2f}'}</td>" for k in ("send_survivors_s", "send_failed_over_s", "deliver_survivors_s", "deliver_failed_over_s"))
        + "</tr>"
        for w in report["rto"]["windows"]
    )
    shown = {k: v for k, v in report.items() if k != "timeline"}
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>xchat drill {html.escape(report['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}
.pass{{color:green}}.fail{{color:#b00}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head><body>
<h1>xchat drill: {html.escape(report['scenario'])} <span class="{'pass' if report['passed'] else 'fail'}">{'PASS' if report['passed'] else 'FAIL'}</span></h1>
<pre>{html.escape(headline(report))}</pre>
{image}
<h2>RTO per fault window (s)</h2>
<table><tr><th>fault</th><th>region</th><th>send, survivors</th><th>send, failed over</th><th>delivery, survivors</th><th>delivery, failed over</th></tr>{windows}</table>
<h2>Full report</h2><pre>{html.escape(json.dumps(shown, indent=2))}</pre>
</body></html>"""


def write(result: DrillResult, out_dir: Path) -> dict[str, Any]:
    """Writes report.json, timeline.png, report.html and history.jsonl into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report = to_json(result)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    result.history.dump(out_dir / "history.jsonl")
    png = out_dir / "timeline.png"
    drawn = plot(report, png)
    (out_dir / "report.html").write_text(page(report, png if drawn else None))
    return report
