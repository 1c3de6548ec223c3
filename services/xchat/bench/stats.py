"""Small statistics the bench reports: quantiles, medians of repeats, rates and ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile (``q`` in 0..1); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / p99.9 / max in milliseconds."""
    return {
        "p50_ms": quantile(values_s, 0.50) * 1000,
        "p99_ms": quantile(values_s, 0.99) * 1000,
        "p999_ms": quantile(values_s, 0.999) * 1000,
        "max_ms": max(values_s, default=0.0) * 1000,
    }


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


Figures = dict[str, float | None]


def medians(runs: Sequence[Mapping[str, float | None]]) -> Figures:
    """Per key, the median over the repeats that produced a number (None if none did)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run if k not in keys)
    out: Figures = {}
    for key in keys:
        numbers = [v for run in runs if (v := run.get(key)) is not None]
        out[key] = statistics.median(numbers) if numbers else None
    return out
