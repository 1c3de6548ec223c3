"""Online devices held open: what N idle ``messages()`` streams cost the servers.

N devices (each its own ``Client``, state file and TLS channel, as N phones
would be) live in a few "crowd" child processes (one process cannot hold
10,000 clients' sockets and files under this machine's descriptor limit).
The bench measures the server processes' resident memory and CPU with every
device registered but none connected, then opens a receive stream on every
device (in waves of ``ONLINE_WAVE`` per process, each wave answered before the
next: ``online_per_s``), lets them sit idle and measures again. Per device: the memory
difference / N; idle: server CPU over the idle window as a share of one core,
next to the same figure with no device online (the matching baseline).
With every device still online, the caller's load phase runs once more (the
cross-region 64-in-flight closed loop): its rate next to the same phase with
no crowd shows what online devices cost the active ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from xchat.bench import flames, pipes
from xchat.bench.meshes import REGIONS, BenchMesh
from xchat.bench.resources import CpuMeter
from xchat.bench.stats import Figures
from xchat.client import Client, ClientError

REGISTER_CONCURRENCY = 32
DEVICES_PER_PROCESS = 2000
# Registering is partly client-bound (key generation, SQLite): spread it even for small N.
MIN_PROCESSES = 3
# After opening, streams get this long (plus a share per device) to settle before measuring.
SETTLE_S = 2.0
SETTLE_PER_DEVICE_S = 0.002
REGISTER_TIMEOUT_PER_DEVICE_S = 1.0
# Devices come online in waves (per crowd process): each wave's receive streams have
# answered (backlog done) before the next opens. All at once, 1,000 devices and the
# servers on these two cores took seconds per first answer, the SDK's 1 s silence check
# moved them between regions in a herd, and the idle window measured the herd.
ONLINE_WAVE = 50
ONLINE_WAVE_TIMEOUT_S = 120.0


async def _listen(client: Client) -> None:
    with contextlib.suppress(ClientError):
        async for message in client.messages():
            await client.ack(message)


async def _crowd(
    conn: multiprocessing.connection.Connection, state_dir: str, endpoints: dict[str, list[str]], roots: bytes, names: list[str]
) -> None:
    clients: list[Client] = []
    listeners: list[asyncio.Task[None]] = []
    try:
        for i, name in enumerate(names):
            clients.append(await Client.open(Path(state_dir) / f"{name}.db", endpoints[REGIONS[i % len(REGIONS)]], root_certificates=roots))
        gate = asyncio.Semaphore(REGISTER_CONCURRENCY)

        async def register(name: str, client: Client) -> None:
            async with gate:
                await client.register(name, one_time_prekeys=1)

        try:
            await asyncio.gather(*(register(n, c) for n, c in zip(names, clients, strict=True)))
        except ClientError as exc:
            conn.send(("error", f"registering online devices: {exc}"))
            return
        conn.send(("registered",))
        await asyncio.to_thread(conn.recv)  # listen
        started = time.monotonic()
        for first in range(0, len(clients), ONLINE_WAVE):
            wave = clients[first : first + ONLINE_WAVE]
            listeners += [asyncio.create_task(_listen(c)) for c in wave]
            try:
                await asyncio.wait_for(asyncio.gather(*(c.backlog_done.wait() for c in wave)), ONLINE_WAVE_TIMEOUT_S)
            except asyncio.TimeoutError:
                conn.send(("error", f"online devices: {len(wave)} receive streams did not answer within {ONLINE_WAVE_TIMEOUT_S:.0f}s"))
                return
        conn.send(("listening", time.monotonic() - started))
        await asyncio.to_thread(conn.recv)  # stop
        ended = sum(1 for t in listeners if t.done())
        conn.send(("stopped", ended))
    finally:
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def crowd_main(
    conn: multiprocessing.connection.Connection, state_dir: str, endpoints: dict[str, list[str]], roots: bytes, names: list[str]
) -> None:
    """A crowd child's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this child in order
    asyncio.run(_crowd(conn, state_dir, endpoints, roots, names))


class _Crowd:
    def __init__(self, bench: BenchMesh, state_dir: Path, names: list[str]) -> None:
        self.stopping = threading.Event()
        self.finished = False
        self.conn, child = multiprocessing.get_context("spawn").Pipe()
        endpoints = {r: bench.endpoints(r) for r in REGIONS}
        self.process: multiprocessing.process.BaseProcess = multiprocessing.get_context("spawn").Process(
            target=crowd_main, args=(child, str(state_dir), endpoints, bench.root_certificates, names), daemon=True
        )

    def expect(self, what: str, timeout: float) -> tuple[Any, ...]:
        reply = pipes.reply(self.conn, timeout, self.stopping, what=f"online devices: a crowd process (waiting for '{what}')")
        if reply[0] == "error":
            raise RuntimeError(str(reply[1]))
        if reply[0] != what:
            raise RuntimeError(f"online devices: expected '{what}', got {reply[0]!r}")
        return reply

    def reap(self) -> None:
        self.stopping.set()
        if self.process.pid is None:  # never started
            self.conn.close()
            return
        if self.finished:
            self.process.join(15)  # closing its clients after a normal stop
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)
        self.conn.close()


async def _idle(server: CpuMeter, clients: CpuMeter, seconds: float) -> tuple[float, float]:
    """(server CPU, client CPU) as shares of one core over ``seconds`` of idling."""
    s, c = server.sample(), clients.sample()
    await asyncio.sleep(seconds)
    server_cost, client_cost = server.sample().minus(s), clients.sample().minus(c)
    return server_cost.total_s / server_cost.wall_s, client_cost.total_s / client_cost.wall_s


async def online_devices(
    bench: BenchMesh, state_dir: Path, *, count: int, idle_s: float, prefix: str,
    load: Callable[[], Awaitable[Figures]] | None = None, flame_dir: Path | None = None,
) -> Figures:
    """``load``: a phase run while every device is online (its delivered msg/s is reported).

    ``flame_dir``: after the measured idle window, one more (unmeasured) with
    py-spy on every region's service process: ``online_idle-services-<region>.svg``.
    """
    server = bench.server_meter()
    state_dir.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}{i}" for i in range(count)]
    processes = min(max(MIN_PROCESSES, math.ceil(count / DEVICES_PER_PROCESS)), count)
    crowds = [_Crowd(bench, state_dir, names[i::processes]) for i in range(processes)]
    started = time.monotonic()
    try:
        for crowd in crowds:
            crowd.process.start()
        register_timeout = 60 + REGISTER_TIMEOUT_PER_DEVICE_S * count / processes
        for crowd in crowds:
            await asyncio.to_thread(crowd.expect, "registered", register_timeout - (time.monotonic() - started))
        registered_s = time.monotonic() - started
        clients = CpuMeter({"clients": [c.process.pid for c in crowds if c.process.pid is not None]})
        base_rss = server.rss()
        base_cpu, _ = await _idle(server, clients, idle_s)
        for crowd in crowds:
            crowd.conn.send("listen")
        online_s = 0.0
        for crowd in crowds:
            listening = await asyncio.to_thread(crowd.expect, "listening", 60 + ONLINE_WAVE_TIMEOUT_S * count / ONLINE_WAVE / processes)
            online_s = max(online_s, listening[1])
        await asyncio.sleep(SETTLE_S + SETTLE_PER_DEVICE_S * count)
        rss = server.rss()
        idle_cpu, client_cpu = await _idle(server, clients, idle_s)
        if flame_dir is not None:
            pids = {f"services-{region}": bench.service_pid(region) for region in REGIONS}
            with flames.Recording(flame_dir, "online_idle", pids):
                await asyncio.sleep(max(idle_s, 5.0))
        loaded = await load() if load is not None else {}
        for crowd in crowds:
            crowd.conn.send("stop")
        for crowd in crowds:
            ended = (await asyncio.to_thread(crowd.expect, "stopped", 60))[1]
            crowd.finished = True
            if ended:
                raise RuntimeError(f"online devices: {ended} receive streams ended on their own")
    finally:
        for crowd in crowds:
            await asyncio.to_thread(crowd.reap)
    return {
        "devices": float(count),
        "register_per_s": count / registered_s if registered_s > 0 else None,
        "online_per_s": count / online_s if online_s > 0 else None,
        "server_rss_bytes_per_device": (sum(rss.values()) - sum(base_rss.values())) / count,
        "services_rss_bytes_per_device": (rss["services"] - base_rss["services"]) / count,
        "nats_rss_bytes_per_device": (rss["nats"] - base_rss["nats"]) / count,
        "idle_server_cpu_share": idle_cpu,
        "idle_server_cpu_share_no_devices": base_cpu,
        "idle_client_cpu_share": client_cpu,
        "delivered_per_s_while_online": loaded.get("delivered_per_s"),
        "p99_ms_while_online": loaded.get("p99_ms"),
    }
