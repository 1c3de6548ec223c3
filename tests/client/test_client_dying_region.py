"""A relay that dies with envelopes in flight must not cost an app any message, or its order.

When a send stream ends with an error (its region died), the SDK moves to the
next region and resends from the front of its queue. A defect found by the
flapping drill under load: grpc.aio leaves the request iterator of a call that
ended with an error status running, so the dead stream's iterator, parked until
more envelopes were queued, woke for those of the next stream and counted the
front of the queue as its own. The next stream, which writes after what is in
flight, then never sent those envelopes: their send() calls failed after the
10 s retry budget while later messages were stored, and the recipient's order
buffer held everything behind them (reorders when its 10 s ran out).
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from pathlib import Path

from xchat.client import Client
from xchat.mesh.local import LocalMesh

# From each send() call to its acknowledgement. The dying region's stream ends at once
# (connection reset), the SDK moves and resends: well under a second on a quiet machine.
# Before the fix, the first wave waited for as long as later sends kept the next stream
# busy (here the whole second wave, 6 s), then for its 1 s of silence.
EACH_ACKED_WITHIN_S = 4.0
FIRST_WAVE = 16
# One send every SECOND_WAVE_GAP_S for 6 s, across and after the failover.
SECOND_WAVE = 300
SECOND_WAVE_GAP_S = 0.02


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, blackhole: asyncio.Event) -> None:
    while data := await reader.read(65536):
        if not blackhole.is_set():
            writer.write(data)
            await writer.drain()
    writer.close()


async def _proxy(target_port: int) -> None:
    """A TCP forwarder to ``target_port``; "blackhole" on stdin: it goes on reading and forwards nothing."""
    blackhole = asyncio.Event()

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(
            _forward(client_reader, upstream_writer, blackhole),
            _forward(upstream_reader, client_writer, blackhole),
            return_exceptions=True,
        )

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if line.strip() == b"blackhole":
            blackhole.set()
    await server.serve_forever()


class DyingRegion:
    """A region's endpoint behind a process of its own, so that it can go silent and then die
    as a region does (SIGKILL: the client's connections are reset, not closed by a server)."""

    def __init__(self, target: str) -> None:
        self._target_port = int(target.rsplit(":", 1)[1])

    async def __aenter__(self) -> DyingRegion:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"import asyncio, {__name__} as m; asyncio.run(m._proxy({self._target_port}))",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[2]),
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 30)
        self.endpoint = f"127.0.0.1:{int(line.split()[1])}"
        return self

    async def go_silent(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"blackhole\n")
        await self.process.stdin.drain()

    def kill(self) -> None:
        self.process.kill()

    async def __aexit__(self, *exc: object) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


async def test_sends_in_flight_when_a_region_dies_and_those_after_it_all_arrive_in_order(mesh: LocalMesh, tmp_path: Path) -> None:
    async with DyingRegion(mesh.regions["a"].endpoint) as region:
        alice_name, bob_name = f"alice{secrets.token_hex(4)}", f"bob{secrets.token_hex(4)}"
        async with await Client.open(tmp_path / "alice.db", [region.endpoint, mesh.regions["b"].endpoint]) as alice, \
                await Client.open(tmp_path / "bob.db", mesh.endpoints("c")) as bob:
            await alice.register(alice_name)
            await bob.register(bob_name)
            # Both ways once, as apps do: alice then sends sealed, on one kind of stream.
            bob_inbox, alice_inbox = bob.messages(), alice.messages()
            await alice.send(bob_name, "hello")
            async with asyncio.timeout(30):
                await bob.ack(await anext(bob_inbox))
                await bob.send(alice_name, "hi")
                await alice.ack(await anext(alice_inbox))
            await alice_inbox.aclose()
            took: dict[int, float] = {}

            async def send(n: int) -> None:
                called = time.monotonic()
                await alice.send(bob_name, f"m{n}")
                took[n] = time.monotonic() - called

            # The first wave leaves together on one stream and stays in flight: alice's region
            # has gone silent. Then it dies, and the stream ends with an error, not with the SDK's
            # own cancel (which stops the stream's iterator).
            await region.go_silent()
            first = [asyncio.create_task(send(n)) for n in range(FIRST_WAVE)]
            await asyncio.sleep(0.3)
            region.kill()
            # More keep coming after the failover, as from a busy app.
            later = []
            for n in range(FIRST_WAVE, FIRST_WAVE + SECOND_WAVE):
                await asyncio.sleep(SECOND_WAVE_GAP_S)
                later.append(asyncio.create_task(send(n)))
            results = await asyncio.gather(*first, *later, return_exceptions=True)
            failed = {n: r for n, r in enumerate(results) if isinstance(r, BaseException)}
            assert not failed, f"sends failed: {failed}"
            slowest = max(took.values())
            assert slowest < EACH_ACKED_WITHIN_S, f"slowest sends (n, s): {sorted(took.items(), key=lambda x: -x[1])[:5]}"

            received = []
            async with asyncio.timeout(30):
                while len(received) < FIRST_WAVE + SECOND_WAVE:
                    message = await anext(bob_inbox)
                    received.append(message.text)
                    await bob.ack(message)
            await bob_inbox.aclose()
            # Each send() call is committed when called: that is the conversation's order.
            assert received == [f"m{n}" for n in range(FIRST_WAVE + SECOND_WAVE)]
