"""Endpoints with failover, bearer tokens, and translation of gRPC errors.

The SDK holds an ordered list of regions' endpoints (home region first). An
endpoint is either one address serving all four services (``xchat serve
all``, or a gRPC-aware gateway) or a mapping ``{"auth": ..., "keys": ...,
"relay": ..., "mailbox": ...}`` (one Kubernetes Service each). A call goes to
the current region; when it fails with UNAVAILABLE or DEADLINE_EXCEEDED
(region down, frozen or cut off) the transport moves to the next region and
retries, so an app never handles a region failure itself. Every unary call
has a deadline, so a frozen region is noticed within ``call_timeout``.

Away from home, the transport probes the home region's gRPC health every
``HOME_PROBE_INTERVAL_S``; after ``HOME_HEALTHY_PROBES`` SERVING answers in a
row it moves back, and tells its listeners (the Sync stream moves too): users
do not stay on a foreign region, with its longer round trips, for ever.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, Union

import grpc
import grpc.aio

from xchat.client.errors import RequestRejected, ServiceUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
SERVICES = ("auth", "keys", "relay", "mailbox")
Endpoint = Union[str, Mapping[str, str]]
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
DEFAULT_CALL_TIMEOUT_S = 5.0
# How long a send, or a Sync's first answer, may take before the region counts as
# down and the SDK moves on (ADR 0013). Relay answers within ~1 s even while the
# mailbox stream elects a leader (0.5 s before it writes to the hedge stream, 0.5 s
# before a device record comes from a replica); a frozen or cut-off region never
# answers. A slow but live region costs one resend elsewhere (de-duplicated by
# message id) and a stay away from home until the home probes pass (~10 s).
DEFAULT_FAILOVER_AFTER_S = 1.0
DEFAULT_RETRY_BUDGET_S = 10.0
ROUND_BACKOFF_S = 0.25
MAX_ROUND_BACKOFF_S = 1.0
HOME_PROBE_INTERVAL_S = 5.0
HOME_HEALTHY_PROBES = 2
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}, encoded
# HTTP/2 pings notice a silent (frozen, partitioned) server on long streams.
CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 5000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    # Fail fast on a dead endpoint instead of waiting for reconnect backoff.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Transport:
    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        root_certificates: bytes | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT_S,
        failover_after: float = DEFAULT_FAILOVER_AFTER_S,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._sites = [_site(e) for e in endpoints]
        # Human-readable names of the regions' endpoints, for messages and failover.
        self.endpoints = [_label(site) for site in self._sites]
        self._root = root_certificates
        self.call_timeout = call_timeout
        # Deadline of sends and of a Sync's first answer (never above call_timeout).
        self.failover_after = min(failover_after, call_timeout)
        # How long one logical call keeps retrying across regions before giving up.
        self.retry_budget = max(DEFAULT_RETRY_BUDGET_S, 2 * call_timeout)
        self._current = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.home_probe_interval = HOME_PROBE_INTERVAL_S
        self._home_probe: asyncio.Task[None] | None = None
        self._move_listeners: list[Callable[[str], None]] = []

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._current]

    def channel(self, service: str) -> grpc.aio.Channel:
        return self._channel(self._sites[self._current][service])

    def _channel(self, target: str) -> grpc.aio.Channel:
        if target not in self._channels:
            if self._root is not None:
                credentials = grpc.ssl_channel_credentials(root_certificates=self._root)
                self._channels[target] = grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
            else:
                self._channels[target] = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        return self._channels[target]

    def fail_over(self, failed: str, reason: str = "") -> None:
        """Moves to the next endpoint unless another caller already did; the Sync stream follows."""
        if self.endpoint == failed:
            self._current = (self._current + 1) % len(self.endpoints)
            log.info("endpoint %s unavailable (%s); failing over to %s", failed, reason or "no answer", self.endpoint)
            # A send that found the region dead moves the receive stream too, instead
            # of leaving it to notice on its own (keepalive: seconds on an idle stream).
            for listener in list(self._move_listeners):
                listener(failed)
        if self._current != 0:
            self._watch_home()

    def on_move(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Calls ``listener(previous_endpoint)`` when the transport moves (back home, or away from a
        failed region); returns the unsubscriber."""
        self._move_listeners.append(listener)
        return lambda: self._move_listeners.remove(listener) if listener in self._move_listeners else None

    def _watch_home(self) -> None:
        if self._home_probe is not None and not self._home_probe.done():
            return
        try:
            self._home_probe = asyncio.get_running_loop().create_task(self._probe_home())
        except RuntimeError:
            pass  # no loop (closing): the next failover starts it

    async def _probe_home(self) -> None:
        healthy = 0
        while self._current != 0:
            await asyncio.sleep(self.home_probe_interval)
            healthy = healthy + 1 if await self._serving(self._sites[0]) else 0
            if healthy >= HOME_HEALTHY_PROBES and self._current != 0:
                away = self.endpoint
                self._current = 0
                log.info("home endpoint %s serves again; moving back from %s", self.endpoint, away)
                for listener in list(self._move_listeners):
                    listener(away)

    async def _serving(self, site: Mapping[str, str]) -> bool:
        """Every distinct address of ``site`` answers its overall gRPC health with SERVING."""
        for target in dict.fromkeys(site.values()):
            check: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self._channel(target).unary_unary(HEALTH_CHECK)
            try:
                if await check(b"", timeout=self.call_timeout) != SERVING:
                    return False
            except grpc.aio.AioRpcError:
                return False
        return True

    async def call(
        self, invoke: Callable[[grpc.aio.Channel, float], Awaitable[T]], *, service: str, budget: float | None = None
    ) -> T:
        """Runs ``invoke(channel, timeout)`` on ``service``, failing over across regions on outage errors.

        Keeps cycling through the regions, backing off between full rounds,
        until ``budget`` seconds (default ``retry_budget``) have passed: a
        region that is restarting (its channel in reconnect backoff) gets time
        to come back before the caller sees ServiceUnavailable.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.retry_budget if budget is None else budget)
        last: grpc.aio.AioRpcError | None = None
        attempt = 0
        while True:
            target = self.endpoint
            try:
                return await invoke(self.channel(service), self.call_timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise rejected(exc) from exc
                last = exc
                self.fail_over(target, f"{exc.code().name}: {exc.details()}")
            attempt += 1
            if attempt % len(self.endpoints) == 0:
                rounds = attempt // len(self.endpoints)
                pause = min(ROUND_BACKOFF_S * rounds, MAX_ROUND_BACKOFF_S)
                if loop.time() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
        raise ServiceUnavailable(
            f"no endpoint answered ({', '.join(self.endpoints)}): {last.details() if last else 'unknown'}"
        )

    async def close(self) -> None:
        if self._home_probe is not None:
            self._home_probe.cancel()
            await asyncio.gather(self._home_probe, return_exceptions=True)
            self._home_probe = None
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _site(endpoint: Endpoint) -> dict[str, str]:
    if isinstance(endpoint, str):
        return {service: endpoint for service in SERVICES}
    missing = [s for s in SERVICES if s not in endpoint]
    if missing:
        raise ValueError(f"endpoint mapping lacks {missing}; give all of {list(SERVICES)} or one address")
    return {service: endpoint[service] for service in SERVICES}


def _label(site: dict[str, str]) -> str:
    targets = set(site.values())
    return site["relay"] if len(targets) == 1 else ",".join(f"{k}={v}" for k, v in site.items())


def rejected(exc: grpc.aio.AioRpcError) -> RequestRejected:
    return RequestRejected(exc.code().name, exc.details() or "")


def metadata(token: str) -> tuple[tuple[str, Any], ...]:
    """Call metadata: the token, and a fresh request id the server logs and echoes (docs/observability.md)."""
    return (("authorization", f"Bearer {token}"), ("x-request-id", secrets.token_hex(8)))


def anonymous_metadata() -> tuple[tuple[str, Any], ...]:
    """Metadata of a call without a token (sealed sends): only a fresh, random request id,
    which links the call to nothing but its own log lines."""
    return (("x-request-id", secrets.token_hex(8)),)
