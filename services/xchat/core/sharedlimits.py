"""Rate limits shared by every replica: each process tells the others what callers spent.

A limit kept per process grants a caller N times the rate when N processes
serve it (6x with the chart's defaults: two replicas in each of three
regions). Sharing the buckets through JetStream KV would cost a replicated,
fsynced compare-and-set per call, as expensive as the call it guards.
Instead every process sums what each key spent locally and publishes the sums
on ``xchat.limits.<service>`` (core NATS, no persistence) every ``SYNC_INTERVAL_S``; the
others charge those sums to their own buckets (``RateLimiter.charge``).

So the buckets converge within one interval: a caller spreading calls over N
processes gets at most its burst from each during the first interval, then
one shared rate. Only heavy spenders are shared: a key is published once its
unpublished spending reaches ``SHARE_FRACTION`` of its burst, so ordinary
callers cost no messages at all and each process leaves at most that
fraction of a burst unshared per key (spending older than a full refill is
forgotten: it no longer matters to any bucket). Per call the cost is one dict
update; the rest is measured in docs/security.md. A lost message only makes a
limit looser for one interval, never stricter, and a partitioned region keeps
sharing within itself.

Least privilege (``xchat.core.permissions``): each service's replicas share
on their own subject, ``xchat.limits.<service>``, which only that service's
NATS user may publish or subscribe. A group of limits is shared on the
subject of every service that uses it (:data:`GROUP_SERVICES`: the device's
call budget is used by auth, keys and mailbox), and a one-process region
(``xchat serve all``) publishes and subscribes on all four. A receiver
applies an entry from one subject only: the first service (in
:data:`SERVICE_ORDER`) that the sender and the receiver both run and that
uses the group, so a process that hears the same spending on several
subjects charges it once, and an entry on a subject whose service does not
use its group (e.g. relay's credentials announcing login attempts) is
ignored: a compromised service can charge only its own service's buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription

from xchat.core.permissions import OWNED_BUCKETS, limits_subject
from xchat.core.ratelimit import RateLimiter

log = logging.getLogger(__name__)

#: The services, in the order that picks the one subject an entry is applied from.
SERVICE_ORDER: tuple[str, ...] = tuple(OWNED_BUCKETS)
#: Which services use each group of limits (the edge's groups and the services' own);
#: a group not listed is shared by every service.
GROUP_SERVICES: dict[str, tuple[str, ...]] = {
    "anonymous": ("auth",),
    "calls": ("auth", "keys", "mailbox"),
    "fetch": ("keys",),
    "sealed": ("relay",),
    "envelopes": ("relay",),
    "strangers": ("relay",),
    "stranger-senders": ("relay",),
    "prekey-claims-by-caller": ("keys",),
    "prekey-claims-by-target": ("keys",),
}
SYNC_INTERVAL_S = 0.25
# Keys per message: a flood of distinct keys is sent in several messages, each
# well under NATS's default 1 MB payload limit (keys are at most ~45 bytes).
MAX_ENTRIES_PER_MESSAGE = 4096
SHARE_FRACTION = 1 / 8
# Pending (not yet shared) keys per process: beyond it the smallest are forgotten.
MAX_PENDING = 100_000


class LimitGossip:
    """Shares the spending of ``limiters`` (by group name) with every other process on ``nc``."""

    def __init__(
        self,
        nc: NatsClient,
        limiters: dict[str, RateLimiter],
        *,
        services: tuple[str, ...] = SERVICE_ORDER,
        interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        """``services``: what this process serves (``all`` = every service)."""
        self._nc = nc
        self._limiters = limiters
        runs = set(SERVICE_ORDER) if "all" in services else set(services)
        self._services = tuple(s for s in SERVICE_ORDER if s in runs)
        self._interval = interval_s
        self._origin = secrets.token_hex(8)
        # (group, key) -> [unpublished cost, monotonic time of its first unpublished spending]
        self._pending: dict[tuple[str, str], list[float]] = {}
        self._subscriptions: list[Subscription] = []
        self._flusher: asyncio.Task[None] | None = None
        for group, limiter in limiters.items():
            limiter.on_spend = lambda key, cost, g=group: self._record(g, key, cost)

    def _record(self, group: str, key: str, cost: float) -> None:
        entry = self._pending.get((group, key))
        if entry is None:
            self._pending[(group, key)] = [cost, time.monotonic()]
        else:
            entry[0] += cost

    async def start(self) -> None:
        for service in self._services:

            async def receive(msg: Any, service: str = service) -> None:
                await self._receive(service, msg)

            self._subscriptions.append(await self._nc.subscribe(limits_subject(service), cb=receive))
        self._flusher = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for subscription in self._subscriptions:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    def _due(self, now: float) -> list[list[object]]:
        """Entries to publish now (removed from pending); forgets spending that has refilled."""
        due: list[list[object]] = []
        for (group, key), (cost, since) in list(self._pending.items()):
            rate = self._limiters[group].rate
            if rate.per_second <= 0:
                del self._pending[(group, key)]
            elif cost >= rate.burst * SHARE_FRACTION:
                due.append([group, key, round(cost, 3)])
                del self._pending[(group, key)]
            elif now - since > rate.burst / rate.per_second:
                del self._pending[(group, key)]
        if len(self._pending) > MAX_PENDING:
            self._pending.clear()  # only light spenders are left: forgetting them is harmless
        return due

    async def flush(self, *, now: float | None = None) -> None:
        """Publishes the heavy spending since the last flush (nothing for light callers)."""
        entries = self._due(time.monotonic() if now is None else now)
        for service in self._services:
            mine = [e for e in entries if service in GROUP_SERVICES.get(str(e[0]), SERVICE_ORDER)]
            for start in range(0, len(mine), MAX_ENTRIES_PER_MESSAGE):
                body = {"o": self._origin, "v": list(self._services), "s": mine[start : start + MAX_ENTRIES_PER_MESSAGE]}
                try:
                    await self._nc.publish(limits_subject(service), json.dumps(body, separators=(",", ":")).encode())
                except nats.errors.Error:
                    return  # the store is away: limits are per process until it is back

    def _applies_on(self, group: str, sender_services: set[str]) -> str | None:
        """The one subject's service on which an entry of ``group`` from that sender is applied here."""
        users = GROUP_SERVICES.get(group, SERVICE_ORDER)
        for service in self._services:
            if service in sender_services and service in users:
                return service
        return None

    async def _receive(self, service: str, msg: Any) -> None:
        """An entry counts only on the subject :meth:`_applies_on` names (see the module docstring)."""
        try:
            body = json.loads(msg.data)
            if body["o"] == self._origin:
                return
            # The subject proves the sender runs ``service`` (NATS permissions); the list it
            # claims only decides which of the subjects we share counts the entry.
            sender_services = {str(s) for s in body["v"] if str(s) in SERVICE_ORDER}
            if service not in sender_services:
                return
            for group, key, cost in body["s"]:
                limiter = self._limiters.get(str(group))
                if limiter is None or not isinstance(cost, (int, float)) or cost <= 0:
                    continue
                if self._applies_on(str(group), sender_services) == service:
                    limiter.charge(str(key), float(cost))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed rate-limit message on %s", limits_subject(service))
