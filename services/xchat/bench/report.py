"""Shapes a run's raw results into the report: ratios to the baselines, the issue's targets, a table.

Ratios pair every SDK figure with the raw figure measured in the same run that
bounds it (see ``BASELINE_OF``): a rate as a share of the engine's rate (higher
is better), a latency or a cost as a multiple of the engine's (lower is
better). The table is Markdown, so the same text prints in a terminal and goes
into docs/perf/README.md.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from xchat.bench.profiles import IN_FLIGHT
from xchat.bench.online import ONLINE_WAVE
from xchat.bench.stats import Figures, ratio

SCHEMA = 1
CLOSED_N = f"closed_{IN_FLIGHT}"
# (phase, figure) → baseline figures; "{js}" and "{grpc}" are the baselines of the variant's body size.
BASELINE_OF: dict[tuple[str, str], tuple[str, ...]] = {
    ("closed_1", "delivered_per_s"): ("{js}.publish_sequential_per_s", "{grpc}.unary_per_s"),
    ("closed_1", "p50_ms"): ("{js}.publish_p50_ms",),
    ("closed_1", "p99_ms"): ("{js}.publish_p99_ms",),
    ("closed_1", "server_cpu_us"): ("{js}.server_cpu_us_per_publish",),
    ("closed_1", "services_cpu_us"): ("{grpc}.unary_server_cpu_us",),
    ("closed_1", "client_cpu_us"): ("{grpc}.unary_client_cpu_us",),
    (CLOSED_N, "delivered_per_s"): ("{js}.publish_windowed_per_s", "{grpc}.stream_per_s"),
    (CLOSED_N, "p50_ms"): ("{js}.publish_p50_ms",),
    (CLOSED_N, "p99_ms"): ("{js}.publish_p99_ms",),
    (CLOSED_N, "server_cpu_us"): ("{js}.server_cpu_us_per_publish",),
    (CLOSED_N, "services_cpu_us"): ("{grpc}.stream_server_cpu_us",),
    (CLOSED_N, "client_cpu_us"): ("{grpc}.stream_client_cpu_us",),
    **{
        (phase, figure): base
        for phase in ("open_100", "open_half_peak")
        for figure, base in (
            ("p50_ms", ("{js}.publish_p50_ms",)),
            ("p99_ms", ("{js}.publish_p99_ms",)),
            ("p999_ms", ("{js}.publish_p99_ms",)),
            ("server_cpu_us", ("{js}.server_cpu_us_per_publish",)),
            ("services_cpu_us", ("{grpc}.stream_server_cpu_us",)),
            ("client_cpu_us", ("{grpc}.stream_client_cpu_us",)),
        )
    },
}
BACKLOG_BASELINE = {
    "drain_per_s": "jetstream_256.consume_per_s",
    "stored_bytes_per_message": "jetstream_256.stored_bytes_per_message",
    "server_cpu_us": "jetstream_256.server_cpu_us_per_publish",
}
ONLINE_BASELINE = {
    "server_rss_bytes_per_device": "grpc_idle.server_rss_bytes_per_stream",
    "idle_server_cpu_share": "online.idle_server_cpu_share_no_devices",
    "delivered_per_s_while_online": f"sdk.cross_region_256.{CLOSED_N}.delivered_per_s",
}


def _lookup(results: Mapping[str, Any], dotted: str) -> float | None:
    """``online.<figure>``, ``sdk.<variant>.<phase>.<figure>`` or ``<baseline>.<figure>``."""
    section, _, figure = dotted.partition(".")
    if section == "online":
        value = results["online"].get(figure)
    elif section == "sdk":
        return _get(results, *dotted.split("."))
    else:
        value = results["baselines"].get(section, {}).get(figure)
    return float(value) if value is not None else None


def _size(variant: str) -> str:
    return "16k" if variant.endswith("16k") else "256"


def ratios(results: Mapping[str, Any]) -> dict[str, Any]:
    """``{variant: {phase: {figure: {baseline: ratio}}}}`` plus ``backlog`` and ``online``."""
    out: dict[str, Any] = {}
    for variant, phases in results["sdk"].items():
        size = _size(variant)
        for phase, figures in phases.items():
            for figure, value in figures.items():
                for template in BASELINE_OF.get((phase, figure), ()):
                    base = template.format(js=f"jetstream_{size}", grpc=f"grpc_{size}")
                    r = ratio(value, _lookup(results, base))
                    out.setdefault(variant, {}).setdefault(phase, {}).setdefault(figure, {})[base] = r
    for figure, base in BACKLOG_BASELINE.items():
        out.setdefault("backlog", {})[figure] = {base: ratio(results["backlog"].get(figure), _lookup(results, base))}
    for figure, base in ONLINE_BASELINE.items():
        out.setdefault("online", {})[figure] = {base: ratio(results["online"].get(figure), _lookup(results, base))}
    return out


def _get(results: Mapping[str, Any], *path: str) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if node is not None else None


def targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets (issue 18), each with the measured value and whether it is met."""
    def cross(phase: str, figure: str) -> float | None:
        return _get(results, "sdk", "cross_region_256", phase, figure)

    js_window = _get(results, "baselines", "jetstream_256", "publish_windowed_per_s")
    closed_n = _get(results, "sdk", "cross_region_256", CLOSED_N, "delivered_per_s")
    rows: list[tuple[str, float | None, str, float]] = [
        (f"delivered msg/s, {IN_FLIGHT} in flight (cross-region)", closed_n, ">=", 2000.0),
        (f"{IN_FLIGHT} in flight / JetStream windowed publish", ratio(closed_n, js_window), ">=", 0.15),
        ("delivered msg/s, one at a time (cross-region)", cross("closed_1", "delivered_per_s"), ">=", 400.0),
        ("p99 ms at 100 msg/s, same region", _get(results, "sdk", "same_region_256", "open_100", "p99_ms"), "<=", 10.0),
        ("p99 ms at 100 msg/s, cross-region", _get(results, "sdk", "cross_region_256", "open_100", "p99_ms"), "<=", 15.0),
        ("p99 ms at 50 % of peak (cross-region)", _get(results, "sdk", "cross_region_256", "open_half_peak", "p99_ms"), "<=", 25.0),
        (f"server CPU µs per delivered message ({IN_FLIGHT} in flight)", cross(CLOSED_N, "server_cpu_us"), "<=", 1000.0),
        ("server KiB per online device", _scaled(_get(results, "online", "server_rss_bytes_per_device"), 1 / 1024), "<=", 20.0),
        ("idle server CPU, % of a core, devices online", _scaled(_get(results, "online", "idle_server_cpu_share"), 100), "<=", 5.0),
        ("backlog drain msg/s", _get(results, "backlog", "drain_per_s"), ">=", 5000.0),
        (
            f"{IN_FLIGHT} in flight with the devices online / without",
            ratio(_get(results, "online", "delivered_per_s_while_online"), closed_n), ">=", 0.85,
        ),
    ]
    return [
        {
            "target": name,
            "value": value,
            "goal": f"{op} {goal:g}",
            "met": None if value is None else (value >= goal if op == ">=" else value <= goal),
        }
        for name, value, op, goal in rows
    ]


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def build(results: Mapping[str, Any], *, command: str) -> dict[str, Any]:
    report = {
        "schema": SCHEMA,
        "generated_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        **results,
        "ratios": ratios(results),
    }
    report["targets"] = targets(report)
    return report


# -- the table ---------------------------------------------------------------

def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    if digits == 0 and abs(value) >= 1:
        return f"{value:,.0f}"
    return f"{value:,.{max(digits, 2) if abs(value) < 1 else digits}f}"


def _r(report: Mapping[str, Any], variant: str, phase: str, figure: str) -> str:
    by_base = report["ratios"].get(variant, {}).get(phase, {}).get(figure, {})
    values = [v for v in by_base.values() if v is not None]
    return f"{values[0]:.3g}×" if values else "–"


PHASE_NAMES = {
    "closed_1": "1 in flight",
    CLOSED_N: f"{IN_FLIGHT} in flight",
    "open_100": "open loop 100/s",
    "open_half_peak": "open loop 50 % peak",
}


def table(report: Mapping[str, Any]) -> str:
    lines: list[str] = []
    machine = report["machine"]
    lines.append(
        f"xchat bench — profile {report['profile']}, {report['repeats']} repeat(s), medians; 3 regions, R3, TLS; "
        f"{machine['cpus']} CPUs, load {machine['load_average_before'][0]:.2f} → {machine['load_average_after'][0]:.2f}"
    )
    lines += ["", "Baselines (same run)", "", "| baseline | 256 B | 16 KiB |", "|---|---:|---:|"]
    for label, section, figure in (
        ("JetStream R3 publish, sequential msg/s", "jetstream", "publish_sequential_per_s"),
        ("JetStream R3 publish p50 / p99 ms", "jetstream", "publish_p50_ms/publish_p99_ms"),
        ("JetStream R3 publish_async windowed msg/s", "jetstream", "publish_windowed_per_s"),
        ("JetStream consume (ordered push) msg/s", "jetstream", "consume_per_s"),
        ("JetStream stored bytes/msg (one replica)", "jetstream", "stored_bytes_per_message"),
        ("nats-server CPU µs/publish (3 servers)", "jetstream", "server_cpu_us_per_publish"),
        ("gRPC unary echo calls/s", "grpc", "unary_per_s"),
        ("gRPC unary p50 / p99 ms", "grpc", "unary_p50_ms/unary_p99_ms"),
        ("gRPC stream echo msg/s (64 in flight)", "grpc", "stream_per_s"),
        ("gRPC stream µs/msg server / client", "grpc", "stream_server_cpu_us/stream_client_cpu_us"),
    ):
        cells = []
        for size in ("256", "16k"):
            base = report["baselines"].get(f"{section}_{size}", {})
            parts = [_n(base.get(f), 1 if f.endswith("_ms") else 0) for f in figure.split("/")]
            cells.append(" / ".join(parts))
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "End to end through the SDK (send → messages() → ack)",
        "",
        "| variant | load | delivered msg/s | × baseline | p50 / p99 / p99.9 ms | p99 × JS | server µs/msg | × JS | client µs/msg | NATS msgs/msg |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for variant, phases in report["sdk"].items():
        for phase, f in phases.items():
            load = PHASE_NAMES.get(phase, phase)
            if phase.startswith("open"):
                load += f" ({_n(f.get('rate_per_s'))}/s{', overloaded' if f.get('overloaded') else ''})"
            if f.get("failed_sends"):
                load += f", **{_n(f.get('failed_sends'))} sends failed**"
            p999 = f" / {_n(f.get('p999_ms'), 1)}" if "p999_ms" in f else ""
            lines.append(
                f"| {variant} | {load} | {_n(f.get('delivered_per_s'))} | {_r(report, variant, phase, 'delivered_per_s')} "
                f"| {_n(f.get('p50_ms'), 1)} / {_n(f.get('p99_ms'), 1)}{p999} | {_r(report, variant, phase, 'p99_ms')} "
                f"| {_n(f.get('server_cpu_us'))} | {_r(report, variant, phase, 'server_cpu_us')} | {_n(f.get('client_cpu_us'))} "
                f"| {_n(f.get('nats_msgs_per_message'), 1)} |"
            )
    lines += [
        "",
        "× baseline: 1 in flight ÷ JetStream sequential publish, 64 in flight ÷ JetStream windowed publish_async "
        "(same body size). p99 × JS: ÷ one R3 publish's p99. Server µs: 3 nats-servers + 3 service processes; "
        "× JS: ÷ nats-server CPU per R3 publish. Client µs: sending + receiving app. NATS msgs: messages the three "
        "nats-servers received (clients, routes, Raft) per delivered message. Open-loop latency counts from "
        "the scheduled send time.",
    ]
    b, o = report["backlog"], report["online"]
    br, orat = report["ratios"].get("backlog", {}), report["ratios"].get("online", {})
    gi = report["baselines"].get("grpc_idle", {})

    def first(r: Mapping[str, Any]) -> str:
        values = [v for v in r.values() if v is not None]
        return f"{values[0]:.3g}×" if values else "–"

    def kib(figure: str) -> str:
        return _n(_scaled(o.get(figure), 1 / 1024), 1)

    def pct(figure: str) -> str:
        return _n(_scaled(o.get(figure), 100), 1)

    lines += [
        "",
        "| backlog and storage | value | × baseline |",
        "|---|---:|---:|",
        f"| backlog drain msg/s ({_n(b.get('queued'))} queued, one device) | {_n(b.get('drain_per_s'))} "
        f"| {first(br.get('drain_per_s', {}))} (JS consume) |",
        f"| stored bytes per 256 B message (one replica) | {_n(b.get('stored_bytes_per_message'))} "
        f"| {first(br.get('stored_bytes_per_message', {}))} (raw JS) |",
        f"| server CPU µs per drained message | {_n(b.get('server_cpu_us'))} | {first(br.get('server_cpu_us', {}))} (JS publish) |",
        "",
        f"| {_n(o.get('devices'))} online devices (idle Sync streams) | value |",
        "|---|---:|",
        f"| devices brought online per s (waves of {ONLINE_WAVE} per crowd process) | {_n(o.get('online_per_s'))} |",
        f"| server RSS per device, KiB (services + NATS) | {kib('server_rss_bytes_per_device')} "
        f"({first(orat.get('server_rss_bytes_per_device', {}))} the gRPC floor) |",
        f"| gRPC floor: echo server RSS per idle stream / per TLS connection, KiB ({_n(gi.get('streams'))}) "
        f"| {_n((gi.get('server_rss_bytes_per_stream') or 0) / 1024, 1)} / {_n((gi.get('server_rss_bytes_per_connection') or 0) / 1024, 1)} |",
        f"| … of which services / NATS, KiB | {kib('services_rss_bytes_per_device')} / {kib('nats_rss_bytes_per_device')} |",
        f"| idle server CPU, % of a core (no devices online: {pct('idle_server_cpu_share_no_devices')}) "
        f"| {pct('idle_server_cpu_share')} |",
        f"| idle client CPU (all devices' apps), % of a core | {pct('idle_client_cpu_share')} |",
        f"| cross-region msg/s, {IN_FLIGHT} in flight, all devices online (× without) | "
        f"{_n(o.get('delivered_per_s_while_online'))} ({first(orat.get('delivered_per_s_while_online', {}))}) |",
        "",
        "| target (issue 18) | goal | measured | met |",
        "|---|---|---:|---|",
    ]
    for t in report["targets"]:
        met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['goal']} | {_n(t['value'], 2 if (t['value'] or 0) < 10 else 0)} | {met} |")
    return "\n".join(lines) + "\n"
