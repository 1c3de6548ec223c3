"""The ``xchat`` command: serve one or all services, run the local mesh, run the demo.

This is the process edge: the only place that reads the environment and
turns failures into a one-line message and an exit code (no tracebacks for
mistakes a person can fix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from xchat.client.errors import ClientError
from xchat.core.errors import XChatError
from xchat.core.logs import LOG_FORMATS
from xchat.core.logs import configure as configure_logs
from xchat.core.metrics import version as _version
from xchat.core.settings import SERVICE_NAMES, SettingsError, from_env

if TYPE_CHECKING:
    from xchat.mesh.local import LocalMesh
    from xchat.statuspage import StatusPage

# Exit codes (docs/observability.md): 0 done / healthy; 1 failed or unavailable
# (a server did not answer, a region is degraded); 2 usage (a flag or setting is
# wrong: fix the command); 130 interrupted.
EXIT_FAILED = 1
EXIT_USAGE = 2


def _serve(args: argparse.Namespace) -> int:
    from xchat.app import serve_forever

    services = SERVICE_NAMES if args.service == "all" else (args.service,)
    settings = from_env(
        region=args.region,
        listen=args.listen,
        health_listen=args.health_listen,
        nats_urls=tuple(args.nats.split(",")) if args.nats else None,
        replicas=args.replicas,
        services=services,
        metrics_listen=args.metrics_listen,
    )
    asyncio.run(serve_forever(settings))
    return 0


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both stop the mesh cleanly (even if SIGINT was ignored by a parent shell)."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def _up(args: argparse.Namespace) -> int:
    from xchat.mesh.local import LocalMesh

    _stop_on_signals()
    regions = tuple(r for r in args.regions.split(",") if r)
    if not regions or args.nodes_per_region < 1:
        raise SettingsError("need at least one region (--regions a,b,c) and --nodes-per-region >= 1")
    if len(set(regions)) != len(regions):
        raise SettingsError(f"region names must be unique: {','.join(regions)}")
    if len(regions) < 3:
        raise SettingsError(f"--regions {args.regions}: three regions are the minimum (every write is replicated R3)")
    if args.base_port is not None and not 1024 <= args.base_port <= 65535 - 1000:
        raise SettingsError(f"--base-port {args.base_port}: choose 1024..{65535 - 1000} (the mesh takes up to 1000 ports)")
    if not 0 <= args.status_port <= 65535:
        raise SettingsError(f"--status-port {args.status_port}: choose 1..65535, or 0 for a free port")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="xchat-mesh-"))
    started = time.monotonic()
    mesh = LocalMesh(
        workdir, regions=regions, nodes_per_region=args.nodes_per_region, base_port=args.base_port, tls=not args.insecure,
        nats_auth=not args.open_nats,
        progress=lambda step: print(f"  {time.monotonic() - started:5.1f}s {step}", flush=True),
        # The mesh's processes log as this command was asked to (their logs are in the workdir).
        extra_env={k: v for k, v in (("XCHAT_LOG_FORMAT", args.log_format or os.environ.get("XCHAT_LOG_FORMAT")),
                                     ("XCHAT_LOG_LEVEL", args.log_level or os.environ.get("XCHAT_LOG_LEVEL"))) if v},
    )
    if args.open_nats:
        print("WARNING: --open-nats: any local process can read every mailbox and write every bucket", file=sys.stderr)
    print(f"starting {len(regions)} regions in {workdir} ...", flush=True)
    # The status page (xchat.statuspage) starts once the mesh is up and stops before it.
    with mesh, _status_page(mesh, args.status_port) as page:
        print(f"mesh up in {time.monotonic() - started:.1f}s\n")
        print(f"{'region':<8}{'gRPC (auth, keys, relay, mailbox)':<36}{'NATS':<28}{'monitor':<24}metrics")
        for row in mesh.describe():
            print(
                f"{row['region']!s:<8}{row['grpc']!s:<36}{','.join(row['nats']):<28}"  # type: ignore[arg-type]
                f"{','.join(row['monitor']):<24}{row['metrics']}"  # type: ignore[arg-type]
            )
        # What `xchat status --workdir` reads.
        (workdir / "mesh.json").write_text(json.dumps({"regions": mesh.describe(), "ca": str(mesh.tls.ca) if mesh.tls else None}))
        print(f"\nlogs: {workdir / 'logs'}   status: xchat status --workdir {workdir}")
        print(f"status page: {page.url}")
        if mesh.tls is not None:
            print(f"TLS on every hop; clients trust the CA in {mesh.tls.ca}")
        if args.demo:
            from xchat.demo import run_demo

            asyncio.run(
                run_demo(
                    mesh.endpoints(regions[0]),
                    mesh.endpoints(regions[-1]),
                    workdir / "clients",
                    carol_endpoints=mesh.endpoints(regions[len(regions) // 2]),  # the middle region of three
                    root_certificates=mesh.root_certificates,
                )
            )
        if args.exit_after_demo:
            return 0
        try:
            # Inside the try: a Ctrl-C that lands while this line is written is a stop, not a crash.
            print("press Ctrl-C to stop", flush=True)
            while True:
                # Short sleeps: the kernel may deliver SIGINT to one of the status page's
                # threads, which does not interrupt a long sleep here; Python runs the
                # handler at this thread's next wake-up (a one-hour sleep hung Ctrl-C).
                time.sleep(0.5)
        except KeyboardInterrupt:
            # The stop below is orderly; a second Ctrl-C or SIGTERM must not cut it short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("\nstopping ...", flush=True)
    return 0


def _status_page(mesh: LocalMesh, port: int) -> StatusPage:
    from xchat.statuspage import serve_status_page

    try:
        return serve_status_page(mesh.describe(), root_certificates=mesh.root_certificates, port=port)
    except OSError as exc:  # the port chosen is taken: a usage mistake (the mesh stops again)
        raise SettingsError(f"--status-port {port}: {exc.strerror or exc}") from exc


def _demo(args: argparse.Namespace) -> int:
    from xchat.demo import run_demo

    alice = args.alice_endpoints.split(",")
    bob = args.bob_endpoints.split(",") if args.bob_endpoints else alice
    roots = Path(args.ca).read_bytes() if args.ca else None
    if roots is not None and b"-----BEGIN CERTIFICATE-----" not in roots:
        raise SettingsError(f"--ca {args.ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    asyncio.run(run_demo(alice, bob, Path(tempfile.mkdtemp(prefix="xchat-demo-")), root_certificates=roots))
    return 0


def _pairs(values: list[str] | None, flag: str) -> dict[str, list[str]]:
    """``REGION=ADDRESS`` flags (repeatable) grouped by region."""
    out: dict[str, list[str]] = {}
    for value in values or ():
        region, sep, address = value.partition("=")
        if not sep or not region or not address:
            raise SettingsError(f"{flag} {value!r}: expected REGION=ADDRESS")
        out.setdefault(region, []).append(address)
    return out


def _status(args: argparse.Namespace) -> int:
    from xchat.status import Target, as_json, from_mesh_file, probe, table

    ca = args.ca
    if args.workdir:
        try:
            data = json.loads((Path(args.workdir) / "mesh.json").read_text())
        except OSError as exc:
            raise SettingsError(f"--workdir {args.workdir}: no mesh.json there (written by `xchat up`): {exc.strerror}") from exc
        targets = from_mesh_file(data)
        ca = ca or data.get("ca")
    else:
        grpcs, monitors = _pairs(args.grpc, "--grpc"), _pairs(args.monitor, "--monitor")
        if not grpcs and not monitors:
            raise SettingsError("nothing to probe: pass --workdir of `xchat up`, or --grpc/--monitor REGION=ADDRESS")
        targets = [
            Target(r, grpcs[r][0] if r in grpcs else None, tuple(monitors.get(r, ()))) for r in dict.fromkeys([*grpcs, *monitors])
        ]
    try:
        roots = Path(ca).read_bytes() if ca else None
    except OSError as exc:
        raise SettingsError(f"--ca {ca}: {exc.strerror}") from exc
    regions = probe(targets, root_certificates=roots)
    print(as_json(regions) if args.json else table(regions))
    return 0 if all(r.healthy for r in regions) else EXIT_FAILED


def _audit(args: argparse.Namespace) -> int:
    """Key transparency audit (docs/key-transparency.md): the signed statement, or one line and exit 1."""
    import grpc

    from xchat.audit import AuditViolation, PublishRefused, audit, read_auditor_key, read_directory_key

    regions = {name: addresses[0] for name, addresses in _pairs(args.region, "--region").items()}
    if not regions:
        raise SettingsError("name at least one region to audit: --region NAME=HOST:PORT (repeatable)")
    if args.from_epoch < 0:
        raise SettingsError(f"--from {args.from_epoch}: epochs start at 0")
    try:
        auditor = read_auditor_key(Path(args.auditor_key))
        pinned = dict(read_directory_key(Path(p)) for p in args.directory_key) if args.directory_key else None
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    roots = Path(args.ca).read_bytes() if args.ca else None
    try:
        result = asyncio.run(
            audit(regions, from_epoch=args.from_epoch, auditor=auditor, root_certificates=roots,
                  state=Path(args.state) if args.state else None, directory_keys=pinned,
                  publish_statement=args.publish)
        )
    except AuditViolation as exc:
        print(f"xchat audit: VIOLATION: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PublishRefused as exc:
        print(f"xchat audit: the directory refused the statement: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except grpc.aio.AioRpcError as exc:
        print(f"xchat audit: the directory did not answer: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(result, indent=1))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from xchat.keygen import generate_token_keys, settings_hint

    try:
        signing, public = generate_token_keys(Path(args.out))
    except FileExistsError as exc:
        raise SettingsError(str(exc)) from exc
    print(f"wrote {signing} and {public}; set:\n{settings_hint(signing, public)}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from xchat.bench import build, profile, run_sync, table

    _stop_on_signals()
    # nats-py closing a TLS connection trips a harmless asyncio warning; keep the output readable.
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    # The SDK logs every refused message; the bench reports each phase's first failure and counts the rest.
    logging.getLogger("xchat.client").setLevel(logging.ERROR)
    if args.online_devices is not None and args.online_devices < 1:
        raise SettingsError("--online-devices must be at least 1")
    if args.repeats is not None and args.repeats < 1:
        raise SettingsError("--repeats must be at least 1")
    chosen = profile(args.profile, online_devices=args.online_devices, repeats=args.repeats)
    # From the repository the results land in docs/perf/ (committed); elsewhere on stdout.
    in_repo = Path("pyproject.toml").is_file() and Path("docs/perf").is_dir()
    target = args.json or ("docs/perf/latest.json" if in_repo else "-")
    human = sys.stderr if target == "-" else sys.stdout

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"bench: {time.monotonic() - started:5.1f}s {message}", file=sys.stderr, flush=True)

    results = run_sync(
        chosen,
        workdir=Path(args.workdir) if args.workdir else None,
        flame_dir=Path(args.flamegraphs) if args.flamegraphs else None,
        progress=progress,
    )
    command = f"xchat bench --profile {args.profile}"
    command += f" --online-devices {args.online_devices}" if args.online_devices else ""
    command += f" --repeats {args.repeats}" if args.repeats else ""
    report = build(results, command=command)
    text = json.dumps(report, indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.with_suffix(".md").write_text(table(report))
        progress(f"wrote {path} and {path.with_suffix('.md')}")
    print(table(report), file=human, flush=True)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="xchat", description="End-to-end encrypted messaging that survives losing a region.")
    top.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    top.add_argument("--version", action="version", version=f"%(prog)s {_version()}", help="print the version and exit")
    top.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json lines (env XCHAT_LOG_FORMAT)")
    top.add_argument("--log-level", help="debug, info, warning or error (env XCHAT_LOG_LEVEL; default info for serve)")
    sub = top.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run one service (or all four) for one region")
    serve.add_argument("service", choices=[*SERVICE_NAMES, "all"], help="which service this process runs ('all': the four)")
    serve.add_argument("--region", help="region name (env XCHAT_REGION)")
    serve.add_argument("--listen", help="gRPC address host:port (env XCHAT_LISTEN)")
    serve.add_argument("--health-listen", help="plaintext health-only address for kubelet probes (env XCHAT_HEALTH_LISTEN)")
    serve.add_argument("--nats", help="comma-separated NATS URLs, own region first (env XCHAT_NATS_URLS)")
    serve.add_argument("--replicas", type=int, help="JetStream replicas, one per region (env XCHAT_REPLICAS)")
    serve.add_argument("--metrics-listen", help="Prometheus /metrics address host:port (env XCHAT_METRICS_LISTEN; default off)")
    serve.set_defaults(run=_serve)

    up = sub.add_parser("up", help="start a local multi-region mesh (nats-server + services per region)")
    up.add_argument("--regions", default="a,b,c", help="comma-separated region names (default a,b,c)")
    up.add_argument("--nodes-per-region", type=int, default=1, help="nats-server processes per region (default 1)")
    up.add_argument("--base-port", type=int, default=None, help="first port to use (default: free ports)")
    up.add_argument("--workdir", help="where data and logs go (default: a new temp dir)")
    up.add_argument("--demo", action="store_true", help="run the two-user demo once the mesh is up")
    up.add_argument("--insecure", action="store_true", help="plaintext everywhere (default: TLS with a local CA)")
    up.add_argument(
        "--open-nats", action="store_true",
        help="development only: NATS without users or permissions (default: one least-privilege user per service)",
    )
    up.add_argument("--exit-after-demo", action="store_true", help="stop the mesh when the demo ends")
    up.add_argument("--status-port", type=int, default=0,
                    help="port of the live status page on 127.0.0.1 (default 0: a free one; the URL is printed)")
    up.set_defaults(run=_up)

    demo = sub.add_parser("demo", help="two users in different regions exchange encrypted messages")
    demo.add_argument("--alice-endpoints", required=True, help="comma-separated gRPC endpoints for alice")
    demo.add_argument("--bob-endpoints", help="comma-separated gRPC endpoints for bob (default: alice's)")
    demo.add_argument("--ca", help="PEM file of the CA to trust (TLS endpoints)")
    demo.set_defaults(run=_demo)

    status = sub.add_parser("status", help="health of each region: services (gRPC health) and NATS nodes (/healthz, /jsz)")
    status.add_argument("--workdir", help="the workdir of a running `xchat up` (reads its mesh.json)")
    status.add_argument("--grpc", action="append", metavar="REGION=HOST:PORT", help="a region's gRPC endpoint (repeatable)")
    status.add_argument("--monitor", action="append", metavar="REGION=URL",
                        help="a NATS node's monitoring URL, e.g. a=http://127.0.0.1:8222 (repeatable)")
    status.add_argument("--ca", help="PEM file of the CA to trust for TLS endpoints (default: the mesh's, with --workdir)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(run=_status)

    audit = sub.add_parser("audit", help="replay the key transparency log, verify it, print a signed statement")
    audit.add_argument("--from", dest="from_epoch", type=int, default=0, help="first epoch the statement covers (default 0)")
    audit.add_argument("--region", action="append", metavar="NAME=HOST:PORT",
                       help="a region's gRPC endpoint (repeatable: every region's log must be the same)")
    audit.add_argument("--auditor-key", required=True, help="file with the auditor's base64 Ed25519 seed (signs the statement)")
    audit.add_argument("--ca", help="PEM file of the CA to trust (TLS endpoints)")
    audit.add_argument("--directory-key", action="append", metavar="FILE",
                       help="the deployment's directory (token) public key, base64 (repeatable, for rotations); "
                       "default: the keys the directory lists itself")
    audit.add_argument("--state", help="file remembering the last audited epoch (a later run then catches a rollback or fork)")
    audit.add_argument("--publish", action="store_true",
                       help="hand the statement to the directory, which serves it to clients that require this auditor "
                            "(the deployment lists the auditor's public key in XCHAT_KT_AUDITOR_KEYS)")
    audit.set_defaults(run=_audit)

    keygen = sub.add_parser("keygen", help="write the access-token key pair `xchat serve` needs (never overwrites)")
    keygen.add_argument("--out", default=".", help="directory for token-signing.key and token-public.key (default: .)")
    keygen.set_defaults(run=_keygen)

    bench = sub.add_parser("bench", help="measure delivery end to end on a private local mesh, next to same-run baselines")
    bench.add_argument("--profile", choices=["smoke", "default", "full"], default="default",
                       help="smoke: < 60 s, checks the suite runs; default: ~3 min; full: longer, more repeats")
    bench.add_argument("--json", help="where the JSON report goes, '-' for stdout (default: docs/perf/latest.json "
                       "inside the repository, else stdout); the table goes next to it as .md")
    bench.add_argument("--online-devices", type=int, help="devices holding a receive stream open (default 1000; try 10000)")
    bench.add_argument("--repeats", type=int, help="repetitions per figure; medians are reported (default: the profile's)")
    bench.add_argument("--workdir", help="where the mesh's data and logs go (default: a temp dir, removed afterwards)")
    bench.add_argument("--flamegraphs", metavar="DIR", help="also record py-spy flame graphs of the cross-region "
                       "closed loops (an extra, unmeasured pass) into DIR")
    bench.set_defaults(run=_bench)

    from xchat_chaos.cli import add_drill_parser
    add_drill_parser(sub)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    fmt = args.log_format or os.environ.get("XCHAT_LOG_FORMAT") or "text"
    default = logging.INFO if args.verbose or args.command == "serve" else logging.WARNING
    try:
        configure_logs(fmt=fmt, level=args.log_level or os.environ.get("XCHAT_LOG_LEVEL") or default)
    except ValueError as exc:
        print(f"xchat: log settings: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    try:
        code = args.run(args)
    except SettingsError as exc:
        print(f"xchat: {exc}", file=sys.stderr)
        code = EXIT_USAGE
    except (XChatError, ClientError) as exc:
        # A server refused or did not answer: not a usage mistake.
        print(f"xchat: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"xchat: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
