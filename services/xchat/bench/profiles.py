"""How much work one ``xchat bench`` run does: the ``smoke``, ``default`` and ``full`` profiles.

A profile only sizes the run (counts, durations, repeats); what is measured is
the same in every profile, so the smoke profile proves the whole suite runs and
the JSON keeps its shape. Units are in the field names (``_s`` seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

# Body sizes the issue asks for: a typical chat message and a large one.
SMALL_BODY = 256
LARGE_BODY = 16 * 1024
# The fixed open-loop rate (msg/s); the other open-loop rate is a share of the measured peak.
FIXED_RATE = 100.0
PEAK_SHARE = 0.5
# Sends in flight from one app for the concurrent closed-loop figure.
IN_FLIGHT = 64


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    # Each measured figure is the median over this many repetitions.
    repeats: int
    # Raw JetStream baselines: messages per repetition (sequential publish uses a quarter:
    # it is ~20x slower and only needs enough samples for p99).
    js_messages: int
    # Publishes in flight for the windowed JetStream baseline (nats-py's publish_async window).
    js_window: int
    # gRPC echo baselines: calls per repetition (unary) and messages (stream).
    grpc_calls: int
    grpc_stream_messages: int
    # Closed-loop SDK throughput: keep sending for this long, then wait for the rest to arrive.
    throughput_s: float
    # Open-loop SDK latency: schedule sends at a fixed rate for this long.
    open_loop_s: float
    # Upper bound on the open-loop rate (keeps a fast system's 50 %-of-peak phase short).
    max_open_loop_rate: float
    # How long a phase waits for messages still in flight before it reports them missing.
    drain_timeout_s: float
    # Messages queued for one offline device before it reconnects (backlog drain, stored bytes),
    # and how many times (filling is slow: every message is encrypted by the SDK).
    backlog: int
    backlog_repeats: int
    # Devices holding a Sync stream open, and how long they sit idle while CPU is measured.
    online_devices: int
    idle_s: float
    # Run the 16 KiB body variant and the same-region variant in full (not only the key figures).
    wide: bool


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", repeats=1, js_messages=200, js_window=64, grpc_calls=100, grpc_stream_messages=200,
        throughput_s=0.5, open_loop_s=0.5, max_open_loop_rate=100.0, drain_timeout_s=15.0,
        backlog=50, backlog_repeats=1, online_devices=10, idle_s=1.0, wide=False,
    ),
    "default": Profile(
        name="default", repeats=3, js_messages=2000, js_window=256, grpc_calls=500, grpc_stream_messages=3000,
        throughput_s=2.0, open_loop_s=3.0, max_open_loop_rate=2000.0, drain_timeout_s=15.0,
        backlog=1000, backlog_repeats=3, online_devices=1000, idle_s=3.0, wide=False,
    ),
    "full": Profile(
        name="full", repeats=5, js_messages=10000, js_window=256, grpc_calls=2000, grpc_stream_messages=10000,
        throughput_s=5.0, open_loop_s=10.0, max_open_loop_rate=5000.0, drain_timeout_s=60.0,
        backlog=10000, backlog_repeats=3, online_devices=1000, idle_s=10.0, wide=True,
    ),
}


def profile(name: str, *, online_devices: int | None = None, repeats: int | None = None) -> Profile:
    """The named profile, with the command line's overrides applied."""
    chosen = PROFILES[name]
    if online_devices is not None:
        chosen = replace(chosen, online_devices=online_devices)
    if repeats is not None:
        chosen = replace(chosen, repeats=repeats)
    return chosen
