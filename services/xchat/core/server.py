"""Runs gRPC servicers with standard health checking, reflection, TLS and graceful stop.

Health: every registered service (and "") reports SERVING only while the
process reaches JetStream; a watcher flips it to NOT_SERVING within a second
or two of losing the store, so load balancers and the SDK move away.
Shutdown: health goes NOT_SERVING first, then in-flight RPCs get ``grace``
seconds to finish (an acknowledged send is never cut off), then NATS drains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xchat.core.addresses import ClientAddresses
from xchat.core.authz import Authorizer, token_verifier
from xchat.core.devices import DeviceDirectory
from xchat.core import metrics
from xchat.core.edge import Edge, Limits
from xchat.core.observe import Observer
from xchat.core.ratelimit import RateLimiter
from xchat.core.settings import ServiceSettings
from xchat.core.sharedlimits import LimitGossip
from xchat.core.store import BUCKET_DEVICES, Store
from xchat.core.tokens import TokenVerifier

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 1.0
DEFAULT_GRACE_S = 10.0
# Bounded sizes on every server: the largest request is an envelope of
# max_ciphertext_bytes plus protobuf framing; prekey uploads are bounded too.
MAX_RECEIVE_BYTES = 1024 * 1024
MAX_CONCURRENT_STREAMS = 1000


@dataclass(frozen=True, slots=True)
class Registration:
    """One servicer: how to add it, the full service name for health/reflection, and what it needs before serving."""

    full_name: str
    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    # Awaited before the server starts (e.g. a subscription its first call relies on).
    prepare: Callable[[], Awaitable[None]] | None = None
    # Awaited after the server stopped (e.g. the background tasks ``prepare`` started).
    stop: Callable[[], Awaitable[None]] | None = None
    # The servicer's own rate limiters by group name, shared with the other replicas
    # like the edge's (xchat.core.sharedlimits).
    limiters: Mapping[str, RateLimiter] = field(default_factory=dict)


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    if settings.tls is None:
        return None
    key = settings.tls.key.read_bytes()
    cert = settings.tls.cert.read_bytes()
    return grpc.ssl_server_credentials([(key, cert)])


class RunningServer:
    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        port: int,
        health_server: grpc.aio.Server | None = None,
        gossip: LimitGossip | None = None,
        metrics_server: metrics.MetricsServer | None = None,
    ) -> None:
        self.server = server
        self.health = health_servicer
        self.port = port
        self.health_server = health_server
        self.gossip = gossip
        self.stops: list[Callable[[], Awaitable[None]]] = []
        self.metrics_server = metrics_server


async def start_health(settings: ServiceSettings) -> tuple[health.aio.HealthServicer, grpc.aio.Server | None]:
    """The health servicer, NOT_SERVING, and its plaintext port (if configured) started already:
    kubelet's probes get an answer while the process is still reaching NATS."""
    servicer = health.aio.HealthServicer()
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    server = await _start_health_only(servicer, settings.health_listen) if settings.health_listen else None
    return servicer, server


async def _start_health_only(servicer: health.aio.HealthServicer, listen: str) -> grpc.aio.Server:
    """A plaintext server carrying only grpc.health.v1: nothing else is reachable on it."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 4096)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen} (health)")
    await server.start()
    return server


def edge(settings: ServiceSettings, store: Store, limits: Limits, verifier: TokenVerifier | None = None) -> Edge:
    """The interceptor that parses, authorises and limits every call (``xchat.core.edge``);
    ``verifier``: the process's own (whose keys the key-file watcher replaces), else a new one."""
    return Edge(
        Authorizer(
            verifier or token_verifier(settings),
            DeviceDirectory(store.bucket(BUCKET_DEVICES), replica=store.replica(BUCKET_DEVICES)),
        ),
        limits,
        ClientAddresses.from_settings(settings.trusted_proxy_header, settings.trusted_proxies),
    )


async def start_server(
    registrations: list[Registration],
    settings: ServiceSettings,
    store: Store,
    early_health: tuple[health.aio.HealthServicer, grpc.aio.Server | None] | None = None,
    verifier: TokenVerifier | None = None,
) -> tuple[RunningServer, asyncio.Task[None]]:
    """``early_health``: from :func:`start_health`, when it was started before the store;
    ``verifier``: the token verifier the edge uses (default: one from ``settings``)."""
    limits = Limits(settings)
    server = grpc.aio.server(
        # Observer first (outermost): it also sees, counts and ids the calls the edge refuses.
        interceptors=[Observer(region=settings.region), edge(settings, store, limits, verifier)],
        options=[
            ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
            ("grpc.max_concurrent_streams", MAX_CONCURRENT_STREAMS),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )
    health_servicer = early_health[0] if early_health else health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [r.full_name for r in registrations]
    for registration in registrations:
        registration.add(registration.servicer, server)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    shared = {**limits.groups, **{g: lim for r in registrations for g, lim in r.limiters.items()}}
    gossip = LimitGossip(store.nc, shared, services=settings.services) if settings.shared_limits else None
    if gossip is not None:
        await gossip.start()
    for registration in registrations:
        if registration.prepare is not None:
            await registration.prepare()
    await server.start()
    if early_health is not None:
        health_server = early_health[1]
    else:
        health_server = await _start_health_only(health_servicer, settings.health_listen) if settings.health_listen else None
    metrics_server = (
        metrics.serve_metrics(settings.metrics_listen, region=settings.region, services=settings.services)
        if settings.metrics_listen else None
    )
    running = RunningServer(server, health_servicer, port, health_server, gossip, metrics_server)
    running.stops = [r.stop for r in registrations if r.stop is not None]
    watcher = asyncio.create_task(_watch(health_servicer, ["", *names], store, settings.nats_monitor_url))
    return running, watcher


async def _watch(servicer: health.aio.HealthServicer, names: list[str], store: Store, monitor_url: str | None) -> None:
    """Health, and the sampled backlog when a NATS monitoring URL is set; both end with the server."""
    if monitor_url is None:
        await _watch_health(servicer, names, store)
        return
    await asyncio.gather(_watch_health(servicer, names, store), metrics.sample_backlog(monitor_url))


async def _watch_health(servicer: health.aio.HealthServicer, names: list[str], store: Store) -> None:
    last: bool | None = None
    while True:
        reachable = await store.healthy()
        metrics.STORE_UP.set(1 if reachable else 0)
        store.health_checked(reachable)
        # Cut off (xchat.core.liveness, or long unreachable): no client should come here.
        ok = reachable and not store.cut_off
        if ok != last:
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in names:
                await servicer.set(name, status)
            why = "cut off from the other regions" if reachable else "JetStream unreachable"
            log.info("health: %s", "SERVING" if ok else f"NOT_SERVING ({why})")
            last = ok
        await asyncio.sleep(HEALTH_INTERVAL_S)


async def stop_server(running: RunningServer, watcher: asyncio.Task[None], *, grace: float = DEFAULT_GRACE_S) -> None:
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    await running.health.enter_graceful_shutdown()
    await running.server.stop(grace)
    for stop in running.stops:
        await stop()
    if running.health_server is not None:
        await running.health_server.stop(0)
    if running.gossip is not None:
        await running.gossip.stop()
    if running.metrics_server is not None:
        running.metrics_server.stop()
