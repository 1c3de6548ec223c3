"""Rate limits shared by every replica: each process tells the others what callers spent.

A limit kept per process grants a caller N times the rate when N processes
serve it (6x with the chart's defaults: two replicas in each of three
regions). Sharing the buckets through JetStream KV would cost a replicated,
fsynced compare-and-set per call, as expensive as the call it guards.
Instead every process sums what each key spent locally and publishes the sums
on ``SUBJECT`` (core NATS, no persistence) every ``SYNC_INTERVAL_S``; the
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

from xchat.core.ratelimit import RateLimiter

log = logging.getLogger(__name__)

# Opt-in (``XCHAT_SHARED_LIMITS=1``): under per-service NATS users every
# service also needs publish and subscribe on this subject, which
# xchat.core.permissions does not grant yet (see docs/security.md).
SUBJECT = "xchat.limits"
SYNC_INTERVAL_S = 0.25
# Keys per message: a flood of distinct keys is sent in several messages, each
# well under NATS's default 1 MB payload limit (keys are at most ~45 bytes).
MAX_ENTRIES_PER_MESSAGE = 4096
SHARE_FRACTION = 1 / 8
# Pending (not yet shared) keys per process: beyond it the smallest are forgotten.
MAX_PENDING = 100_000


class LimitGossip:
    """Shares the spending of ``limiters`` (by group name) with every other process on ``nc``."""

    def __init__(self, nc: NatsClient, limiters: dict[str, RateLimiter], *, interval_s: float = SYNC_INTERVAL_S) -> None:
        self._nc = nc
        self._limiters = limiters
        self._interval = interval_s
        self._origin = secrets.token_hex(8)
        # (group, key) -> [unpublished cost, monotonic time of its first unpublished spending]
        self._pending: dict[tuple[str, str], list[float]] = {}
        self._subscription: Subscription | None = None
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
        self._subscription = await self._nc.subscribe(SUBJECT, cb=self._receive)
        self._flusher = asyncio.create_task(self._flush_forever())

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()

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
        for start in range(0, len(entries), MAX_ENTRIES_PER_MESSAGE):
            body = {"o": self._origin, "s": entries[start : start + MAX_ENTRIES_PER_MESSAGE]}
            try:
                await self._nc.publish(SUBJECT, json.dumps(body, separators=(",", ":")).encode())
            except nats.errors.Error:
                return  # the store is away: limits are per process until it is back

    async def _receive(self, msg: Any) -> None:
        try:
            body = json.loads(msg.data)
            if body["o"] == self._origin:
                return
            for group, key, cost in body["s"]:
                limiter = self._limiters.get(str(group))
                if limiter is not None and isinstance(cost, (int, float)) and cost > 0:
                    limiter.charge(str(key), float(cost))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed rate-limit message on %s", SUBJECT)
