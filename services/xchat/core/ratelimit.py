"""Per-key token buckets: bounded request rates per device (or per client address).

Kept in process memory on purpose: a limit is a guard against one caller
flooding the service, not an accounting record, so losing it on a restart is
harmless. Replicas share what callers spent through ``xchat.core.sharedlimits``
(``on_spend`` reports local spending, ``charge`` applies the others'), so a
caller does not get N times the rate from N processes. The key table is
bounded (least recently used keys are dropped), so the limiter itself cannot
be used to exhaust memory.

``take`` refuses with RESOURCE_EXHAUSTED carrying ``retry_after_ms`` (sent to
the client as trailing metadata by ``xchat.core.rpc``); ``try_take`` answers
a boolean for callers that degrade instead of refusing (one-time prekeys).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from xchat.core import metrics
from xchat.core.errors import ResourceExhausted

MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_second`` tokens refill a bucket holding at most ``burst``; 0 per second = unlimited."""

    per_second: float
    burst: float


class RateLimiter:
    def __init__(self, rate: Rate, *, what: str, per: str | None = None, max_keys: int = MAX_KEYS) -> None:
        self._rate = rate
        self._what = what
        self._per = f" per {per}" if per else ""
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        #: Told about every cost paid here (the process's share of a shared limit).
        self.on_spend: Callable[[str, float], None] | None = None

    @property
    def rate(self) -> Rate:
        return self._rate

    def _spend(self, key: str, cost: float, now: float | None) -> float:
        """Spends ``cost`` and returns 0, or spends nothing and returns the seconds until it could."""
        if self._rate.per_second <= 0:
            return 0.0
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self._rate.burst, t))
        tokens = min(self._rate.burst, tokens + max(0.0, t - last) * self._rate.per_second)
        wait = 0.0
        if cost > self._rate.burst:
            # Never payable at once: refused, with the time until the bucket is full.
            wait = max(self._rate.burst - tokens, 1.0) / self._rate.per_second
        elif tokens < cost:
            wait = (cost - tokens) / self._rate.per_second
        else:
            tokens -= cost
            if self.on_spend is not None:
                self.on_spend(key, cost)
        self._store(key, tokens, t)
        return wait

    def _store(self, key: str, tokens: float, t: float) -> None:
        self._buckets[key] = (tokens, t)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)

    def charge(self, key: str, cost: float, *, now: float | None = None) -> None:
        """Spends ``cost`` that another process paid; the bucket may go down to minus one burst
        (a flood spread over replicas is paid back, but never locks a key out for long)."""
        if self._rate.per_second <= 0:
            return
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self._rate.burst, t))
        tokens = min(self._rate.burst, tokens + max(0.0, t - last) * self._rate.per_second)
        self._store(key, max(-self._rate.burst, tokens - cost), t)

    def take(self, key: str, cost: float = 1.0, *, now: float | None = None) -> None:
        """Spends ``cost`` tokens of ``key``'s bucket or raises RESOURCE_EXHAUSTED with a retry hint."""
        wait = self._spend(key, cost, now)
        if wait > 0:
            # Labelled by what is limited (a handful of limiters), never by key.
            metrics.rate_limited(f"{self._what}{self._per}".strip())
            raise ResourceExhausted(
                f"rate limit: at most {self._rate.per_second:g} {self._what}/s{self._per} (burst {self._rate.burst:g});"
                f" retry in {math.ceil(wait * 10) / 10:.1f}s",
                retry_after_ms=math.ceil(wait * 1000),
            )

    def try_take(self, key: str, cost: float = 1.0, *, now: float | None = None) -> bool:
        """Spends ``cost`` tokens when the bucket holds them; False (nothing spent) otherwise."""
        return self._spend(key, cost, now) == 0.0
