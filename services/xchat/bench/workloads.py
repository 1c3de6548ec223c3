"""End-to-end workloads through the public SDK only: closed-loop throughput, open-loop latency, backlog.

The sending app is a ``Client`` in this process; each receiving app is a
``Receiver`` child process that acks every message once ``messages()`` yields
it. A figure counts a message when the receiver got it, not when ``send()``
returned. Server and client CPU are read around each phase, so per-message
costs include everything the phase made the servers do (relay, mailbox, acks,
replication).

- closed loop: ``concurrency`` sends in flight (``asyncio.gather`` of workers,
  each awaiting ``send()``) for a fixed time; delivered msg/s and send→receive
  latency.
- open loop: sends scheduled at a fixed rate and started on schedule whether or
  not earlier ones finished; latency = arrival − *scheduled* time, so queueing
  in the SDK counts. A run that falls too far behind stops scheduling and is
  marked overloaded.
- backlog: ``n`` messages queued for an offline device (``send_many``), the
  bytes JetStream stored for them, then how fast the device drains them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client as Nats

from xchat.bench.meshes import BenchMesh, stored_bytes, stored_messages
from xchat.bench.receiver import Receiver, body
from xchat.bench.resources import CpuMeter, own_cpu_seconds
from xchat.bench.stats import Figures, latency_ms, rate
from xchat.client import Client, ClientError, SendReceipt

# Open loop: at most this many seconds of scheduled sends may be unfinished before the run stops.
MAX_BEHIND_S = 2.0
SEND_MANY_CHUNK = 500
_runs = itertools.count(1)
log = logging.getLogger(__name__)


@dataclass
class Pair:
    """One conversation: the sending app and a receiving app's device."""

    sender: Client
    receiver: Receiver
    meter: CpuMeter
    # Messages the nats-servers have received so far (BenchMesh.nats_messages); None: not counted.
    nats_messages: Callable[[], int] | None = None


class _Costs:
    """Server and client CPU, and NATS messages, over one phase."""

    def __init__(self, pair: Pair) -> None:
        self.pair = pair

    async def __aenter__(self) -> _Costs:
        self.server = self.pair.meter.sample()
        self.sender = own_cpu_seconds()
        self.receiver = await self.pair.receiver.cpu()
        self.nats = await self._nats_messages()
        return self

    async def _nats_messages(self) -> int | None:
        if self.pair.nats_messages is None:
            return None
        return await asyncio.to_thread(self.pair.nats_messages)

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def figures(self, receiver_cpu_s: float, delivered: int) -> Figures:
        server = self.pair.meter.sample().minus(self.server)
        nats = await self._nats_messages()
        if delivered == 0:
            return {}
        per = 1e6 / delivered
        traffic: Figures = {}
        if nats is not None and self.nats is not None:
            traffic["nats_msgs_per_message"] = (nats - self.nats) / delivered
        return {
            **traffic,
            "server_cpu_us": server.total_s * per,
            "nats_cpu_us": server.by_role.get("nats", 0.0) * per,
            "services_cpu_us": server.by_role.get("services", 0.0) * per,
            "sender_cpu_us": (own_cpu_seconds() - self.sender) * per,
            "receiver_cpu_us": (receiver_cpu_s - self.receiver) * per,
            "client_cpu_us": (own_cpu_seconds() - self.sender + receiver_cpu_s - self.receiver) * per,
        }


async def _send(pair: Pair, run: int, index: int, size: int) -> bool:
    try:
        receipts = await pair.sender.send(pair.receiver.account, body(run, index, size), content_type="application/octet-stream")
    except ClientError as exc:
        _failure(run, f"{type(exc).__name__}: {exc}")
        return False
    refused = [r for r in receipts if not isinstance(r, SendReceipt)]
    if refused or not receipts:
        _failure(run, repr(refused[0]) if refused else "no receipt")
    return bool(receipts) and not refused


_reported: set[int] = set()


def _failure(run: int, what: str) -> None:
    """The first failed send of each phase is worth a line: the figures only count them."""
    if run not in _reported:
        _reported.add(run)
        log.warning("a send failed (later failures of this phase are only counted): %s", what)


async def warm_up(pair: Pair, *, size: int, timeout_s: float) -> None:
    """One message, outside any measurement: sets up the session (PQXDH) and the receive stream."""
    run = next(_runs)
    await pair.receiver.listen()
    if not await _send(pair, run, 0, size):
        raise RuntimeError(f"warm-up: sending to {pair.receiver.account} failed")
    arrivals, _cpu = await pair.receiver.wait(run, 1, timeout_s)
    if not arrivals:
        raise RuntimeError(f"warm-up: {pair.receiver.account} did not receive within {timeout_s:.0f}s")


async def settle(pair: Pair, *, size: int, timeout_s: float) -> None:
    """After a phase that gave up on sends: one more message, waited for, outside any measurement.

    The SDK keeps abandoned sends in its outbox and delivers them with later
    sends; this lets that happen here rather than inside the next phase.
    """
    run = next(_runs)
    if await _send(pair, run, 0, size):
        await pair.receiver.wait(run, 1, timeout_s)


async def closed_loop(pair: Pair, *, concurrency: int, duration_s: float, size: int, drain_timeout_s: float) -> Figures:
    run = next(_runs)
    indexes = itertools.count()
    started_at: dict[int, float] = {}
    sent = failed = 0

    async def worker(deadline: float) -> None:
        nonlocal sent, failed
        while time.monotonic() < deadline:
            index = next(indexes)
            started_at[index] = time.monotonic()
            if await _send(pair, run, index, size):
                sent += 1
            else:
                failed += 1

    async with _Costs(pair) as costs:
        start = time.monotonic()
        workers = [asyncio.create_task(worker(start + duration_s)) for _ in range(concurrency)]
        _done, late = await asyncio.wait(workers, timeout=duration_s + drain_timeout_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        arrivals, receiver_cpu = await pair.receiver.wait(run, sent, drain_timeout_s)
        figures = await costs.figures(receiver_cpu, len(arrivals))
    if late or len(arrivals) < sent:
        await settle(pair, size=size, timeout_s=drain_timeout_s)
    last = max(arrivals.values(), default=start)
    latencies = [t - started_at[i] for i, t in arrivals.items() if i in started_at]
    lat = latency_ms(latencies)
    return {
        "delivered_per_s": rate(len(arrivals), last - start),
        "p50_ms": lat["p50_ms"],
        "p99_ms": lat["p99_ms"],
        "sent": float(sent),
        "missing": float(max(sent - len(arrivals), 0)),
        "failed_sends": float(failed),
        **figures,
    }


async def open_loop(pair: Pair, *, rate_per_s: float, duration_s: float, size: int, drain_timeout_s: float) -> Figures:
    run = next(_runs)
    count = max(int(rate_per_s * duration_s), 10)
    max_unfinished = max(int(rate_per_s * MAX_BEHIND_S), 64)
    scheduled: dict[int, float] = {}
    tasks: list[asyncio.Task[bool]] = []
    overloaded = False
    unfinished = 0

    def finished(_task: asyncio.Task[bool]) -> None:
        nonlocal unfinished
        unfinished -= 1

    async with _Costs(pair) as costs:
        start = time.monotonic() + 0.05
        for index in range(count):
            when = start + index / rate_per_s
            # Behind schedule: still yield, so the sends already started make progress.
            await asyncio.sleep(max(when - time.monotonic(), 0.0))
            if unfinished >= max_unfinished:
                overloaded = True
                break
            scheduled[index] = when
            task = asyncio.create_task(_send(pair, run, index, size))
            unfinished += 1
            task.add_done_callback(finished)
            tasks.append(task)
        _done, late = await asyncio.wait(tasks, timeout=drain_timeout_s) if tasks else (set(), set())
        for task in late:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        sent = sum(1 for r in results if r is True)
        arrivals, receiver_cpu = await pair.receiver.wait(run, sent, drain_timeout_s)
        figures = await costs.figures(receiver_cpu, len(arrivals))
    if late or len(arrivals) < sent:
        await settle(pair, size=size, timeout_s=drain_timeout_s)
    latencies = [t - scheduled[i] for i, t in arrivals.items() if i in scheduled]
    elapsed = max(arrivals.values(), default=start) - start
    return {
        "rate_per_s": rate_per_s,
        "delivered_per_s": rate(len(arrivals), elapsed),
        **latency_ms(latencies),
        "scheduled": float(len(scheduled)),
        "missing": float(len(scheduled) - len(arrivals)),
        "overloaded": 1.0 if overloaded or len(arrivals) < len(scheduled) else 0.0,
        **figures,
    }


async def _settled_store(nc: Nats) -> tuple[int, int]:
    """(bytes, messages) of every stream once deletes from earlier phases stopped moving them."""
    last = (-1, -1)
    for _ in range(20):
        now = (await stored_bytes(nc), await stored_messages(nc))
        if now == last:
            break
        last = now
        await asyncio.sleep(0.5)
    return last


async def backlog(bench: BenchMesh, pair: Pair, *, count: int, size: int, drain_timeout_s: float) -> Figures:
    """Queues ``count`` messages for the paused receiver, then times the drain once it listens."""
    run = next(_runs)
    await pair.receiver.pause()
    nc = await bench.nats("a")
    try:
        before_bytes, before_msgs = await _settled_store(nc)
        stored = 0
        for chunk in range(0, count, SEND_MANY_CHUNK):
            outcomes = await pair.sender.send_many(
                [(pair.receiver.account, body(run, i, size)) for i in range(chunk, min(chunk + SEND_MANY_CHUNK, count))],
                content_type="application/octet-stream",
            )
            stored += sum(1 for o in outcomes if isinstance(o, SendReceipt))
        after_bytes, after_msgs = await _settled_store(nc)
    finally:
        await nc.close()
    if stored == 0:
        raise RuntimeError("backlog: no message was stored")
    async with _Costs(pair) as costs:
        opened = await pair.receiver.listen()
        arrivals, receiver_cpu = await pair.receiver.wait(run, stored, drain_timeout_s)
        figures = await costs.figures(receiver_cpu, len(arrivals))
    last = max(arrivals.values(), default=opened)
    return {
        "queued": float(stored),
        "drain_per_s": rate(len(arrivals), last - opened),
        "drain_s": last - opened,
        "missing": float(stored - len(arrivals)),
        "stored_bytes_per_message": (after_bytes - before_bytes) / stored,
        "stored_messages_per_message": (after_msgs - before_msgs) / stored,
        "body_bytes": float(size),
        **figures,
    }
