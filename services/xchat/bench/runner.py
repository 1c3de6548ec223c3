"""One ``xchat bench`` run: start the mesh, measure baselines and SDK workloads, repeat, take medians.

Order of a run: mesh up → raw baselines (JetStream, gRPC echo; both body sizes)
→ for each repeat, the SDK phases of every variant (cross-region a→c and
same-region a→a; 256 B and 16 KiB) → backlog drain and stored bytes → online
devices (idle, then the cross-region 64-in-flight phase again among them). The 50 %-of-peak open-loop rate of a variant is half the best
closed-loop rate that variant reached in the same repeat. Everything the run
starts (mesh, echo server, receiver processes) is reaped by context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import nats.errors

from xchat.bench import baselines, flames, online, workloads
from xchat.bench.meshes import BenchMesh
from xchat.bench.profiles import FIXED_RATE, IN_FLIGHT, LARGE_BODY, PEAK_SHARE, SMALL_BODY, Profile
from xchat.bench.receiver import Receiver
from xchat.bench.resources import load_average
from xchat.bench.stats import Figures, medians
from xchat.client import Client

Progress = Callable[[str], None]
CLOSED_N = f"closed_{IN_FLIGHT}"


def _variants(profile: Profile) -> list[tuple[str, str, int, bool]]:
    """(name, receiver region, body size, with the 50 %-of-peak open loop)."""
    return [
        ("cross_region_256", "cross", SMALL_BODY, True),
        ("same_region_256", "same", SMALL_BODY, True),
        ("cross_region_16k", "cross", LARGE_BODY, profile.wide),
        *([("same_region_16k", "same", LARGE_BODY, True)] if profile.wide else []),
    ]


async def _variant(
    pair: workloads.Pair, profile: Profile, size: int, at_half_peak: bool, progress: Progress
) -> dict[str, Figures]:
    drain = profile.drain_timeout_s

    async def closed(concurrency: int) -> Figures:
        return await workloads.closed_loop(
            pair, concurrency=concurrency, duration_s=profile.throughput_s, size=size, drain_timeout_s=drain
        )

    async def open_(rate_per_s: float) -> Figures:
        return await workloads.open_loop(
            pair, rate_per_s=rate_per_s, duration_s=profile.open_loop_s, size=size, drain_timeout_s=drain
        )

    out: dict[str, Figures] = {"closed_1": await closed(1)}
    progress(f"  {IN_FLIGHT} sends in flight")
    out[CLOSED_N] = await closed(IN_FLIGHT)
    # The lighter open loop first: an overloaded phase leaves work behind in the SDK.
    if at_half_peak:
        peak = max(out["closed_1"]["delivered_per_s"] or 0.0, out[CLOSED_N]["delivered_per_s"] or 0.0)
        half = min(max(peak * PEAK_SHARE, 1.0), profile.max_open_loop_rate)
        progress(f"  open loop at {half:.0f} msg/s (50 % of peak)")
        out["open_half_peak"] = await open_(half)
    progress(f"  open loop at {FIXED_RATE:g} msg/s")
    out["open_100"] = await open_(FIXED_RATE)
    return out


def _median_tree(runs: list[dict[str, dict[str, Figures]]]) -> dict[str, dict[str, Figures]]:
    out: dict[str, dict[str, Figures]] = {}
    for variant in runs[0]:
        out[variant] = {phase: medians([r[variant][phase] for r in runs]) for phase in runs[0][variant]}
    return out


async def _flamegraphs(bench: BenchMesh, pair: workloads.Pair, profile: Profile, out_dir: Path) -> list[str]:
    """An extra, unmeasured pass of the cross-region closed loops and the half-peak open loop with py-spy attached."""
    pids = {
        "sender": os.getpid(),
        "receiver": pair.receiver.pid,
        "services-a": bench.service_pid("a"),
        "services-c": bench.service_pid("c"),
    }
    files: list[str] = []
    peak = 1.0
    for phase, concurrency in (("closed_1", 1), (CLOSED_N, IN_FLIGHT)):
        with flames.Recording(out_dir, phase, pids) as recording:
            figures = await workloads.closed_loop(
                pair, concurrency=concurrency, duration_s=max(profile.throughput_s, 3.0), size=SMALL_BODY,
                drain_timeout_s=profile.drain_timeout_s,
            )
        peak = max(peak, figures["delivered_per_s"] or 0.0)
        files += [str(f) for f in recording.files if f.exists()]
    # The open loop at half the peak reached under py-spy: where its time goes when sends arrive spread out.
    with flames.Recording(out_dir, "open_half_peak", pids) as recording:
        await workloads.open_loop(
            pair, rate_per_s=min(peak * PEAK_SHARE, profile.max_open_loop_rate), duration_s=max(profile.open_loop_s, 3.0),
            size=SMALL_BODY, drain_timeout_s=profile.drain_timeout_s,
        )
    files += [str(f) for f in recording.files if f.exists()]
    return files


async def _sdk(bench: BenchMesh, profile: Profile, state: Path, progress: Progress, flame_dir: Path | None) -> dict[str, Any]:
    roots = bench.root_certificates
    tag = os.urandom(3).hex()
    meter = bench.server_meter()
    sender = await Client.open(state / "sender.db", bench.endpoints("a"), root_certificates=roots)
    async with sender, contextlib.AsyncExitStack() as stack:
        await sender.register(f"bench-sender-{tag}")
        progress("starting the receiving apps; sessions are set up outside the measurements")
        receivers: dict[str, Receiver] = {}
        for name, region in (("cross", "c"), ("same", "a"), ("backlog", "c")):
            receivers[name] = stack.enter_context(
                Receiver(state / f"{name}.db", bench.endpoints(region), roots, f"bench-{name}-{tag}")
            )
        for receiver in receivers.values():
            await asyncio.to_thread(receiver.ready)
        pairs = {name: workloads.Pair(sender, r, meter, bench.nats_messages) for name, r in receivers.items()}
        for pair in pairs.values():  # sessions (PQXDH) set up outside the measurements
            await workloads.warm_up(pair, size=SMALL_BODY, timeout_s=profile.drain_timeout_s)
        runs: list[dict[str, dict[str, Figures]]] = []
        for repeat in range(profile.repeats):
            run: dict[str, dict[str, Figures]] = {}
            for name, who, size, half in _variants(profile):
                progress(f"repeat {repeat + 1}/{profile.repeats}: {name}")
                run[name] = await _variant(pairs[who], profile, size, half, progress)
            runs.append(run)
        flamegraphs: list[str] = []
        if flame_dir is not None:
            progress(f"flame graphs: cross-region closed loops and half-peak open loop under py-spy (not measured) → {flame_dir}")
            flamegraphs = await _flamegraphs(bench, pairs["cross"], profile, flame_dir)
        progress(f"backlog: {profile.backlog} messages for one offline device")
        drain = max(profile.drain_timeout_s, profile.backlog / 100)
        backlogs = [
            await workloads.backlog(bench, pairs["backlog"], count=profile.backlog, size=SMALL_BODY, drain_timeout_s=drain)
            for _ in range(profile.backlog_repeats)
        ]
        progress(f"online devices: {profile.online_devices} receive streams held open, then {IN_FLIGHT} sends in flight among them")

        async def load() -> Figures:
            return await workloads.closed_loop(
                pairs["cross"], concurrency=IN_FLIGHT, duration_s=profile.throughput_s, size=SMALL_BODY,
                drain_timeout_s=profile.drain_timeout_s,
            )

        held = await online.online_devices(
            bench, state / "online", count=profile.online_devices, idle_s=profile.idle_s, prefix=f"online-{tag}-", load=load,
            flame_dir=flame_dir,
        )
    return {
        "variants": _median_tree(runs), "backlog": medians(backlogs), "runs": runs, "backlog_runs": backlogs,
        "flamegraphs": flamegraphs, "online": held,
    }


async def _baselines(bench: BenchMesh, profile: Profile, progress: Progress) -> dict[str, Figures]:
    sizes = ((SMALL_BODY, "256"), (LARGE_BODY, "16k"))
    out: dict[str, Figures] = {}
    progress("baselines: JetStream R3 publish and consume, 256 B and 16 KiB bodies")
    for size, label in sizes:
        out[f"jetstream_{label}"] = medians([await baselines.jetstream(bench, profile, size) for _ in range(profile.repeats)])
    progress("baselines: gRPC unary and streaming echo, 256 B and 16 KiB bodies")
    echoes = [await baselines.grpc_echo(bench, profile, tuple(size for size, _ in sizes)) for _ in range(profile.repeats)]
    for size, label in sizes:
        out[f"grpc_{label}"] = medians([echo[size] for echo in echoes])
    progress(f"baselines: {profile.online_devices} idle gRPC streams, one TLS connection each (the floor of an online device)")
    out["grpc_idle"] = await baselines.grpc_idle_streams(bench, profile.online_devices, profile.idle_s)
    return out


async def run(
    profile: Profile, *, workdir: Path | None = None, flame_dir: Path | None = None, progress: Progress = lambda _m: None
) -> dict[str, Any]:
    """Runs the whole suite and returns the raw results (``xchat.bench.report`` shapes them)."""
    started = time.monotonic()
    load_before = load_average()
    progress("starting a three-region mesh with TLS")
    with BenchMesh(workdir) as bench:
        progress(f"mesh up in {bench.started_in_s:.1f}s")
        state = bench.workdir / "clients"
        state.mkdir(parents=True, exist_ok=True)
        raw = await _baselines(bench, profile, progress)
        sdk = await _sdk(bench, profile, state, progress, flame_dir)
        mesh_start_s = bench.started_in_s
    return {
        "profile": profile.name,
        "repeats": profile.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_before": list(load_before),
            "load_average_after": list(load_average()),
        },
        "mesh": {"regions": 3, "replicas": 3, "tls": True, "start_s": mesh_start_s},
        "baselines": raw,
        "sdk": sdk["variants"],
        "backlog": sdk["backlog"],
        "online": sdk["online"],
        "flamegraphs": sdk["flamegraphs"],
        "runs": {"sdk": sdk["runs"], "backlog": sdk["backlog_runs"]},
        "duration_s": time.monotonic() - started,
    }


class BenchError(RuntimeError):
    """A run could not complete; the message says which phase and why."""


def run_sync(
    profile: Profile, *, workdir: Path | None = None, flame_dir: Path | None = None, progress: Progress = lambda _m: None
) -> dict[str, Any]:
    """``run`` in a fresh event loop; NATS and gRPC failures become one ``BenchError``."""
    try:
        return asyncio.run(run(profile, workdir=workdir, flame_dir=flame_dir, progress=progress))
    except (nats.errors.Error, grpc.RpcError) as exc:
        raise BenchError(f"bench failed: {type(exc).__name__}: {exc}") from exc
