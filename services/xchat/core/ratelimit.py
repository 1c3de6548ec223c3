"""Per-key token buckets: bounded request rates per device (or per peer address).

Kept in process memory on purpose: a limit is a guard against one caller
flooding one server process, not an accounting record, so losing it on a
restart is harmless. The key table is bounded (least recently used keys are
dropped), so the limiter itself cannot be used to exhaust memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from xchat.core.errors import ResourceExhausted

MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float


class RateLimiter:
    def __init__(self, rate: Rate, *, what: str, max_keys: int = MAX_KEYS) -> None:
        self._rate = rate
        self._what = what
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1.0, *, now: float | None = None) -> None:
        """Spends ``cost`` tokens of ``key``'s bucket or raises RESOURCE_EXHAUSTED."""
        if self._rate.per_second <= 0:
            return
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self._rate.burst, t))
        tokens = min(self._rate.burst, tokens + (t - last) * self._rate.per_second)
        if tokens < cost:
            self._buckets[key] = (tokens, t)
            wait = (cost - tokens) / self._rate.per_second
            raise ResourceExhausted(
                f"rate limit: at most {self._rate.per_second:g} {self._what}/s (burst {self._rate.burst:g}); retry in {wait:.1f}s"
            )
        self._buckets[key] = (tokens - cost, t)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
