"""What one probe of one region reads: nats-server's monitoring JSON and a service process's /metrics.

Pure parsing, no state: :mod:`xchat.statuspage.collector` calls these once per
poll and turns successive readings into rates and events. Only named fields are
copied out of the documents read (never whole sections), so nothing nats-server
or a service exposes beyond them (paths, configuration) reaches the page.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

PROBE_TIMEOUT_S = 2.0  # a frozen region answers nothing: each read gives up after this

# url -> body; raises OSError (urllib's errors are OSErrors) or ValueError. Injected in unit tests.
Fetch = Callable[[str], bytes]


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as reply:  # noqa: S310 - loopback URLs of the mesh
        body: bytes = reply.read()
    return body


@dataclass(frozen=True, slots=True)
class Replica:
    name: str
    current: bool
    lag: int  # operations behind the leader
    active_ms: int | None  # since the leader last heard from it


@dataclass(frozen=True, slots=True)
class StreamReading:
    name: str
    leader: str | None
    messages: int
    bytes: int
    replicas: tuple[Replica, ...] = ()


@dataclass(slots=True)
class NodeReading:
    monitor: str
    healthy: bool
    error: str | None = None
    name: str | None = None
    version: str | None = None
    connections: int | None = None
    in_msgs: int | None = None  # counters since the server started
    out_msgs: int | None = None
    meta_leader: str | None = None
    streams: list[StreamReading] = field(default_factory=list)


def _json(fetch: Fetch, url: str) -> dict[str, Any]:
    data = json.loads(fetch(url))
    if not isinstance(data, dict):
        raise ValueError(f"{url}: not a JSON object")
    return data


def _error(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    reason = getattr(exc, "reason", None) or exc
    return str(reason)[:120] or type(exc).__name__


def _replicas(cluster: dict[str, Any]) -> tuple[Replica, ...]:
    out = []
    for r in cluster.get("replicas") or ():
        active = r.get("active")
        out.append(Replica(str(r.get("name")), bool(r.get("current")), int(r.get("lag") or 0),
                           int(active) // 1_000_000 if isinstance(active, int) and active > 0 else None))
    return tuple(out)


def read_node(monitor: str, fetch: Fetch = http_get) -> NodeReading:
    """``/healthz`` (JetStream ready), ``/varz`` (traffic counters) and ``/jsz`` (leaders, replicas, state)."""
    base = monitor.rstrip("/")
    try:
        try:
            health = _json(fetch, f"{base}/healthz?js-enabled-only=true")
        except urllib.error.HTTPError as exc:  # 503 with a JSON body while JetStream is not ready
            return NodeReading(base, healthy=False, error=f"HTTP {exc.code}")
        varz = _json(fetch, f"{base}/varz")
        jsz = _json(fetch, f"{base}/jsz?streams=true")
    except (OSError, ValueError) as exc:
        return NodeReading(base, healthy=False, error=_error(exc))
    node = NodeReading(
        base,
        healthy=health.get("status") == "ok",
        name=str(varz.get("server_name") or jsz.get("server_name") or "") or None,
        version=str(varz.get("version") or "") or None,
        connections=int(varz.get("connections") or 0),
        in_msgs=int(varz.get("in_msgs") or 0),
        out_msgs=int(varz.get("out_msgs") or 0),
        meta_leader=(jsz.get("meta_cluster") or {}).get("leader") or None,
    )
    for account in jsz.get("account_details") or ():
        for stream in account.get("stream_detail") or ():
            state, cluster = stream.get("state") or {}, stream.get("cluster") or {}
            node.streams.append(StreamReading(
                str(stream.get("name")), cluster.get("leader") or None,
                int(state.get("messages") or 0), int(state.get("bytes") or 0), _replicas(cluster),
            ))
    return node


# The families of xchat.core.metrics the page shows (docs/observability.md). prometheus-client's
# parser names a counter's family without its ``_total`` suffix.
ENVELOPES = "xchat_envelopes"
PUBLISH_ERRORS = "xchat_jetstream_publish_errors"
GAUGES = ("xchat_online_devices", "xchat_mailbox_backlog_messages", "xchat_mailbox_backlog_bytes", "xchat_store_up")


@dataclass(slots=True)
class MetricsReading:
    up: bool
    error: str | None = None
    envelopes: dict[str, float] = field(default_factory=dict)  # counter by outcome
    publish_errors: float = 0.0
    gauges: dict[str, float] = field(default_factory=dict)


def read_metrics(url: str, fetch: Fetch = http_get) -> MetricsReading:
    try:
        text = fetch(url).decode()
        families = list(text_string_to_metric_families(text))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return MetricsReading(up=False, error=_error(exc))
    reading = MetricsReading(up=True)
    for family in families:
        for sample in family.samples:
            if family.name == ENVELOPES and sample.name.endswith("_total"):
                reading.envelopes[sample.labels.get("outcome", "")] = sample.value
            elif family.name == PUBLISH_ERRORS and sample.name.endswith("_total"):
                reading.publish_errors += sample.value
            elif family.name in GAUGES and sample.name == family.name:
                reading.gauges[family.name] = sample.value
    return reading
