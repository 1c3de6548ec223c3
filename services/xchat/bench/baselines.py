"""Raw baselines measured in the same run as the SDK figures: what the engines beneath can do.

- JetStream R3 (one replica per region, ``sync_interval: always``, TLS), through
  the same nats-py client the services use: sequential ``publish`` (rate and
  per-publish latency), windowed ``publish_async`` (``js_window`` in flight),
  consume with an ordered push consumer, bytes stored per message, and
  nats-server CPU per publish.
- grpc.aio over TLS against an echo server in its own process: sequential unary
  calls (rate and latency) and a bidirectional stream with 64 messages in
  flight, with server and client CPU per message.

Every SDK figure in the report is also given as a ratio to one of these.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import grpc
import grpc.aio
from nats.js.api import StorageType, StreamConfig

from xchat.bench.echo import STREAM, UNARY, EchoServer
from xchat.bench.meshes import BenchMesh
from xchat.bench.profiles import IN_FLIGHT, Profile
from xchat.bench.resources import CpuMeter, own_cpu_seconds
from xchat.bench.stats import Figures, latency_ms, rate

RAW_STREAM = "XCHAT_BENCH_RAW"
RAW_SUBJECTS = "xchat-bench-raw.>"
# Spread over subjects, as mailboxes are (one subject per device).
RAW_SUBJECT_COUNT = 64


# A new R3 stream answers publishes only once its Raft group has elected a
# leader; on a loaded machine that takes seconds ("no response from stream").
LEADER_WAIT_S = 60.0
# Idle gRPC streams: each channel its own TCP+TLS connection (grpc shares one subchannel
# between identical channels of one process otherwise), as each device's app has its own.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
IDLE_STREAMS_SETTLE_S = 1.0


async def _wait_for_leader(jsm: Any, stream: str) -> None:
    deadline = time.monotonic() + LEADER_WAIT_S
    while True:
        info = await jsm.stream_info(stream)
        if info.cluster is not None and info.cluster.leader:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream {stream} has no leader after {LEADER_WAIT_S:.0f}s")
        await asyncio.sleep(0.2)


async def jetstream(bench: BenchMesh, profile: Profile, body_size: int) -> Figures:
    nc = await bench.nats("a")
    meter = bench.server_meter()
    body = secrets.token_bytes(body_size)
    try:
        jsm = nc.jetstream()
        await jsm.add_stream(
            StreamConfig(name=RAW_STREAM, subjects=[RAW_SUBJECTS], num_replicas=3, storage=StorageType.FILE)
        )
        await _wait_for_leader(jsm, RAW_STREAM)
        try:
            sequential = max(profile.js_messages // 4, 10)
            latencies: list[float] = []
            started = time.monotonic()
            for i in range(sequential):
                sent = time.monotonic()
                await jsm.publish(f"xchat-bench-raw.{i % RAW_SUBJECT_COUNT}", body)
                latencies.append(time.monotonic() - sent)
            sequential_rate = rate(sequential, time.monotonic() - started)

            windowed = nc.jetstream(publish_async_max_pending=profile.js_window)
            before = meter.sample()
            started = time.monotonic()
            for i in range(profile.js_messages):
                await windowed.publish_async(f"xchat-bench-raw.{i % RAW_SUBJECT_COUNT}", body)
            await windowed.publish_async_completed()
            windowed_rate = rate(profile.js_messages, time.monotonic() - started)
            cost = meter.sample().minus(before)

            total = sequential + profile.js_messages
            info = await jsm.stream_info(RAW_STREAM)
            stored = int(info.state.bytes) / max(int(info.state.messages), 1)

            received = 0
            done = asyncio.Event()

            async def on_message(_msg: object) -> None:
                nonlocal received
                received += 1
                if received >= total:
                    done.set()

            started = time.monotonic()
            sub = await jsm.subscribe(RAW_SUBJECTS, ordered_consumer=True, cb=on_message)
            try:
                await asyncio.wait_for(done.wait(), profile.drain_timeout_s)
            except TimeoutError:
                raise RuntimeError(f"raw JetStream consume got {received} of {total} messages") from None
            consume_rate = rate(received, time.monotonic() - started)
            await sub.unsubscribe()
        finally:
            await jsm.delete_stream(RAW_STREAM)
    finally:
        await nc.close()
    lat = latency_ms(latencies)
    return {
        "publish_sequential_per_s": sequential_rate,
        "publish_p50_ms": lat["p50_ms"],
        "publish_p99_ms": lat["p99_ms"],
        "publish_windowed_per_s": windowed_rate,
        "consume_per_s": consume_rate,
        "stored_bytes_per_message": stored,
        "server_cpu_us_per_publish": cost.total_s / profile.js_messages * 1e6,
    }


async def grpc_echo(bench: BenchMesh, profile: Profile, body_sizes: tuple[int, ...]) -> dict[int, Figures]:
    """Per body size: unary and streaming echo figures (one echo server process for all sizes)."""
    ca, cert, key = bench.cert_files
    out: dict[int, Figures] = {}
    with EchoServer(cert, key) as echo:
        server = CpuMeter({"echo": [echo.pid]})
        credentials = grpc.ssl_channel_credentials(ca.read_bytes())
        async with grpc.aio.secure_channel(echo.address, credentials) as channel:
            await echo.wait_ready(channel)
            for size in body_sizes:
                out[size] = await _echo(channel, server, profile, secrets.token_bytes(size))
    return out


async def _echo(channel: grpc.aio.Channel, server: CpuMeter, profile: Profile, body: bytes) -> Figures:
    unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(UNARY)
    await unary(body)  # warm-up: connection and TLS handshake
    latencies: list[float] = []
    server_before, client_before = server.sample(), own_cpu_seconds()
    started = time.monotonic()
    for _ in range(profile.grpc_calls):
        sent = time.monotonic()
        await unary(body)
        latencies.append(time.monotonic() - sent)
    unary_rate = rate(profile.grpc_calls, time.monotonic() - started)
    unary_server = server.sample().minus(server_before).total_s
    unary_client = own_cpu_seconds() - client_before
    stream_rate, stream_server, stream_client = await _echo_stream(channel, body, profile.grpc_stream_messages, server)
    lat = latency_ms(latencies)
    return {
        "unary_per_s": unary_rate,
        "unary_p50_ms": lat["p50_ms"],
        "unary_p99_ms": lat["p99_ms"],
        "unary_server_cpu_us": unary_server / profile.grpc_calls * 1e6,
        "unary_client_cpu_us": unary_client / profile.grpc_calls * 1e6,
        "stream_per_s": stream_rate,
        "stream_server_cpu_us": stream_server / profile.grpc_stream_messages * 1e6,
        "stream_client_cpu_us": stream_client / profile.grpc_stream_messages * 1e6,
    }


async def _echo_stream(channel: grpc.aio.Channel, body: bytes, count: int, server: CpuMeter) -> tuple[float, float, float]:
    """Bidirectional echo with ``IN_FLIGHT`` messages outstanding: (msg/s, server CPU s, client CPU s)."""
    call: grpc.aio.StreamStreamCall[bytes, bytes] = channel.stream_stream(STREAM)()
    window = asyncio.Semaphore(IN_FLIGHT)
    server_before, client_before = server.sample(), own_cpu_seconds()
    started = time.monotonic()

    async def writer() -> None:
        for _ in range(count):
            await window.acquire()
            await call.write(body)
        await call.done_writing()

    writing = asyncio.create_task(writer())
    try:
        for _ in range(count):
            reply = await call.read()
            if reply is grpc.aio.EOF:
                raise RuntimeError("the gRPC echo stream ended early")
            window.release()
        await writing
    finally:
        writing.cancel()
        call.cancel()
    elapsed = time.monotonic() - started
    return rate(count, elapsed), server.sample().minus(server_before).total_s, own_cpu_seconds() - client_before


async def grpc_idle_streams(bench: BenchMesh, count: int, idle_s: float) -> Figures:
    """The gRPC floor of an online device: ``count`` TLS connections to the echo server, one idle bidi stream each.

    Each channel is its own connection (as each device's app is) and makes
    one unary call (connected, as the bench's devices are by registering);
    then each opens one stream and echoes one message so the stream is
    established; then nothing. Server RSS growth ÷ count per connection and
    per stream, and the echo process's CPU over ``idle_s``, are what grpc.aio
    itself costs, before any of our own state.
    """
    ca, cert, key = bench.cert_files
    with EchoServer(cert, key) as echo:
        server = CpuMeter({"echo": [echo.pid]})
        credentials = grpc.ssl_channel_credentials(ca.read_bytes())
        channels = [grpc.aio.secure_channel(echo.address, credentials, options=OWN_CONNECTION) for _ in range(count)]
        calls: list[grpc.aio.StreamStreamCall[bytes, bytes]] = []
        try:
            await echo.wait_ready(channels[0])
            unconnected_rss = server.rss()["echo"]
            for channel in channels:  # connected first, as the devices are by registering
                unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(UNARY)
                await unary(b"x")
            await asyncio.sleep(IDLE_STREAMS_SETTLE_S)
            base_rss = server.rss()["echo"]
            for channel in channels:
                call: grpc.aio.StreamStreamCall[bytes, bytes] = channel.stream_stream(STREAM)()
                await call.write(b"x")
                await call.read()
                calls.append(call)
            await asyncio.sleep(IDLE_STREAMS_SETTLE_S)
            rss = server.rss()["echo"]
            before = server.sample()
            await asyncio.sleep(idle_s)
            idle = server.sample().minus(before)
        finally:
            for call in calls:
                call.cancel()
            await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)
    return {
        "streams": float(count),
        "server_rss_bytes_per_connection": (base_rss - unconnected_rss) / count,
        "server_rss_bytes_per_stream": (rss - base_rss) / count,
        "idle_server_cpu_share": idle.total_s / idle.wall_s,
    }
