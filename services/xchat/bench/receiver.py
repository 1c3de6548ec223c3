"""The receiving app: one SDK device in its own process, driven over a pipe.

A real receiver is a different program from the sender, so the bench runs it
in a spawned child with its own interpreter and event loop. The child opens
(and registers) a ``Client``, iterates ``messages()`` and ``ack()``s each one
as soon as it is yielded, and records when every benchmark message arrived
(``time.monotonic()``, one clock for all processes of the machine).

Commands (parent → child), each answered with one reply:
``listen`` / ``pause`` open or close the receive stream; ``wait(run, n, timeout)``
returns the arrival times of run ``run`` once ``n`` have arrived (or at the
timeout) and the child's CPU seconds so far; ``stop`` closes the client.
Benchmark bodies start with ``MAGIC``, a run number and an index.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import signal
import struct
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import TracebackType
from typing import Any

from xchat.bench import pipes
from xchat.bench.resources import own_cpu_seconds
from xchat.client import Client, ClientError

MAGIC = b"XBN1"
HEADER = struct.Struct(">4sII")
START_TIMEOUT_S = 60.0
REPLY_GRACE_S = 15.0


def body(run: int, index: int, size: int) -> bytes:
    head = HEADER.pack(MAGIC, run, index)
    return head + b"." * max(size - len(head), 0)


def parse(data: bytes) -> tuple[int, int] | None:
    if len(data) < HEADER.size or not data.startswith(MAGIC):
        return None
    _magic, run, index = HEADER.unpack_from(data)
    return run, index


class _Device:
    """The child's side: one client, its receive task and the arrivals per run."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.arrivals: dict[int, dict[int, float]] = defaultdict(dict)
        self.arrived = asyncio.Event()
        self.receiving: asyncio.Task[None] | None = None
        self.failure: str | None = None

    async def _receive(self) -> None:
        try:
            async for message in self.client.messages():
                now = time.monotonic()
                tag = parse(message.body)
                if tag is not None:
                    self.arrivals[tag[0]].setdefault(tag[1], now)
                    self.arrived.set()
                await self.client.ack(message)
        except ClientError as exc:
            self.failure = f"receiver stopped: {exc}"
            self.arrived.set()

    def listen(self) -> float:
        if self.receiving is None or self.receiving.done():
            self.receiving = asyncio.create_task(self._receive())
        return time.monotonic()

    async def pause(self) -> None:
        if self.receiving is not None:
            self.receiving.cancel()
            await asyncio.gather(self.receiving, return_exceptions=True)
            self.receiving = None

    async def wait(self, run: int, count: int, timeout: float) -> dict[int, float]:
        deadline = time.monotonic() + timeout
        while len(self.arrivals[run]) < count and self.failure is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                break
        got = self.arrivals.pop(run, {})
        for older in [r for r in self.arrivals if r < run]:
            del self.arrivals[older]  # late copies of abandoned runs
        return got


async def _child(conn: multiprocessing.connection.Connection, state: str, endpoints: list[str], roots: bytes, account: str) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[Any] = asyncio.Queue()

    def readable() -> None:
        try:
            commands.put_nowait(conn.recv())
        except EOFError:
            commands.put_nowait(("stop",))
            loop.remove_reader(conn.fileno())

    client = await Client.open(state, endpoints, root_certificates=roots)
    try:
        try:
            device_id = await client.register(account, one_time_prekeys=10)
        except ClientError as exc:
            conn.send(("error", f"registering {account}: {exc}"))
            return
        device = _Device(client)
        loop.add_reader(conn.fileno(), readable)
        conn.send(("ready", device_id))
        while True:
            command = await commands.get()
            if command[0] == "stop":
                break
            if command[0] == "listen":
                conn.send(("ok", device.listen()))
            elif command[0] == "pause":
                await device.pause()
                conn.send(("ok", time.monotonic()))
            elif command[0] == "wait":
                _, run, count, timeout = command
                got = await device.wait(run, count, timeout)
                conn.send(("times", got, own_cpu_seconds(), device.failure))
        await device.pause()
    finally:
        await client.close()


def main(conn: multiprocessing.connection.Connection, state: str, endpoints: list[str], roots: bytes, account: str) -> None:
    """The child process's entry point."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this child in order
    asyncio.run(_child(conn, state, endpoints, roots, account))


class Receiver:
    """The parent's handle: ``with Receiver(...) as r: r.ready(); await r.listen(); await r.wait(run, n, timeout)``."""

    def __init__(self, state: Path, endpoints: list[str], roots: bytes, account: str) -> None:
        self.account = account
        self.device_id = ""
        self._stopping = threading.Event()
        self._conn, child = multiprocessing.get_context("spawn").Pipe()
        self._process: multiprocessing.process.BaseProcess = multiprocessing.get_context("spawn").Process(
            target=main, args=(child, str(state), endpoints, roots, account), name=f"xchat-bench-{account}", daemon=True
        )

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def __enter__(self) -> Receiver:
        """Starts the child; ``ready()`` waits for it (so several can start side by side)."""
        self._process.start()
        return self

    def ready(self) -> None:
        """Waits until the child opened and registered its device."""
        reply = self._reply(START_TIMEOUT_S)
        if reply[0] != "ready":
            raise RuntimeError(str(reply[1]))
        self.device_id = str(reply[1])

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._reap()

    def _reap(self) -> None:
        self._stopping.set()
        try:
            self._conn.send(("stop",))
        except OSError:
            pass
        # A child busy in a long ``wait`` reads "stop" only afterwards: give it a moment, then end it.
        self._process.join(5)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)
        self._conn.close()

    def _reply(self, timeout: float) -> tuple[Any, ...]:
        return pipes.reply(self._conn, timeout, self._stopping, what=f"the receiving app {self.account}")

    async def _ask(self, command: tuple[Any, ...], timeout: float) -> tuple[Any, ...]:
        # The pipe blocks: wait in a thread so the sender's event loop keeps running.
        self._conn.send(command)
        return await asyncio.to_thread(self._reply, timeout + REPLY_GRACE_S)

    async def listen(self) -> float:
        """Opens the receive stream; returns when it was opened (monotonic seconds)."""
        return float((await self._ask(("listen",), 0))[1])

    async def pause(self) -> None:
        await self._ask(("pause",), 0)

    async def wait(self, run: int, count: int, timeout: float) -> tuple[dict[int, float], float]:
        """(index → arrival time, receiver CPU seconds so far) once ``count`` arrived or at the timeout."""
        reply = await self._ask(("wait", run, count, timeout), timeout)
        if reply[3] is not None:
            raise RuntimeError(str(reply[3]))
        return dict(reply[1]), float(reply[2])

    async def cpu(self) -> float:
        """The receiver's CPU seconds so far."""
        return (await self.wait(-1, 0, 0))[1]
