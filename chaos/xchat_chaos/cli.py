"""``xchat drill <scenario>``: the command-line edge of the drill engine.

Builds the back end and settings from flags, runs the drill with a progress
bar, prints the report's headline and writes JSON/HTML/PNG. Exit status 0
when every guarantee held, 1 otherwise, 2 when the drill cannot run at all
(e.g. link-latency on a kernel without netem, or an unreachable kind cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

# Only the light scenario registry at import: the whole ``xchat`` CLI loads this module.
from xchat_chaos.scenarios import SCENARIOS

if TYPE_CHECKING:
    from xchat_chaos.drill import DrillResult, DrillSettings

# Mirrors xchat_chaos.drill (kept literal so ``xchat serve`` does not import the drill engine).
DEFAULT_RTO_BOUND_S = 30.0
DEFAULT_RECOVERY_BOUND_S = 90.0


def add_drill_parser(subparsers: Any) -> None:
    drill = subparsers.add_parser(
        "drill",
        help="run a chaos drill (kill, freeze or cut off a region...) and report RPO/RTO",
        description="Scenarios:\n" + "\n".join(f"  {n:<17} {s.description}" for n, s in SCENARIOS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    drill.add_argument("scenario", choices=list(SCENARIOS), help="the fault to inject (listed above)")
    drill.add_argument("--backend", choices=["local", "kind"], default="local",
                       help="local: processes on this machine (default); kind: a real cluster")
    drill.add_argument("--out", help="report directory (default: drill-reports/<scenario>-<time>)")
    drill.add_argument("--workdir", help="mesh data and logs (local back end; default: a temp dir)")
    drill.add_argument("--regions", default="a,b,c", help="local back end: region names (default a,b,c)")
    drill.add_argument("--users-per-region", type=_at_least(1, int), default=2, help="sending users homed in each region (default 2)")
    drill.add_argument("--rate", type=_at_least(0.01, float), default=3.0, help="messages/s per user (default 3)")
    drill.add_argument("--in-flight", type=_window, default=1,
                       help="concurrent send() calls per user (default 1: one at a time; load: e.g. 8)")
    drill.add_argument("--warmup", type=_at_least(0, float), default=8.0, help="seconds of traffic before the fault")
    drill.add_argument("--fault", type=_at_least(0.1, float), default=10.0, help="seconds a fault lasts")
    drill.add_argument("--settle", type=_at_least(0, float), default=8.0, help="seconds of traffic after the fault")
    drill.add_argument("--drain", type=_at_least(1, float), default=45.0,
                       help="seconds the drill waits, after traffic, for every acked message to arrive (a slower "
                            "back end, e.g. kind under load, needs longer for its deliberately slow backlog device)")
    drill.add_argument("--latency-ms", type=_at_least(0, int), default=50, help="link-latency: delay added each way")
    drill.add_argument("--flaps", type=_at_least(1, int), default=3, help="flapping scenarios: how many times the fault comes and goes")
    drill.add_argument("--rto-bound", type=_at_least(0.1, float), default=DEFAULT_RTO_BOUND_S,
                       help=f"seconds delivery may stall through the fault before the drill fails (default {DEFAULT_RTO_BOUND_S:g})")
    drill.add_argument("--recovery-bound", type=_at_least(0.1, float), default=DEFAULT_RECOVERY_BOUND_S,
                       help=f"seconds the mesh may take to regain full redundancy after the fault (default {DEFAULT_RECOVERY_BOUND_S:g})")
    drill.add_argument("--no-progress", action="store_true", help="no progress bar")
    drill.add_argument("--repeat", type=_at_least(1, int), default=1,
                       help="run the drill this many times, each on a fresh mesh (local back end), and report the "
                            "medians (OUT/run-N/ per run, OUT/summary.json)")
    drill.add_argument("--status-port", type=int, default=None,
                       help="local back end: serve the live status page on 127.0.0.1:PORT while the drill runs "
                       "(0: a free port; the URL is printed; default off)")
    kind = drill.add_argument_group("kind back end")
    kind.add_argument("--kube-context", default="kind-xchat", help="kubeconfig context of the cluster (default kind-xchat)")
    kind.add_argument("--namespace", default="xchat", help="namespace of the XChatMesh (default xchat)")
    kind.add_argument("--mesh", default="xchat", help="XChatMesh name (default xchat)")
    kind.add_argument(
        "--endpoints",
        help="region=host:port,... (one address per region) or region.auth=host:port,region.keys=...,"
        "region.relay=...,region.mailbox=... (one per service). Default: the back end exposes each "
        "region's four Services itself (NodePorts + loopback forwarders)",
    )
    kind.add_argument("--ca", help="PEM file of the CA the services' TLS certificates chain to "
                      "(default: ca.crt of the mesh TLS Secret when TLS is on)")
    kind.add_argument("--upgrade-image-tag", help="upgrade: the xchat image tag to roll out (loaded into kind first)")
    kind.add_argument("--upgrade-nats-tag", help="upgrade: the NATS image tag (natsImage.tag) to roll out")
    kind.add_argument("--release", default="xchat", help="upgrade: the helm release of the chart (default xchat)")
    kind.add_argument("--chart", default="charts/xchat", help="upgrade: the chart to upgrade to (default charts/xchat)")
    drill.set_defaults(run=_run)


def _at_least(low: float, kind: Callable[[str], float]) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` no smaller than ``low`` (a negative rate is a usage error)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is below the minimum {low:g}")
        return value

    return parse


def _window(text: str) -> int:
    """--in-flight: a whole number of concurrent sends, 1..256."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"{value} is outside 1..256")
    return value


def _settings(args: argparse.Namespace) -> DrillSettings:
    from xchat_chaos.drill import DrillSettings
    from xchat_chaos.workload import WorkloadSettings

    return DrillSettings(
        warmup_s=args.warmup,
        fault_s=args.fault,
        settle_s=args.settle,
        drain_s=args.drain,
        latency_ms=args.latency_ms,
        flaps=args.flaps,
        rto_bound_s=args.rto_bound,
        recovery_bound_s=args.recovery_bound,
        workload=WorkloadSettings(users_per_region=args.users_per_region, rate=args.rate,
                                  in_flight=args.in_flight),
    )


def _progress_bar(settings: DrillSettings, enabled: bool) -> tuple[Callable[[str], None], Callable[[], None]]:
    """A time-based bar over the drill's planned length; (describe, close)."""
    last = [""]

    def plain(text: str) -> None:
        if text != last[0]:
            last[0] = text
            print(f"  {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)

    if not enabled:
        return plain, (lambda: None)
    try:
        from tqdm import tqdm
    except ImportError:
        return plain, (lambda: None)
    planned = settings.warmup_s + settings.fault_s * max(1, settings.flaps) + settings.settle_s + 20
    bar = tqdm(total=round(planned), unit="s", bar_format="{desc:<48}|{bar}| {n:.0f}/{total:.0f}s", file=sys.stderr)
    started = time.monotonic()

    def describe(text: str) -> None:
        bar.n = min(bar.total, round(time.monotonic() - started))
        bar.set_description_str(text[:48])
        bar.refresh()

    return describe, bar.close


async def _ticking(coro: Any, describe: Callable[[str], None]) -> DrillResult:
    state = {"text": "starting"}

    def remember(text: str) -> None:
        state["text"] = text
        describe(text)

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.5)
            describe(state["text"])

    ticker = asyncio.create_task(tick())
    try:
        return await coro(remember)  # type: ignore[no-any-return]
    finally:
        ticker.cancel()


def _backend(args: argparse.Namespace, workdir: Path) -> Any:
    spec = SCENARIOS[args.scenario]
    if args.backend == "kind":
        from xchat_chaos.kind import KindBackend
        from xchat_chaos.kind_commands import parse_endpoints

        try:
            endpoints = parse_endpoints(args.endpoints or "")
        except ValueError as exc:
            raise SystemExit(f"xchat drill: --endpoints: {exc}") from exc
        root = Path(args.ca).read_bytes() if args.ca else None
        return KindBackend(
            context=args.kube_context, namespace=args.namespace, mesh=args.mesh, endpoints=endpoints, root_certificates=root,
            release=args.release, chart=args.chart,
            upgrade_image_tag=args.upgrade_image_tag, upgrade_nats_tag=args.upgrade_nats_tag,
        )
    from xchat_chaos.local import LocalBackend

    return LocalBackend(
        workdir,
        regions=tuple(r for r in args.regions.split(",") if r),
        nodes_per_region=spec.nodes_per_region,
        proxied=True,
    )


def _run(args: argparse.Namespace) -> int:
    if args.status_port is not None and (args.backend != "local" or not 0 <= args.status_port <= 65535):
        print(f"xchat drill: --status-port {args.status_port}: the local back end only, 0..65535", file=sys.stderr)
        return 2
    if args.repeat > 1 and (args.backend != "local" or args.status_port is not None):
        print("xchat drill: --repeat: the local back end only, without --status-port", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix=f"xchat-drill-{args.scenario}-"))
    out = Path(args.out) if args.out else Path("drill-reports") / f"{args.scenario}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.repeat == 1:
        code, _ = _run_once(args, workdir, out)
        return code
    import json

    from xchat_chaos.repeats import summarize, table

    written = []
    for run in range(1, args.repeat + 1):
        print(f"run {run} of {args.repeat}", flush=True)
        code, report = _run_once(args, workdir / f"run-{run}", out / f"run-{run}")
        if report is None:
            return code
        written.append(report)
    summary = summarize(written)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(table(summary))
    print(f"summary: {out / 'summary.json'}")
    return 0 if summary["passed"] else 1


def _run_once(args: argparse.Namespace, workdir: Path, out: Path) -> tuple[int, dict[str, Any] | None]:
    """One drill; (exit status, its report: None when it could not run)."""
    from xchat_chaos import report as reports
    from xchat_chaos.drill import run_drill

    settings = _settings(args)
    workdir.mkdir(parents=True, exist_ok=True)
    describe, close = _progress_bar(settings, enabled=not args.no_progress and sys.stderr.isatty())
    from xchat_chaos.backend import BackendError

    backend = None
    describe(f"starting {args.backend} mesh")
    try:
        backend = _backend(args, workdir)
        backend.start()
        if args.scenario == "link-latency" and hasattr(backend, "check_links"):
            backend.check_links()  # kind: tc netem needs a kernel module this host may lack
    except BackendError as exc:
        close()
        if backend is not None and args.backend == "kind":
            with contextlib.suppress(BackendError):  # nothing to clean up if the cluster is unreachable
                backend.stop()
        print(f"xchat drill {args.scenario} ({args.backend}): cannot run: {exc}", file=sys.stderr)
        return 2, None
    page = None
    try:
        if args.status_port is not None:  # the region going down, and delivery going on, live (xchat.statuspage)
            from xchat.statuspage import serve_status_page

            mesh = backend.mesh
            page = serve_status_page(mesh.describe(), root_certificates=mesh.root_certificates, port=args.status_port)
            print(f"status page: {page.url}", flush=True)
        result = asyncio.run(_ticking(lambda p: run_drill(args.scenario, backend, settings, workdir, progress=p), describe))
    finally:
        if page is not None:
            page.close()
        describe("stopping mesh")
        backend.stop()
        close()
    report = reports.write(result, out)
    print(reports.headline(report))
    print(f"report: {out / 'report.json'}  {out / 'report.html'}  {out / 'timeline.png'}")
    return (0 if result.passed else 1), report
