"""The status page's model: polls every region and keeps what the page shows.

One :meth:`Collector.poll` probes every region at once (a thread per read, so a
frozen region costs one probe timeout, not one per URL): the services' gRPC
health, each NATS node's monitoring endpoints and the service process's
``/metrics`` (:mod:`xchat.statuspage.readings`). Between two polls it derives

* **rates**: NATS messages in/out per node (``/varz``), envelopes accepted and
  delivered per region (``xchat_envelopes_total``); a counter that went down (a
  restarted process) gives no rate for that poll rather than a negative one;
* **events**: region state changes (healthy / degraded / down), meta leader and
  stream leader changes: the recent failovers, newest first.

The snapshot is plain JSON data served as is by :mod:`xchat.statuspage.server`.
It holds addresses, names and numbers only: no credential reaches the collector.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from xchat.status import services_health
from xchat.statuspage.readings import (
    Fetch,
    MetricsReading,
    NodeReading,
    StreamReading,
    http_get,
    read_metrics,
    read_node,
)

EVENTS_KEPT = 50
HISTORY_KEPT = 120  # samples of the delivery rate drawn on the page (two minutes at the default interval)
MAILBOX_STREAM = "XCHAT_MAILBOX"

# endpoint -> grpc.health.v1 status name (SERVING, NOT_SERVING, UNREACHABLE, ...)
Health = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Target:
    """One region as the page reaches it."""

    region: str
    grpc: str | None
    monitors: tuple[str, ...] = ()
    metrics: str | None = None


def targets_from_mesh(rows: Sequence[Mapping[str, object]]) -> list[Target]:
    """From ``LocalMesh.describe()`` (or the ``regions`` of the ``mesh.json`` ``xchat up`` writes)."""
    out = []
    for row in rows:
        monitors = row.get("monitor") or ()
        assert isinstance(monitors, (list, tuple))
        metrics = row.get("metrics")
        out.append(Target(str(row["region"]), str(row["grpc"]) if row.get("grpc") else None,
                          tuple(str(m) for m in monitors), str(metrics) if metrics else None))
    return out


def region_state(services: str, nodes: Sequence[NodeReading]) -> str:
    """``healthy``: services SERVING and every node healthy; ``down``: nothing of it answers."""
    if services == "SERVING" and nodes and all(n.healthy for n in nodes):
        return "healthy"
    if services in ("UNREACHABLE", "UNKNOWN") and not any(n.healthy for n in nodes):
        return "down"
    return "degraded"


class _Rates:
    """Per-second rates of monotonic counters between successive polls."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, key: str, value: float | None, now: float) -> float | None:
        if value is None:
            self._last.pop(key, None)
            return None
        previous = self._last.get(key)
        self._last[key] = (now, value)
        if previous is None or now <= previous[0] or value < previous[1]:
            return None
        return round((value - previous[1]) / (now - previous[0]), 2)


def _stamp(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Collector:
    def __init__(
        self,
        targets: Sequence[Target],
        *,
        root_certificates: bytes | None = None,
        fetch: Fetch = http_get,
        health: Health | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.targets = list(targets)
        self._fetch = fetch
        self._health = health or (lambda endpoint: services_health(endpoint, root_certificates=root_certificates))
        self._clock, self._wall = clock, wall_clock
        self._rates = _Rates()
        self._states: dict[str, str] = {}
        self._leaders: dict[str, str | None] = {}
        self._server_regions: dict[str, str] = {}
        self._events: deque[dict[str, str]] = deque(maxlen=EVENTS_KEPT)
        self._history: deque[list[float | None]] = deque(maxlen=HISTORY_KEPT)
        self._lock = threading.Lock()
        self._latest: dict[str, Any] = {"generated_at": None, "healthy": False, "regions": [], "streams": [], "events": []}
        reads = sum(2 + len(t.monitors) for t in self.targets)
        self._pool = ThreadPoolExecutor(max_workers=max(4, reads), thread_name_prefix="xchat-statuspage")

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def latest(self) -> dict[str, Any]:
        with self._lock:
            return self._latest

    def _event(self, wall: float, kind: str, text: str) -> None:
        self._events.appendleft({"time": _stamp(wall), "kind": kind, "text": text})

    def poll(self) -> dict[str, Any]:
        """Probes every region once and returns (and keeps) the new snapshot."""
        health: dict[str, Future[str]] = {}
        nodes: dict[str, list[Future[NodeReading]]] = {}
        metrics: dict[str, Future[MetricsReading] | None] = {}
        for t in self.targets:
            if t.grpc:
                health[t.region] = self._pool.submit(self._health, t.grpc)
            nodes[t.region] = [self._pool.submit(read_node, m, self._fetch) for m in t.monitors]
            metrics[t.region] = self._pool.submit(read_metrics, t.metrics, self._fetch) if t.metrics else None
        now, wall = self._clock(), self._wall()
        regions, all_nodes = [], []
        totals: dict[str, float | None] = {"accepted_per_s": None, "delivered_per_s": None}
        for t in self.targets:
            services = health[t.region].result() if t.region in health else "UNKNOWN"
            readings = [f.result() for f in nodes[t.region]]
            future = metrics[t.region]
            region = self._region(t, services, readings, future.result() if future else None, now, wall)
            for key in totals:
                if region["metrics"].get(key) is not None:
                    totals[key] = (totals[key] or 0.0) + region["metrics"][key]
            regions.append(region)
            all_nodes += readings
        self._history.append([round(wall, 1), totals["accepted_per_s"], totals["delivered_per_s"]])
        snapshot = {
            "generated_at": _stamp(wall),
            "healthy": bool(regions) and all(r["state"] == "healthy" for r in regions),
            "regions": regions,
            "delivery": totals,
            "meta_leader": self._meta_leader(all_nodes, wall),
            "streams": self._streams(all_nodes, wall),
            "history": list(self._history),
            "events": list(self._events),
        }
        with self._lock:
            self._latest = snapshot
        return snapshot

    def _region(self, t: Target, services: str, readings: list[NodeReading], reading: MetricsReading | None,
                now: float, wall: float) -> dict[str, Any]:
        state = region_state(services, readings)
        before = self._states.get(t.region)
        if before is not None and before != state:
            self._event(wall, "region", f"region {t.region}: {before} \u2192 {state}")
        self._states[t.region] = state
        nodes = []
        for n in readings:
            if n.name:
                self._server_regions[n.name] = t.region
            nodes.append({
                "monitor": n.monitor, "name": n.name, "healthy": n.healthy, "error": n.error, "version": n.version,
                "connections": n.connections,
                "in_msgs_per_s": self._rates.rate(f"in {n.monitor}", n.in_msgs, now),
                "out_msgs_per_s": self._rates.rate(f"out {n.monitor}", n.out_msgs, now),
            })
        return {
            "region": t.region, "state": state, "services": services, "grpc": t.grpc, "nodes": nodes,
            "metrics": self._metrics(t, reading, now),
        }

    def _metrics(self, t: Target, reading: MetricsReading | None, now: float) -> dict[str, Any]:
        key = t.metrics or t.region
        up = reading is not None and reading.up
        envelopes = reading.envelopes if reading is not None and up else {}
        gauges = reading.gauges if reading is not None and up else {}
        return {
            "url": t.metrics, "up": up, "error": reading.error if reading else None,
            "accepted_per_s": self._rates.rate(f"accepted {key}", envelopes.get("accepted"), now),
            "delivered_per_s": self._rates.rate(f"delivered {key}", envelopes.get("delivered"), now),
            "acknowledged_per_s": self._rates.rate(f"acknowledged {key}", envelopes.get("acknowledged"), now),
            "publish_errors_per_s": self._rates.rate(
                f"errors {key}", reading.publish_errors if reading is not None and up else None, now),
            "online_devices": gauges.get("xchat_online_devices"),
            "backlog_messages": gauges.get("xchat_mailbox_backlog_messages"),
            "backlog_bytes": gauges.get("xchat_mailbox_backlog_bytes"),
            "store_up": gauges.get("xchat_store_up"),
        }

    def _leader_change(self, key: str, leader: str | None, wall: float, what: str) -> None:
        if key in self._leaders and self._leaders[key] != leader:
            self._event(wall, "leader", f"{what}: {self._leaders[key] or 'none'} \u2192 {leader or 'none'}")
        self._leaders[key] = leader

    def _majority(self, votes: list[str | None], nodes: list[NodeReading]) -> str | None:
        """The leader most answering nodes agree on; none while they disagree (an election, or a
        restarted node still naming the leader it knew before it died), and none while the one
        they name is a node of ours that does not answer (its followers have not noticed yet)."""
        named = [v for v in votes if v]
        leader = max(set(named), key=named.count) if named else None
        if not leader or named.count(leader) * 2 <= len(votes):
            return None
        if leader in self._server_regions and leader not in {n.name for n in nodes if n.healthy}:
            return None
        return leader

    def _meta_leader(self, nodes: list[NodeReading], wall: float) -> str | None:
        leader = self._majority([n.meta_leader for n in nodes if n.healthy], nodes)
        self._leader_change("$meta", leader, wall, "meta leader")
        return leader

    def _streams(self, nodes: list[NodeReading], wall: float) -> list[dict[str, Any]]:
        views: dict[str, list[tuple[str | None, StreamReading]]] = {}
        for n in nodes:
            if n.healthy:
                for s in n.streams:
                    views.setdefault(s.name, []).append((n.name, s))
        out = []
        for name in sorted(views, key=lambda s: (s != MAILBOX_STREAM, s)):
            leader = self._majority([s.leader for _, s in views[name]], nodes)
            self._leader_change(name, leader, wall, f"{name} leader")
            # The leader's own report is authoritative: it alone knows each replica's lag.
            own = next((s for node, s in views[name] if leader and node == leader), None)
            s = own or views[name][0][1]
            out.append({
                "name": name, "leader": leader, "leader_region": self._server_regions.get(leader or ""),
                "messages": s.messages, "bytes": s.bytes,
                "max_lag": max((r.lag for r in own.replicas), default=0) if own else None,
                "replicas": [
                    {"name": r.name, "region": self._server_regions.get(r.name), "current": r.current, "lag": r.lag,
                     "active_ms": r.active_ms}
                    for r in own.replicas
                ] if own else [],
            })
        return out
