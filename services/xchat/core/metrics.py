"""The Prometheus metrics every service process exports, and the HTTP port that serves them.

One module owns every metric name, so docs/observability.md and the chart's
Grafana dashboard have a single source (tests/chart checks the dashboard
against ``METRIC_NAMES``). Labels are bounded by construction: the gRPC method
(a fixed table), the status code, an outcome or limiter name from a fixed set.
Never a device, an account or a message id: those would make one time series
per user and leak who talks to whom to whoever reads the metrics.

Counting happens at the edge (``xchat.core.edge`` observes each call's
requests and responses through :class:`CallObserver`), so servicers stay free
of metric calls, and in ``xchat.core.ratelimit`` (rejections). Mailbox backlog
is a fact of the NATS stream: services are not allowed STREAM.INFO on the
mailbox stream (``xchat.core.permissions``: it would list every mailbox
holder), so :func:`sample_backlog` reads nats-server's monitoring endpoint when
one is configured (``XCHAT_NATS_MONITOR_URL``), and totals only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

log = logging.getLogger(__name__)

# gRPC calls last from ~1 ms (cached reads) to the store timeout (5 s); a
# Sync stream lives for minutes, so its duration says little and lands in +Inf.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# An R3 publish ack is one inter-region round trip plus an fsync.
PUBLISH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Backlog is sampled, not counted: one STREAM state read every this many seconds.
BACKLOG_SAMPLE_S = 5.0
MAILBOX_STREAM_NAME = "XCHAT_MAILBOX"

RPCS = Counter("xchat_rpc_requests", "gRPC calls finished, by method and status code", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "xchat_rpc_duration_seconds", "gRPC call duration from admission to the last response", ["service", "method"],
    buckets=RPC_BUCKETS,
)
RATE_LIMITED = Counter("xchat_rate_limited", "Requests refused by a rate limiter, by limiter", ["limiter"])
ENVELOPE_OUTCOMES = ("accepted", "duplicate", "refused_quota", "refused", "delivered", "acknowledged")
ENVELOPES = Counter(
    "xchat_envelopes", "Envelopes by outcome: accepted, duplicate, refused_quota, refused, delivered, acknowledged",
    ["outcome"],
)
ONLINE_DEVICES = Gauge("xchat_online_devices", "Mailbox Sync streams open on this process (devices online)")
PUBLISH_SECONDS = Histogram(
    "xchat_jetstream_publish_duration_seconds", "JetStream publish to ack (quorum-replicated) of an envelope",
    buckets=PUBLISH_BUCKETS,
)
PUBLISH_ERRORS = Counter("xchat_jetstream_publish_errors", "JetStream envelope publishes that failed, by error kind", ["kind"])
BACKLOG_MESSAGES = Gauge("xchat_mailbox_backlog_messages", "Envelopes held in the mailbox stream, all devices (sampled)")
BACKLOG_BYTES = Gauge("xchat_mailbox_backlog_bytes", "Bytes held in the mailbox stream, all devices (sampled)")
STORE_UP = Gauge("xchat_store_up", "1 while this process reaches JetStream with a meta leader (its health)")
BUILD = Info("xchat_build", "Version and region of this process")
# Push wake-ups of offline devices (docs/push.md), by outcome: sent, failed (the gateway refused
# or stayed unreachable after the bounded retries), dropped (the queue was full), coalesced.
PUSH_OUTCOMES = ("sent", "failed", "dropped", "coalesced")
PUSHES = Counter("xchat_push", "Push wake-ups of devices without an open Sync, by outcome", ["outcome"])

# The names as scraped (counters gain _total, histograms _bucket/_sum/_count).
METRIC_NAMES: frozenset[str] = frozenset(
    {
        "xchat_rpc_requests_total",
        "xchat_rpc_duration_seconds_bucket",
        "xchat_rpc_duration_seconds_sum",
        "xchat_rpc_duration_seconds_count",
        "xchat_rate_limited_total",
        "xchat_envelopes_total",
        "xchat_online_devices",
        "xchat_jetstream_publish_duration_seconds_bucket",
        "xchat_jetstream_publish_duration_seconds_sum",
        "xchat_jetstream_publish_duration_seconds_count",
        "xchat_jetstream_publish_errors_total",
        "xchat_mailbox_backlog_messages",
        "xchat_mailbox_backlog_bytes",
        "xchat_store_up",
        "xchat_build_info",
        "xchat_push_total",
    }
)


def version() -> str:
    try:
        return metadata.version("xchat-backbone")
    except metadata.PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


@dataclass
class MetricsServer:
    """The running /metrics HTTP server (a daemon thread of prometheus-client)."""

    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(listen: str, *, region: str, services: tuple[str, ...]) -> MetricsServer:
    """Starts serving /metrics on ``listen`` (host:port; port 0 picks one)."""
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise OSError(f"metrics address {listen!r} is not host:port")
    BUILD.info({"version": version(), "region": region, "services": "+".join(services)})
    server, thread = start_http_server(int(port), addr=host.strip("[]"))
    return MetricsServer(server, thread)


def rate_limited(limiter: str) -> None:
    RATE_LIMITED.labels(limiter).inc()


def publish_failed(kind: str) -> None:
    """An envelope publish failed: ``kind`` is an exception class name or a JetStream error name (a small set)."""
    PUBLISH_ERRORS.labels(kind).inc()


def _read_jsz(url: str) -> tuple[int, int] | None:
    with urllib.request.urlopen(f"{url.rstrip('/')}/jsz?streams=true", timeout=2) as reply:  # noqa: S310 - operator-set URL
        data: dict[str, Any] = json.load(reply)
    for account in data.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            if stream.get("name") == MAILBOX_STREAM_NAME:
                state = stream.get("state") or {}
                return int(state.get("messages", 0)), int(state.get("bytes", 0))
    return None


async def sample_backlog(monitor_url: str) -> None:
    """Keeps the backlog gauges current from nats-server's /jsz (runs until cancelled)."""
    warned = False
    while True:
        try:
            found = await asyncio.to_thread(_read_jsz, monitor_url)
            if found is not None:
                BACKLOG_MESSAGES.set(found[0])
                BACKLOG_BYTES.set(found[1])
            warned = False
        except (OSError, ValueError, urllib.error.URLError) as exc:
            if not warned:  # once per outage, not every sample
                log.warning("mailbox backlog: cannot read %s/jsz: %s", monitor_url, exc)
                warned = True
        await asyncio.sleep(BACKLOG_SAMPLE_S)
