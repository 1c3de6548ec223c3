"""``xchat status``: what each region looks like from outside, as an operator's probes see it.

Per region it reads the services' grpc.health.v1 (overall status "") and, per
NATS node, nats-server's monitoring endpoints: ``/healthz`` (up, JetStream
ready) and ``/jsz`` (meta leader, the mailbox stream's leader, replica lag
and backlog). It uses only
what any client may read: no NATS credentials, no tokens. A region is healthy
when its services report SERVING and every one of its NATS nodes is healthy.

The regions come from the ``mesh.json`` that ``xchat up`` writes in its
workdir, or from ``REGION=ADDRESS`` flags (``xchat.cli``).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from xchat.mesh.readiness import health_status

MAILBOX_STREAM = "XCHAT_MAILBOX"
PROBE_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class Target:
    """Where one region is reached: its gRPC endpoint and its NATS monitoring URLs."""

    region: str
    grpc: str | None
    monitors: tuple[str, ...] = ()


@dataclass(slots=True)
class NodeStatus:
    monitor: str
    healthy: bool
    error: str | None = None
    server_name: str | None = None
    meta_leader: str | None = None
    backlog_messages: int | None = None
    backlog_bytes: int | None = None
    mailbox_leader: str | None = None
    mailbox_lag: int | None = None  # largest replica lag (operations) this node knows of


@dataclass(slots=True)
class RegionStatus:
    region: str
    grpc: str | None
    services: str  # SERVING, NOT_SERVING, UNREACHABLE or UNKNOWN (no endpoint given)
    nodes: list[NodeStatus] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        if self.services not in ("SERVING", "UNKNOWN"):
            return False
        if self.services == "UNKNOWN" and not self.nodes:
            return False  # nothing was probed: not evidence of health
        return all(n.healthy for n in self.nodes)


def services_health(endpoint: str, *, root_certificates: bytes | None) -> str:
    return health_status(endpoint, PROBE_TIMEOUT_S, root_certificates=root_certificates)


def _get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as reply:  # noqa: S310 - operator-given monitoring URL
        data: dict[str, Any] = json.load(reply)
    return data


def node_status(monitor: str) -> NodeStatus:
    base = monitor.rstrip("/")
    try:
        # /healthz answers 503 with a JSON body when JetStream is not ready: urllib raises HTTPError.
        health = _get_json(f"{base}/healthz?js-enabled-only=true")
        jsz = _get_json(f"{base}/jsz?streams=true")
    except urllib.error.HTTPError as exc:
        return NodeStatus(base, healthy=False, error=f"HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        return NodeStatus(base, healthy=False, error=str(getattr(exc, "reason", exc)))
    status = NodeStatus(base, healthy=health.get("status") == "ok", server_name=jsz.get("server_name"))
    status.meta_leader = (jsz.get("meta_cluster") or {}).get("leader")
    for account in jsz.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream.get("name") == MAILBOX_STREAM:
                state = stream.get("state") or {}
                status.backlog_messages, status.backlog_bytes = int(state.get("messages", 0)), int(state.get("bytes", 0))
                cluster = stream.get("cluster") or {}
                status.mailbox_leader = cluster.get("leader")
                status.mailbox_lag = max((int(r.get("lag", 0)) for r in cluster.get("replicas") or ()), default=0)
    return status


def probe(targets: list[Target], *, root_certificates: bytes | None = None) -> list[RegionStatus]:
    return [
        RegionStatus(
            t.region,
            t.grpc,
            services_health(t.grpc, root_certificates=root_certificates) if t.grpc else "UNKNOWN",
            [node_status(m) for m in t.monitors],
        )
        for t in targets
    ]


def as_json(regions: list[RegionStatus]) -> str:
    return json.dumps(
        {"healthy": all(r.healthy for r in regions), "regions": [{**asdict(r), "healthy": r.healthy} for r in regions]},
        indent=2,
    )


def table(regions: list[RegionStatus]) -> str:
    lines = [f"{'region':<8}{'state':<10}{'services':<13}{'gRPC':<22}{'NATS nodes':<12}{'leaders (meta/mbx)':<20}backlog"]
    for r in regions:
        up = sum(n.healthy for n in r.nodes)
        meta = next((n.meta_leader for n in r.nodes if n.meta_leader), "-")
        mailbox = next((n.mailbox_leader for n in r.nodes if n.mailbox_leader), "-")
        leader = f"{meta}/{mailbox}"
        backlog = next((n for n in r.nodes if n.backlog_messages is not None), None)
        held = f"{backlog.backlog_messages} msgs / {backlog.backlog_bytes} B" if backlog else "-"
        lines.append(
            f"{r.region:<8}{'healthy' if r.healthy else 'DEGRADED':<10}{r.services:<13}{r.grpc or '-':<22}"
            f"{f'{up}/{len(r.nodes)} ok':<12}{leader:<20}{held}"
        )
        lines += [f"        ! {n.monitor}: {n.error}" for n in r.nodes if n.error]
    return "\n".join(lines)


def from_mesh_file(data: dict[str, Any]) -> list[Target]:
    """Targets from the ``mesh.json`` written by ``xchat up``."""
    return [Target(str(r["region"]), str(r["grpc"]), tuple(r.get("monitor") or ())) for r in data["regions"]]
